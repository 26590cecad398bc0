"""Per-database beat schedules follow the policy; the scheduled functions skip what is done."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from helpers import backup_outcome, make_database, validation_outcome, wait_until

from dashboard.backups import scheduled, schedules
from dashboard.backups.models import Backup, BackupPolicy, Validation
from dashboard.backups.policy import update_policy

pytestmark = pytest.mark.django_db


def tasks_of(db):
    return {
        kind: PeriodicTask.objects.get(name=schedules.task_name(db.pk, kind))
        for kind in ("backup", "validate")
    }


def backup(db, *, hours_ago=1.0, **kwargs):
    kwargs.update(backup_outcome(kwargs.pop("state", "completed")))
    kwargs.setdefault("created_at", timezone.now() - timedelta(hours=hours_ago))
    return Backup.objects.create(database=db, **kwargs)


def test_sync_creates_a_backup_and_a_validation_task_from_the_policy():
    db = make_database()
    BackupPolicy.objects.create(database=db, backup_every_hours=6, validate_every_hours=12)
    schedules.sync(db)
    tasks = tasks_of(db)
    assert tasks["backup"].task == "dashboard.backups.scheduled_tasks.run_scheduled_backup"
    assert tasks["validate"].task == "dashboard.backups.scheduled_tasks.run_scheduled_validation"
    assert (tasks["backup"].interval.every, tasks["backup"].interval.period) == (6, "hours")
    assert tasks["validate"].interval.every == 12
    assert json.loads(tasks["backup"].kwargs) == {"database_id": db.pk}
    assert all(task.enabled for task in tasks.values())


def test_sync_is_idempotent_and_follows_changes():
    db = make_database()
    policy = BackupPolicy.objects.create(database=db)
    schedules.sync(db)
    schedules.sync(db)
    assert PeriodicTask.objects.filter(name__startswith="runway-backups:").count() == 2
    policy.backup_every_hours = 4
    policy.validate_every_hours = 0
    update_policy(None, policy)
    tasks = tasks_of(db)
    assert tasks["backup"].interval.every == 4 and tasks["backup"].enabled
    assert not tasks["validate"].enabled
    assert PeriodicTask.objects.filter(name__startswith="runway-backups:").count() == 2


def test_the_command_syncs_every_database_and_disables_those_gone():
    kept, gone = make_database(name="kept"), make_database(name="gone")
    schedules.sync(gone)
    gone_id = gone.pk
    gone.delete()
    out = StringIO()
    call_command("sync_backup_schedules", stdout=out)
    assert f"runway-backups:backup:{kept.pk}: every 24 h" in out.getvalue()
    assert "disabled 2 schedule(s)" in out.getvalue()
    assert not PeriodicTask.objects.get(name=f"runway-backups:backup:{gone_id}").enabled
    assert BackupPolicy.objects.filter(database=kept).exists()


def test_the_global_prune_and_the_one_reaper_are_on_the_beat_schedule():
    schedule = settings.CELERY_BEAT_SCHEDULE
    assert schedule["prune-backups"]["task"] == "dashboard.backups.tasks.prune_backups"
    assert schedule["prune-backups"]["schedule"] == 86400
    assert schedule["reap-jobs"]["task"] == "dashboard.jobs.tasks.reap_jobs"  # every kind
    assert not [name for name in schedule if "backup" in schedule[name]["task"] and "reap" in name]


# --- what a scheduled run does ---


def test_a_scheduled_backup_is_requested_with_reason_scheduled():
    db = make_database()
    made = scheduled.run_scheduled_backup(db.pk)
    assert made is not None
    assert (made.state, made.reason, made.requested_by) == ("queued", "scheduled", None)


@pytest.mark.parametrize("state", ["queued", "running"])
def test_a_scheduled_backup_is_skipped_while_one_is_active(state):
    db = make_database()
    backup(db, state=state)
    assert scheduled.run_scheduled_backup(db.pk) is None
    assert Backup.objects.count() == 1


def test_a_scheduled_backup_is_skipped_when_the_schedule_is_off():
    db = make_database()
    BackupPolicy.objects.create(database=db, backup_every_hours=0)
    assert scheduled.run_scheduled_backup(db.pk) is None
    assert not Backup.objects.exists()


def test_a_schedule_of_a_deleted_database_does_nothing():
    assert scheduled.run_scheduled_backup(987654) is None
    assert scheduled.run_scheduled_validation(987654) is None


def test_scheduled_validation_takes_the_newest_completed_backup():
    db = make_database()
    backup(db, hours_ago=5)
    newest = backup(db, hours_ago=1)
    backup(db, hours_ago=0.5, state="failed")
    backup(db, hours_ago=0.4, state="interrupted")
    backup(db, hours_ago=0.3, state="pruned")
    made = scheduled.run_scheduled_validation(db.pk)
    assert made is not None and made.backup == newest and made.requested_by is None


@pytest.mark.parametrize("state", ["queued", "running", "passed", "failed", "could not run"])
def test_scheduled_validation_skips_a_backup_already_validated_or_tried(state):
    db = make_database()
    Validation.objects.create(backup=backup(db), **validation_outcome(state))
    assert scheduled.run_scheduled_validation(db.pk) is None
    assert Validation.objects.count() == 1


@pytest.mark.parametrize("state", ["interrupted", "cancelled"])
def test_scheduled_validation_asks_again_after_one_that_proved_nothing(state):
    db = make_database()
    Validation.objects.create(backup=backup(db), **validation_outcome(state))
    made = scheduled.run_scheduled_validation(db.pk)
    assert made is not None and made.state == "queued"
    assert Validation.objects.count() == 2


def test_scheduled_validation_does_nothing_without_a_completed_backup_or_when_off():
    db = make_database()
    assert scheduled.run_scheduled_validation(db.pk) is None
    backup(db)
    BackupPolicy.objects.filter(database=db).update(validate_every_hours=0)
    assert scheduled.run_scheduled_validation(db.pk) is None
    assert not Validation.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_worker_knows_and_runs_the_scheduled_tasks(celery_worker):
    from dashboard.backups.scheduled_tasks import run_scheduled_backup

    log = celery_worker.read_text()
    assert "dashboard.backups.scheduled_tasks.run_scheduled_backup" in log
    assert "dashboard.backups.scheduled_tasks.run_scheduled_validation" in log
    db = make_database(name="scheduled-off")
    BackupPolicy.objects.create(database=db, backup_every_hours=0)
    result = run_scheduled_backup.delay(db.pk)
    wait_until(
        lambda: f"run_scheduled_backup[{result.id}] succeeded" in celery_worker.read_text(),
        "the worker to run the scheduled backup task",
    )
    assert not Backup.objects.filter(database=db).exists()


def test_a_newly_registered_database_gets_its_schedules_at_once(db):
    from django_celery_beat.models import PeriodicTask

    from dashboard.backups.models import BackupPolicy

    database = make_database(name="fresh")
    names = set(
        PeriodicTask.objects.filter(name__endswith=f":{database.pk}").values_list("name", flat=True)
    )
    assert len(names) == 2
    assert not BackupPolicy.objects.filter(database=database).exists()
