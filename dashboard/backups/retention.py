"""Retention: completed backups older than the policy's ``retention_days`` (30 by default) are
deleted from storage and marked pruned (``pruned_at``; the job stays succeeded), except the
newest backup that passed a validation, which stays whatever its age (it may be the only proof of
a restorable state). Only a completed backup (succeeded, still stored) is ever that newest one: a
failed, interrupted or cancelled backup never is. A backup being validated right now stays too.
The leftovers of backups that did not succeed (an open multipart upload, a partial file) go
whatever their age, and so do uploads that no backup row knows (a worker killed between starting
an upload and recording its id). Every prune is audited; ``dry_run`` changes nothing and says what
would go.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from dashboard.audit.chain import Actor, record
from dashboard.backups import pipeline
from dashboard.backups.models import Backup, BackupPolicy
from dashboard.databases.models import ManagedDatabase
from dashboard.jobs.models import ACTIVE
from dashboard.lib import s3, storage

logger = logging.getLogger(__name__)

DEFAULT_RETENTION_DAYS = BackupPolicy._meta.get_field("retention_days").default


def newest_validated(db: ManagedDatabase) -> Backup | None:
    """The newest completed backup of ``db`` with a passed validation: never pruned."""
    return (
        db.backups.validated()
        .annotate(taken_at=Coalesce("started_at", "created_at"))
        .order_by("-taken_at", "-pk")
        .first()
    )


def retention_days(db: ManagedDatabase) -> int:
    policy = BackupPolicy.objects.filter(database=db).first()
    return policy.retention_days if policy is not None else DEFAULT_RETENTION_DAYS


def expired(db: ManagedDatabase, now: datetime) -> list[Backup]:
    """Completed backups of ``db`` past retention that may go."""
    cutoff = now - timedelta(days=retention_days(db))
    keep = newest_validated(db)
    busy = Q(validations__state__in=ACTIVE)
    candidates = (
        db.backups.completed()
        .annotate(taken_at=Coalesce("started_at", "created_at"))
        .filter(taken_at__lt=cutoff)
        .exclude(busy)
        .order_by("taken_at", "pk")
    )
    if keep is not None:
        candidates = candidates.exclude(pk=keep.pk)
    return list(candidates.select_related("database").distinct())


def leftovers(db: ManagedDatabase) -> list[Backup]:
    """Backups of ``db`` that did not succeed (failed, interrupted, cancelled) and still point
    at something in storage."""
    return list(
        db.backups.filter(state__in=pipeline.UNFINISHED)
        .filter(~Q(upload_id="") | ~Q(storage_url=""))
        .select_related("database")
        .order_by("created_at", "pk")
    )


def orphaned_uploads(
    databases: list[ManagedDatabase], now: datetime, errors: list[str] | None = None
) -> list[storage.Leftover]:
    """Open uploads (partial files) in the databases' stores that no backup row knows and that
    are older than a heartbeat's staleness: what a killed worker left unrecorded. (The uploads
    rows know are their backups' business: running ones are in progress, failed ones are cleaned
    with their row.)"""
    bases = {pipeline.storage_base(db) for db in databases} or {settings.RUNWAY_BACKUP_STORAGE}
    owned = set(Backup.objects.exclude(upload_id="").values_list("upload_id", flat=True))
    cutoff = now - pipeline.stale_after()
    found = []
    for base in sorted(bases):
        try:
            leftovers_here = storage.leftovers(base)
        except (storage.StorageError, s3.S3Error) as exc:
            _note(errors, f"Could not look for open uploads in {base}: {exc}")
            continue
        found += [
            leftover
            for leftover in leftovers_here
            if leftover.upload_id not in owned
            and (leftover.started is None or leftover.started < cutoff)
        ]
    return found


def prune(
    db: ManagedDatabase | None = None,
    *,
    dry_run: bool = False,
    actor: Actor | None = None,
    now: datetime | None = None,
    errors: list[str] | None = None,
    uploads: list[storage.Leftover] | None = None,
) -> list[Backup]:
    """Prune one database's backups (or every database's); return the backups pruned or cleaned
    (with ``dry_run``, those that would be). Orphaned uploads aborted (or that would be) are
    appended to ``uploads`` when given. A storage failure skips that backup (it stays as it was)
    and is appended to ``errors`` when given."""
    now = now or timezone.now()
    databases = [db] if db is not None else list(ManagedDatabase.objects.all())
    gone: list[Backup] = []
    for leftover in orphaned_uploads(databases, now, errors):
        if not dry_run:
            try:
                storage.abort(leftover.url, leftover.upload_id)
            except (storage.StorageError, s3.S3Error) as exc:
                _note(errors, f"Could not abort the upload of {leftover.url}: {exc}")
                continue
            record(
                actor,
                "backup.orphan_upload_aborted",
                object_type="backup",
                details={"url": leftover.url, "upload_id": leftover.upload_id},
            )
        if uploads is not None:
            uploads.append(leftover)
    for database in databases:
        old, failed = expired(database, now), leftovers(database)
        if dry_run:
            gone += old + failed
            continue
        for backup in old:
            try:
                if _prune_one(backup, actor, now):
                    gone.append(backup)
            except (storage.StorageError, s3.S3Error) as exc:
                _note(errors, f"Backup #{backup.pk} of {database.name} was not pruned: {exc}")
        for backup in failed:
            if pipeline.remove_leftovers(backup, actor, why="prune"):
                gone.append(backup)
            else:
                why = f"The leftovers of {backup.state} backup #{backup.pk} could not be removed."
                _note(errors, why)
    return gone


def _note(errors: list[str] | None, message: str) -> None:
    logger.warning(message)
    if errors is not None:
        errors.append(message)


def _prune_one(backup: Backup, actor: Actor | None, now: datetime) -> bool:
    db = backup.database
    with transaction.atomic():
        locked = (
            Backup.objects.select_for_update(skip_locked=True)
            .completed()
            .filter(pk=backup.pk)
            .first()
        )
        keep = newest_validated(db)
        if locked is None or (keep is not None and keep.pk == locked.pk):
            return False
        if locked.validations.active().exists():
            return False
        # Deleted inside the transaction: if storage refuses, the row stays completed.
        if locked.storage_url:
            storage.delete(locked.storage_url)
        locked.prune(now)
        taken = locked.started_at or locked.created_at
        record(
            actor,
            "backup.pruned",
            locked,
            details={
                "url": locked.storage_url,
                "age_days": round((now - taken).total_seconds() / 86400, 1),
                "retention_days": retention_days(db),
            },
        )
    backup.refresh_from_db()
    return True
