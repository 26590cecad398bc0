"""What the beat schedule does for one database: take a backup, or validate the newest one.

Both are safe to run twice (a beat message delivered twice, two beats by mistake): they lock the
database row, then skip when the work is already queued, running or done.
"""

from __future__ import annotations

from django.db import transaction

from dashboard.backups.models import Backup, BackupPolicy, Validation
from dashboard.backups.pipeline import request_backup
from dashboard.backups.validation import request_validation
from dashboard.databases.models import ManagedDatabase
from dashboard.jobs.models import JobState

REASON = "scheduled"


def _locked(database_id: int) -> ManagedDatabase | None:
    return ManagedDatabase.objects.select_for_update().filter(pk=database_id).first()


@transaction.atomic
def run_scheduled_backup(database_id: int) -> Backup | None:
    """Request a backup unless the schedule is off or one is already queued or running."""
    db = _locked(database_id)
    if db is None or BackupPolicy.of(db).backup_every_hours == 0:
        return None
    if db.backups.active().exists():
        return None
    return request_backup(None, db, reason=REASON)


@transaction.atomic
def run_scheduled_validation(database_id: int) -> Validation | None:
    """Validate the newest completed backup if it has never been validated.

    A backup whose validation failed (or ran and did not pass) is not retried here: the failure
    is evidence a person has to read (the lifecycle retries transient errors itself), and the
    next scheduled backup brings a fresh candidate. A validation that was interrupted (its
    worker died, or no worker took it) or cancelled says nothing about the backup: the schedule
    asks again.
    """
    db = _locked(database_id)
    if db is None or BackupPolicy.of(db).validate_every_hours == 0:
        return None
    newest = db.backups.completed().order_by("-created_at").first()
    if newest is None:
        return None
    tried = newest.validations.exclude(state__in=(JobState.INTERRUPTED, JobState.CANCELLED))
    if tried.exists():
        return None
    return request_validation(None, newest)
