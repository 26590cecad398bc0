"""The backup status rule, on rows made with the ORM: met, or not met and why."""

from datetime import timedelta

import pytest
from django.utils import timezone
from helpers import backup_outcome, make_database, validation_outcome

from dashboard.backups import status
from dashboard.backups.models import Backup, BackupPolicy, Validation
from dashboard.databases.models import ConnectionCheck

pytestmark = pytest.mark.django_db


def backup(db, *, hours_ago=1.0, **kwargs):
    taken = timezone.now() - timedelta(hours=hours_ago)
    kwargs.update(backup_outcome(kwargs.pop("state", "completed")))
    kwargs.setdefault("size_bytes", 1_000_000)
    kwargs.setdefault("duration_s", 12.5)
    kwargs.setdefault("created_at", taken)
    kwargs.setdefault("started_at", taken)
    kwargs.setdefault("finished_at", taken + timedelta(seconds=kwargs["duration_s"] or 0))
    return Backup.objects.create(database=db, **kwargs)


def validation(of, state="passed", **kwargs):
    ended = state not in ("queued", "running")
    kwargs.setdefault("finished_at", timezone.now() if ended else None)
    return Validation.objects.create(backup=of, **validation_outcome(state), **kwargs)


def test_a_database_without_backups_does_not_meet_its_policy():
    db = make_database()
    result = status.status_of(db)
    assert not result.met
    assert result.reasons == ["No completed backup exists."]
    assert result.badge == ("b-bad", "no backup")


def test_a_fresh_validated_backup_meets_the_policy():
    db = make_database()
    validation(backup(db, hours_ago=2))
    result = status.status_of(db)
    assert result.met and result.fresh and result.validated
    assert result.reasons == []
    assert result.badge == ("b-ok", "policy met")


def test_a_backup_older_than_the_rpo_breaks_the_policy():
    db = make_database()
    validation(backup(db, hours_ago=49))
    result = status.status_of(db)
    assert not result.met and result.validated and not result.fresh
    assert result.badge == ("b-warn", "backup 2 days old")
    assert "is 2 days old; the RPO is 24 hours" in result.reasons[0]


def test_the_rpo_comes_from_the_databases_policy():
    db = make_database()
    BackupPolicy.objects.create(database=db, rpo_hours=72)
    validation(backup(db, hours_ago=49))
    assert status.status_of(db).met


def test_age_counts_from_when_the_dump_started():
    db = make_database()
    taken = timezone.now() - timedelta(hours=25)
    validation(backup(db, started_at=taken, finished_at=timezone.now(), duration_s=3600 * 25))
    assert not status.status_of(db).fresh


def test_a_newest_backup_never_validated_breaks_the_policy():
    db = make_database()
    older = backup(db, hours_ago=5)
    validation(older)
    newest = backup(db, hours_ago=1)
    result = status.status_of(db)
    assert not result.met and result.fresh
    assert result.last == newest and result.newest_validated == older
    assert result.reasons == [f"The newest completed backup (#{newest.pk}) was never validated."]
    assert result.badge == ("b-warn", "not validated")


@pytest.mark.parametrize("outcome", ["failed", "could not run"])
def test_a_failed_validation_breaks_the_policy_and_says_why(outcome):
    db = make_database()
    b = backup(db)
    validation(b, outcome, error="row count of users: expected 200, found 0")
    result = status.status_of(db)
    assert not result.met
    assert "failed its validation: row count of users" in result.reasons[0]
    assert result.badge == ("b-bad", "validation failed")
    assert result.validation_text == "failed"


@pytest.mark.parametrize("state", ["interrupted", "cancelled"])
def test_an_interrupted_validation_proves_nothing_and_says_so(state):
    db = make_database()
    b = backup(db)
    validation(b, "passed", created_at=timezone.now() - timedelta(minutes=30))
    validation(b, state, error="Interrupted: its worker (w:1) stopped reporting")
    result = status.status_of(db)
    assert not result.met and not result.validated
    assert result.reasons == [
        f"The validation of the newest completed backup (#{b.pk}) was {state} before it could "
        "prove anything: validate it again."
    ]
    assert result.badge == ("b-warn", "not validated")
    assert result.validation_text == f"validation {state}"


def test_only_the_latest_validation_of_the_newest_backup_counts():
    db = make_database()
    b = backup(db)
    validation(b, "passed", created_at=timezone.now() - timedelta(minutes=30))
    validation(b, "failed", error="restore failed")
    assert not status.status_of(db).validated


def test_a_validation_in_progress_says_so():
    db = make_database()
    validation(backup(db), "running")
    result = status.status_of(db)
    assert not result.met
    assert "is being validated" in result.reasons[0]
    assert result.badge == ("b-info", "validating")


def test_stale_and_unvalidated_gives_both_reasons():
    db = make_database()
    backup(db, hours_ago=30)
    assert len(status.status_of(db).reasons) == 2


@pytest.mark.parametrize("state", ["queued", "running", "failed", "interrupted", "pruned"])
def test_only_completed_backups_count_as_the_last_backup(state):
    db = make_database()
    completed = backup(db, hours_ago=3)
    validation(completed)
    backup(db, hours_ago=0.1, state=state)
    result = status.status_of(db)
    assert result.last == completed and result.met


def test_reading_the_status_never_writes_a_policy():
    db = make_database()
    result = status.status_of(db)
    assert result.policy.rpo_hours == 24 and result.policy.pk is None
    assert not BackupPolicy.objects.exists()


def test_statuses_take_three_queries_whatever_the_number_of_databases(
    django_assert_num_queries,
):
    dbs = [make_database(name=f"db{i}") for i in range(5)]
    for db in dbs:
        validation(backup(db, hours_ago=3))
        backup(db, hours_ago=1)
    BackupPolicy.objects.create(database=dbs[0], rpo_hours=1)
    with django_assert_num_queries(3):
        results = status.statuses(dbs)
        badges = [results[db.pk].badge for db in dbs]
    assert badges[0] == ("b-warn", "backup 1 hour old")
    assert badges[1:] == [("b-warn", "not validated")] * 4


def test_the_series_holds_the_last_completed_backups_oldest_first():
    db = make_database()
    for i in range(35):
        backup(db, hours_ago=100 - i, size_bytes=1000 + i, duration_s=float(i))
    backup(db, hours_ago=0.5, state="failed", size_bytes=None, duration_s=None)
    backup(db, hours_ago=0.45, state="interrupted", size_bytes=None, duration_s=None)
    backup(db, hours_ago=0.4, state="pruned", size_bytes=5000, duration_s=99.0)
    result = status.series(db)
    assert len(result.sizes) == 30
    assert result.sizes[-1] == 5000 and result.sizes[0] == 1006
    assert result.durations[-2] == 34.0
    assert result.labels[0].startswith("#")


def test_activity_lists_queued_and_running_work_with_a_size_estimate():
    db = make_database()
    done = backup(db, size_bytes=4_000_000)
    running = backup(db, hours_ago=0, state="running", size_bytes=None, progress_bytes=10)
    check = validation(done, "queued")
    current = status.activity(db)
    assert current.active
    assert current.backups == [running] and current.validations == [check]
    assert current.expected_bytes == 4_000_000


def test_no_activity_when_everything_is_done():
    db = make_database()
    validation(backup(db))
    assert not status.activity(db).active


def wal_check(db, **wal):
    return ConnectionCheck.objects.create(
        database=db, state="succeeded", finished_at=timezone.now(), wal=wal
    )


def archiver(**kwargs):
    return {"archived_count": 0, "failed_count": 0} | kwargs


def test_wal_archiving_off_is_a_warning():
    db = make_database()
    wal_check(db, wal_level="replica", archive_mode="off", archiver=archiver())
    wal = status.wal_status(db)
    assert wal.known and not wal.archiving
    assert "WAL archiving is off" in wal.warnings[0]


def test_failing_wal_archiving_is_a_warning():
    db = make_database()
    now = timezone.now()
    wal_check(
        db,
        wal_level="replica",
        archive_mode="on",
        archive_command_set=True,
        archiver=archiver(
            archived_count=10,
            last_archived_wal="000000010000000000000009",
            last_archived_time=(now - timedelta(hours=2)).isoformat(),
            failed_count=3,
            last_failed_wal="00000001000000000000000A",
            last_failed_time=(now - timedelta(minutes=5)).isoformat(),
        ),
    )
    wal = status.wal_status(db)
    assert wal.failing
    assert wal.warnings == [
        "WAL archiving is failing: 00000001000000000000000A failed 5\xa0minutes ago "
        "(3 failures since the statistics were reset)."
    ]
    assert wal.last_archived_age > timedelta(hours=1)


def test_healthy_wal_archiving_has_no_warning():
    db = make_database()
    now = timezone.now().isoformat()
    wal_check(
        db,
        wal_level="replica",
        archive_mode="on",
        archive_command_set=True,
        archiver=archiver(archived_count=5, last_archived_time=now, last_archived_wal="0001"),
    )
    assert status.wal_status(db).warnings == []


def test_archive_mode_on_without_a_command_is_a_warning():
    db = make_database()
    wal_check(db, wal_level="replica", archive_mode="on", archive_command_set=False)
    assert "never archived" in status.wal_status(db).warnings[0]


def test_wal_status_is_unknown_until_a_check_reads_it():
    db = make_database()
    ConnectionCheck.objects.create(database=db, state="succeeded", problem="unreachable")
    wal = status.wal_status(db)
    assert not wal.known and wal.warnings == []
