"""A backup policy missed: each database whose policy is not met (no backup younger than its
RPO, or the newest not proven by a restore) is announced once per lapse (``backup.policy_missed``
to the leads and the channels that want it, audited); met again, the next lapse is announced
again. A database younger than its RPO that has no backup yet is not late."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from dashboard.audit.chain import record
from dashboard.backups.models import BackupPolicy
from dashboard.backups.status import statuses
from dashboard.notify import events
from dashboard.notify.outbox import emit


def check(now: datetime | None = None) -> list[str]:
    """Announce the lapses begun since the last look; the names of the databases announced."""
    now = now or timezone.now()
    policies = list(BackupPolicy.objects.select_related("database"))
    found = statuses([p.database for p in policies], now=now)
    told = []
    for policy in policies:
        status = found[policy.database_id]
        db = policy.database
        if status.met or (status.last is None and now - db.created_at < status.rpo):
            if policy.missed_since is not None:
                BackupPolicy.objects.filter(pk=policy.pk).update(missed_since=None)
            continue
        if policy.missed_since is not None:
            continue  # told already
        with transaction.atomic():
            claimed = BackupPolicy.objects.filter(pk=policy.pk, missed_since=None).update(
                missed_since=now
            )
            if not claimed:
                continue  # another look told
            why = " ".join(status.reasons)
            record(None, "backup.policy_missed", db, details={"reasons": status.reasons})
            emit(
                events.BACKUP_POLICY_MISSED,
                db,
                f"Backup policy missed on {db.name}",
                why,
                reverse("backup-status", args=[db.name]),
                {"reasons": status.reasons},
            )
        told.append(db.name)
    return told
