"""Changing a backup policy: audited, and its schedules follow in the same transaction."""

from __future__ import annotations

from django.db import transaction

from dashboard.audit.chain import Actor, record
from dashboard.backups import schedules
from dashboard.backups.models import BackupPolicy

FIELDS = (
    "retention_days",
    "rpo_hours",
    "backup_every_hours",
    "validate_every_hours",
    "storage_url",
)


@transaction.atomic
def update_policy(actor: Actor | None, policy: BackupPolicy) -> BackupPolicy:
    """Save ``policy`` (an edited instance); record what changed; resync its beat schedules."""
    saved = BackupPolicy.objects.select_for_update().filter(database=policy.database_id).first()
    before = {name: getattr(saved, name) for name in FIELDS} if saved else {}
    if saved is not None:
        policy.pk = saved.pk
    policy.save()
    changes = {
        name: [before.get(name), getattr(policy, name)]
        for name in FIELDS
        if before.get(name) != getattr(policy, name)
    }
    if changes:
        record(actor, "backup_policy.updated", policy, details={"changes": changes})
    schedules.sync(policy.database, policy)
    return policy
