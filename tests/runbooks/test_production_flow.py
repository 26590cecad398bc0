"""The production deployment runbook end to end, in-process: every automated step runs for real
(backup, validation, rehearsal, gates, upgrade, integrity) on a seeded target."""

from __future__ import annotations

import pytest
from helpers import BACKUP_PASSPHRASE, drain

from dashboard.lib import pg
from dashboard.lib.secrets import resolve
from runbooks import engine, library
from runbooks.models import RunState, StepState

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def passphrase(settings):
    settings.RUNWAY_BACKUP_PASSPHRASE = BACKUP_PASSPHRASE


def tick_open(engineer, run):
    for step in run.steps.filter(kind="check", state=StepState.OPEN, required=True):
        engine.tick(engineer, run, step, "done")


def revision_of(db):
    with pg.connect(db.dsn, resolve(db.password_ref)) as conn:
        return pg.alembic_revision(conn)


def test_a_production_deployment_runs_to_the_target(
    engineer, lead, live_target, owner_may_create_databases
):
    book = library.get("production-deployment")
    run = engine.start_run(engineer, book, live_target, "0020")
    drain(run)
    steps = {s.step_id: s for s in run.steps.all()}
    assert steps["risk-report"].state == StepState.DONE
    assert steps["rehearsal"].state == StepState.DONE, steps["rehearsal"].summary
    tick_open(engineer, run)
    drain(run)
    run.refresh_from_db()
    assert run.phase_index == 1
    backup = run.steps.get(step_id="backup")
    assert backup.state == StepState.DONE, backup.summary
    validate = run.steps.get(step_id="validate-backup")
    assert validate.state == StepState.DONE, validate.summary
    gates = run.steps.get(step_id="gates")
    assert gates.state == StepState.DONE, gates.summary
    assert {g["name"]: g["verdict"] for g in gates.evidence["gates"]}["backup"] == "pass"
    tick_open(engineer, run)
    approval = run.steps.get(step_id="lead-approval")
    assert approval.state == StepState.OPEN
    engine.decide(lead, run, approval, "approve", "risk report read; 0020 is small")
    assert run.steps.get(step_id="upgrade").state == StepState.WAITING  # until Deploy
    engine.deploy(engineer, run)
    drain(run)
    run.refresh_from_db()
    upgrade = run.steps.get(step_id="upgrade")
    assert upgrade.state == StepState.DONE, upgrade.summary + upgrade.output
    assert [r["revision"] for r in upgrade.evidence["revisions"]] == [
        "0017",
        "0018",
        "0019",
        "0020",
    ]
    assert "took the migration lock" in upgrade.output
    integrity = run.steps.get(step_id="integrity")
    assert integrity.state == StepState.DONE, integrity.summary
    assert revision_of(live_target) == "0020"
    tick_open(engineer, run)
    tick_open(engineer, run)
    run.refresh_from_db()
    assert run.state == RunState.COMPLETED


def test_the_upgrade_refuses_without_a_validated_backup_and_nothing_runs(
    engineer, lead, live_target
):
    text = """
id: bare
title: Bare upgrade
needs_target: true
phases:
  - id: only
    title: Only
    steps:
      - id: upgrade
        action: schema.upgrade
        title: Upgrade
"""
    from helpers import runbook

    run = engine.start_run(engineer, runbook(text), live_target, "0020")
    drain(run)
    step = run.steps.get(step_id="upgrade")
    assert step.state == StepState.FAILED
    assert "no completed backup" in step.summary
    assert revision_of(live_target) == "0016"


def test_one_migration_at_a_time_per_database(live_target):
    from dashboard.schema import execution

    password = resolve(live_target.password_ref)
    with pg.connect(live_target.dsn, password) as holder:
        holder.autocommit = True
        assert pg.try_migration_lock(holder)
        with pytest.raises(execution.MigrationBusy, match="Another migration is running"):
            execution.migrate(live_target, ["0017"])
    assert revision_of(live_target) == "0016"
    steps = execution.migrate(live_target, ["0017"])
    assert [s.revision for s in steps] == ["0017"] and steps[0].ok


# The first attempt's lock_timeout (guarded execution escalates 100, 200, 300, 500 ms under the
# default policy) and the database's statement_timeout.
CHECK_TIMEOUTS = """
op.execute(
    "DO $$ BEGIN IF current_setting('lock_timeout') <> '100ms' "
    "OR current_setting('statement_timeout') <> '5min' THEN "
    "RAISE 'timeouts: %, %', current_setting('lock_timeout'), "
    "current_setting('statement_timeout'); END IF; END $$"
)
"""


def test_every_revision_runs_with_lock_and_statement_timeouts(live_target, tmp_path):
    from helpers import alembic_project

    from dashboard.schema import execution

    folder = alembic_project(tmp_path / "app", ("t1", "0016", CHECK_TIMEOUTS))
    live_target.script_location = str(folder)
    live_target.save()
    steps = execution.migrate(live_target, ["t1"])
    assert steps[0].ok, steps[0].error
    assert revision_of(live_target) == "t1"
