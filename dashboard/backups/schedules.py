"""Per-database Celery beat schedules, derived from the backup policy.

Each database has two ``PeriodicTask`` rows (django-celery-beat's DatabaseScheduler reads them):
one runs scheduled backups every ``backup_every_hours``, one scheduled validation every
``validate_every_hours``. An interval of 0 disables the row rather than deleting it, so the beat
history stays visible in the admin. Names carry the database id, which survives a rename.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from dashboard.backups.models import BackupPolicy
from dashboard.databases.models import ManagedDatabase

BACKUP_TASK = "dashboard.backups.scheduled_tasks.run_scheduled_backup"
VALIDATION_TASK = "dashboard.backups.scheduled_tasks.run_scheduled_validation"
PREFIX = "runway-backups"


@dataclass(frozen=True)
class Kind:
    slug: str
    task: str
    field: str
    verb: str


KINDS = (
    Kind("backup", BACKUP_TASK, "backup_every_hours", "Back up"),
    Kind("validate", VALIDATION_TASK, "validate_every_hours", "Validate the newest backup of"),
)


def task_name(db_id: int, kind: str) -> str:
    return f"{PREFIX}:{kind}:{db_id}"


def _interval(hours: int) -> IntervalSchedule:
    interval = IntervalSchedule.objects.filter(every=hours, period=IntervalSchedule.HOURS).first()
    return interval or IntervalSchedule.objects.create(every=hours, period=IntervalSchedule.HOURS)


@transaction.atomic
def sync(db: ManagedDatabase, policy: BackupPolicy | None = None) -> list[PeriodicTask]:
    """Create or update the database's two periodic tasks to match its policy."""
    policy = policy or BackupPolicy.of(db)
    tasks = []
    for kind in KINDS:
        hours = getattr(policy, kind.field)
        task, _ = PeriodicTask.objects.update_or_create(
            name=task_name(db.pk, kind.slug),
            defaults={
                "task": kind.task,
                "interval": _interval(max(hours, 1)),
                "kwargs": json.dumps({"database_id": db.pk}),
                "enabled": hours > 0,
                # A run that beat could not deliver in time is dropped, not piled up.
                "expire_seconds": max(hours, 1) * 3600,
                "description": f"{kind.verb} {db.name} every {hours} hours (its backup policy).",
            },
        )
        tasks.append(task)
    return tasks


@transaction.atomic
def sync_all() -> tuple[list[PeriodicTask], int]:
    """Sync every database; disable the tasks of databases that no longer exist.

    Returns the synced tasks and how many orphaned tasks were disabled.
    """
    tasks = [task for db in ManagedDatabase.objects.all() for task in sync(db)]
    keep = {task.pk for task in tasks}
    orphans = PeriodicTask.objects.filter(name__startswith=f"{PREFIX}:", enabled=True).exclude(
        pk__in=keep
    )
    disabled = 0
    for task in orphans:
        task.enabled = False
        task.save()
        disabled += 1
    return tasks, disabled
