"""The overview: one row per managed database, in a fixed number of queries."""

from __future__ import annotations

from dataclasses import dataclass

from dashboard.backups.status import BackupStatus, statuses
from dashboard.databases.models import ConnectionCheck, ManagedDatabase
from dashboard.jobs.models import JobState
from dashboard.schema.status import Status, status_of


@dataclass
class Row:
    db: ManagedDatabase
    latest: ConnectionCheck | None
    last_good: ConnectionCheck | None
    status: Status
    backups: BackupStatus


def _latest_per_database(**filters: object) -> dict[int, ConnectionCheck]:
    checks = (
        ConnectionCheck.objects.filter(**filters)
        .order_by("database_id", "-requested_at")
        .distinct("database_id")
    )
    return {c.database_id: c for c in checks}


def board() -> list[Row]:
    dbs = list(ManagedDatabase.objects.all())
    latest = _latest_per_database()
    good = _latest_per_database(state=JobState.SUCCEEDED, problem="")
    backups = statuses(dbs)
    return [
        Row(db, latest.get(db.pk), good.get(db.pk), status_of(db, good.get(db.pk)), backups[db.pk])
        for db in dbs
    ]
