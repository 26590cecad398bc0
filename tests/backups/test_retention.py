"""Retention on real stored backups: what goes, what stays, and that it is audited."""

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from helpers import s3_client, validation_outcome

from dashboard.audit.models import AuditEvent
from dashboard.backups import pipeline, retention
from dashboard.backups.models import Backup, BackupPolicy, Validation
from dashboard.jobs import lifecycle as jobs
from dashboard.lib import storage
from devstack.cluster import free_port

pytestmark = pytest.mark.django_db


def backup_aged(db: Any, days: float, *, validated: str | None = None) -> Backup:
    """A real stored backup, made to look ``days`` old (optionally with a validation)."""
    backup = jobs.run("backup", pipeline.request_backup(None, db, enqueue=False).pk)
    assert isinstance(backup, Backup) and backup.completed, backup and backup.error
    taken = timezone.now() - timedelta(days=days)
    Backup.objects.filter(pk=backup.pk).update(
        created_at=taken, started_at=taken, finished_at=taken + timedelta(minutes=1)
    )
    if validated:
        Validation.objects.create(backup=backup, finished_at=taken, **validation_outcome(validated))
    backup.refresh_from_db()
    return backup


def test_backups_past_retention_are_deleted_and_marked_pruned(
    target: Any, local_store: Path, admin_user: Any
) -> None:
    old = backup_aged(target, 31)
    recent = backup_aged(target, 29)
    assert retention.prune(actor=admin_user) == [old]
    old.refresh_from_db()
    assert (old.state, old.outcome) == ("succeeded", "pruned") and old.pruned_at is not None
    assert not Backup.objects.completed().filter(pk=old.pk).exists()
    assert not storage.exists(old.storage_url)
    assert Backup.objects.get(pk=recent.pk).completed
    assert storage.exists(recent.storage_url)
    event = AuditEvent.objects.get(action="backup.pruned")
    assert (event.object_id, event.actor_name) == (str(old.pk), "ada")
    assert event.details["retention_days"] == 30 and event.details["age_days"] == 31.0


def test_the_newest_validated_backup_stays_whatever_its_age(target: Any, local_store: Path) -> None:
    older_validated = backup_aged(target, 90, validated="passed")
    newest_validated = backup_aged(target, 60, validated="passed")
    failed_validation = backup_aged(target, 45, validated="failed")
    never_validated = backup_aged(target, 40)
    pruned = retention.prune()
    assert sorted(b.pk for b in pruned) == sorted(
        [older_validated.pk, failed_validation.pk, never_validated.pk]
    )
    newest_validated.refresh_from_db()
    assert newest_validated.completed and storage.exists(newest_validated.storage_url)


def test_a_backup_being_validated_stays(target: Any, local_store: Path) -> None:
    busy = backup_aged(target, 50)
    Validation.objects.create(backup=busy, state="running")
    assert retention.prune() == []
    assert Backup.objects.get(pk=busy.pk).completed


def test_a_dry_run_changes_nothing_and_says_what_would_go(target: Any, local_store: Path) -> None:
    old = backup_aged(target, 31)
    events = AuditEvent.objects.count()
    assert retention.prune(dry_run=True) == [old]
    assert Backup.objects.get(pk=old.pk).completed
    assert storage.exists(old.storage_url)
    assert AuditEvent.objects.count() == events
    assert not BackupPolicy.objects.exists()  # not even a default policy row


def test_retention_is_set_per_database(target: Any, local_store: Path) -> None:
    BackupPolicy.objects.create(database=target, retention_days=7)
    week_old = backup_aged(target, 8)
    assert retention.prune(target) == [week_old]


def test_a_failed_backups_open_upload_is_aborted(
    target: Any, s3_store: str, s3_endpoint: str, s3_bucket: str
) -> None:
    client = s3_client(s3_endpoint)
    key = "runway/analyticbot/20250101T000000Z-99.dump.zst.gpg"
    upload = client.create_multipart_upload(Bucket=s3_bucket, Key=key)
    failed = Backup.objects.create(
        database=target,
        state="failed",
        storage_url=f"s3://{s3_bucket}/{key}",
        upload_id=upload["UploadId"],
        error="The worker died mid-backup",
    )
    assert retention.prune(dry_run=True) == [failed]
    assert retention.prune() == [failed]
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    failed.refresh_from_db()
    assert (failed.state, failed.upload_id, failed.storage_url) == ("failed", "", "")
    assert AuditEvent.objects.filter(
        action="backup.leftovers_removed", object_id=str(failed.pk)
    ).exists()


@pytest.mark.parametrize("state", ["failed", "interrupted", "cancelled"])
def test_a_backups_partial_file_is_removed_unless_it_succeeded(
    target: Any, local_store: Path, state: str
) -> None:
    final = local_store / "analyticbot" / "x.dump.zst.gpg"
    partial = final.with_name(".x.dump.zst.gpg.partial-abcd")
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"half a backup")
    Backup.objects.create(
        database=target, state=state, storage_url=f"file://{final}", upload_id=str(partial)
    )
    assert len(retention.prune()) == 1
    assert not partial.exists()


def test_a_half_done_backup_is_never_the_newest_validated(target: Any, local_store: Path) -> None:
    kept = backup_aged(target, 60, validated="passed")
    for state in ("failed", "interrupted", "cancelled"):
        Backup.objects.create(database=target, state=state)
    assert retention.newest_validated(target) == kept
    assert retention.prune() == []
    assert Backup.objects.get(pk=kept.pk).completed


def test_a_backup_storage_refuses_to_delete_stays_completed(
    target: Any, s3_store: str, settings: Any
) -> None:
    old = backup_aged(target, 40)
    settings.RUNWAY_S3_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"
    errors: list[str] = []
    assert retention.prune(errors=errors) == []
    assert Backup.objects.get(pk=old.pk).completed
    [error] = [e for e in errors if "was not pruned" in e]
    assert "cannot be reached" in error
    assert not AuditEvent.objects.filter(action="backup.pruned").exists()


def test_an_upload_no_backup_knows_is_aborted(
    target: Any, s3_store: str, s3_endpoint: str, s3_bucket: str
) -> None:
    client = s3_client(s3_endpoint)
    orphan = client.create_multipart_upload(Bucket=s3_bucket, Key="runway/analyticbot/lost.gpg")
    running = Backup.objects.create(database=target, state="running")
    owned = client.create_multipart_upload(Bucket=s3_bucket, Key="runway/analyticbot/live.gpg")
    Backup.objects.filter(pk=running.pk).update(upload_id=owned["UploadId"])
    seen: list[storage.Leftover] = []
    assert retention.prune(dry_run=True, uploads=seen) == []
    assert [u.upload_id for u in seen] == [orphan["UploadId"]]
    assert len(client.list_multipart_uploads(Bucket=s3_bucket)["Uploads"]) == 2
    retention.prune()
    open_now = client.list_multipart_uploads(Bucket=s3_bucket)["Uploads"]
    assert [u["UploadId"] for u in open_now] == [owned["UploadId"]]
    event = AuditEvent.objects.get(action="backup.orphan_upload_aborted")
    assert event.details["upload_id"] == orphan["UploadId"]


def test_a_partial_file_no_backup_knows_goes_once_it_is_stale(
    target: Any, local_store: Path
) -> None:
    partial = local_store / "analyticbot" / ".lost.dump.zst.gpg.partial-0001"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"half")
    retention.prune()
    assert partial.exists()  # fresh: its worker may be about to record it
    stale = (timezone.now() - timedelta(minutes=10)).timestamp()
    os.utime(partial, (stale, stale))
    retention.prune()
    assert not partial.exists()
