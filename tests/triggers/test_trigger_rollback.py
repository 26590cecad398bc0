"""A firing roll-back rule starts the real rollback runbook: a deployment upgraded by its step
jobs, the health URL begins to fail during the post-deployment window, the rule fires, the
failed-migration rollback runs (downgrade) and the database is back at the pre-run revision."""

from __future__ import annotations

import pytest
from helpers import Health, drain, only, recorded_backup, runbook

from dashboard.lib import pg
from dashboard.lib.secrets import resolve
from dashboard.triggers import watch
from dashboard.triggers.models import Firing, Signal, Watch
from runbooks import engine
from runbooks.models import Run, RunState

pytestmark = pytest.mark.django_db(transaction=True)

DEPLOY = """
id: deploy
title: Deploy
needs_target: true
phases:
  - id: only
    title: Only
    steps:
      - id: upgrade
        action: schema.upgrade
        title: Upgrade
"""


def test_a_failing_health_check_after_the_deployment_rolls_it_back(engineer, live_target, settings):
    settings.RUNWAY_WEBHOOK_ALLOW_PRIVATE = True
    settings.RUNWAY_JOB_QUEUE = "nobody"  # the step jobs run here, in process
    health = Health()
    try:
        rule = only(
            live_target,
            Signal.HEALTH,
            config={"url": health.url},
            window_seconds=3,
            grace_seconds=0,
        )
        run = engine.start_run(engineer, runbook(DEPLOY), live_target, "0017")
        recorded_backup(run)
        drain(run)
        run.refresh_from_db()
        assert run.state == RunState.COMPLETED
        w = Watch.objects.get(run_id=run.pk)
        assert w.executed_at is not None and w.state == Watch.State.ACTIVE  # the window runs

        for _ in range(3):
            watch.tick()
        health.status = 500
        for _ in range(10):
            if watch.tick():
                break
        firing = Firing.objects.get(rule=rule)
        # The outcome first: when the rollback could not start, it says why.
        assert firing.outcome.startswith("rollback run #"), firing.outcome
        rollback = Run.objects.get(rollback_of=run)
        assert firing.rollback_run_id == rollback.pk
        assert firing.outcome == f"rollback run #{rollback.pk} started"
        assert rollback.rollback_source == f"trigger:{rule.pk} health"
        drain(rollback)
        rollback.refresh_from_db()
        assert rollback.state == RunState.COMPLETED, rollback.reason
        with pg.connect(live_target.dsn, resolve(live_target.password_ref)) as conn:
            assert pg.alembic_revision(conn) == "0016"
        assert Watch.objects.get(pk=w.pk).state == Watch.State.ENDED
    finally:
        health.close()
