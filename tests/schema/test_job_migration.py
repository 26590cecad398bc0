"""schema 0003: gate runs and rehearsals of the old states become jobs, and back again."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from helpers import make_database, migrate_to, migrate_to_latest

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("schema", "0002_revisionanalysis")]
AFTER = [("schema", "0003_gate_runs_and_rehearsals_are_jobs")]


@pytest.fixture(autouse=True)
def latest_after():
    """The later migrations this test unapplies are applied again after it."""
    yield
    migrate_to_latest()


def migrate(targets: list[tuple[str, str]]):
    """Migrate to ``targets``; the models as the database then has them."""
    return migrate_to(targets)


def test_old_rows_take_the_lifecycles_states_and_give_them_back() -> None:
    db = make_database()
    old = migrate(BEFORE)
    GateRun = old.get_model("schema", "GateRun")
    Rehearsal = old.get_model("schema", "Rehearsal")
    Periodic = old.get_model("django_celery_beat", "PeriodicTask")
    Interval = old.get_model("django_celery_beat", "IntervalSchedule")
    every = Interval.objects.create(every=5, period="minutes")
    Periodic.objects.create(
        name="reap-stale-rehearsals",
        task="dashboard.schema.tasks.reap_stale_rehearsals",
        interval=every,
    )
    started = timezone.now() - timedelta(minutes=20)
    gate = {
        state: GateRun.objects.create(database_id=db.pk, state=state, started_at=started).pk
        for state in ("done", "failed", "running")
    }
    queued_gate = GateRun.objects.create(database_id=db.pk).pk
    rehearsal = {
        state: Rehearsal.objects.create(database_id=db.pk, state=state, started_at=started).pk
        for state in ("done", "failed", "queued")
    }
    died = Rehearsal.objects.create(
        database_id=db.pk,
        state="failed",
        started_at=started,
        error="The worker died mid-rehearsal (no heartbeat since 2026-12-01 10:00:00 UTC).",
    ).pk

    new = migrate(AFTER)
    GateRun = new.get_model("schema", "GateRun")
    Rehearsal = new.get_model("schema", "Rehearsal")
    states = dict(GateRun.objects.values_list("pk", "state"))
    assert [states[gate[s]] for s in ("done", "failed", "running")] == [
        "succeeded",
        "failed",
        "running",
    ]
    running = GateRun.objects.get(pk=gate["running"])
    assert running.heartbeat_at == started and running.attempts == 1  # the reaper can see it
    assert GateRun.objects.get(pk=queued_gate).attempts == 0
    states = dict(Rehearsal.objects.values_list("pk", "state"))
    assert [states[rehearsal[s]] for s in ("done", "failed", "queued")] == [
        "succeeded",
        "failed",
        "queued",
    ]
    assert states[died] == "interrupted"  # what the old reaper called a failure
    periodic = new.get_model("django_celery_beat", "PeriodicTask").objects
    assert not periodic.filter(name="reap-stale-rehearsals").exists()  # beat's copy of it too

    old = migrate(BEFORE)
    states = dict(old.get_model("schema", "Rehearsal").objects.values_list("pk", "state"))
    assert [states[rehearsal[s]] for s in ("done", "failed", "queued")] == [
        "done",
        "failed",
        "queued",
    ]
    assert states[died] == "failed"
    assert old.get_model("schema", "GateRun").objects.get(pk=gate["done"]).state == "done"
    migrate(AFTER)
