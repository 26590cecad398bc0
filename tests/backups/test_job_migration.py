"""backups 0002: backups and validations of the old states become jobs, and back again."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from helpers import make_database, migrate_to, migrate_to_latest

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("backups", "0001_initial")]
AFTER = [("backups", "0002_backups_are_jobs")]


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
    Backup = old.get_model("backups", "Backup")
    Validation = old.get_model("backups", "Validation")
    Periodic = old.get_model("django_celery_beat", "PeriodicTask")
    Interval = old.get_model("django_celery_beat", "IntervalSchedule")
    every = Interval.objects.create(every=5, period="minutes")
    Periodic.objects.create(
        name="reap-stale-backups", task="dashboard.backups.tasks.reap_stale_backups", interval=every
    )
    pruned_at = timezone.now() - timedelta(days=1)
    backups = {
        state: Backup.objects.create(database_id=db.pk, state=state).pk
        for state in ("queued", "running", "completed", "failed")
    }
    pruned = Backup.objects.create(database_id=db.pk, state="pruned", pruned_at=pruned_at).pk
    died = Backup.objects.create(
        database_id=db.pk,
        state="failed",
        error="The worker died mid-backup (no heartbeat since 2026-12-01 10:00:00 UTC).",
    ).pk
    completed = backups["completed"]
    proofs = {
        name: Validation.objects.create(backup_id=completed, state=state, error=error).pk
        for name, state, error in (
            ("passed", "passed", ""),
            ("found problems", "failed", "1 integrity check(s) failed: rows in users"),
            ("could not run", "failed", "Wrong passphrase: gpg could not decrypt the backup"),
            ("died", "failed", "The worker died mid-validation (no heartbeat since 10:00)."),
            ("running", "running", ""),
        )
    }

    new = migrate(AFTER)
    rows = new.get_model("backups", "Backup").objects
    states = dict(rows.values_list("pk", "state"))
    assert [states[backups[s]] for s in ("queued", "running", "completed", "failed")] == [
        "queued",
        "running",
        "succeeded",
        "failed",
    ]
    assert states[died] == "interrupted"  # what the old reaper called a failure
    assert (states[pruned], rows.get(pk=pruned).pruned_at) == ("succeeded", pruned_at)
    assert rows.get(pk=completed).pruned_at is None
    seen = dict(
        (pk, (state, passed))
        for pk, state, passed in new.get_model("backups", "Validation").objects.values_list(
            "pk", "state", "passed"
        )
    )
    assert [seen[proofs[n]] for n in proofs] == [
        ("succeeded", True),
        ("succeeded", False),  # it ran and found a problem
        ("failed", None),  # it could not run
        ("interrupted", None),
        ("running", None),
    ]
    periodic = new.get_model("django_celery_beat", "PeriodicTask").objects
    assert not periodic.filter(name="reap-stale-backups").exists()  # beat's copy of it too

    old = migrate(BEFORE)
    states = dict(old.get_model("backups", "Backup").objects.values_list("pk", "state"))
    assert [states[backups[s]] for s in ("queued", "running", "completed", "failed")] == [
        "queued",
        "running",
        "completed",
        "failed",
    ]
    assert (states[pruned], states[died]) == ("pruned", "failed")
    states = dict(old.get_model("backups", "Validation").objects.values_list("pk", "state"))
    assert [states[proofs[n]] for n in proofs] == [
        "passed",
        "failed",
        "failed",
        "failed",
        "running",
    ]
    migrate(AFTER)
