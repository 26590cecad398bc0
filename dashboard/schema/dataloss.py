"""Data-loss detection for a managed database: its critical tables snapshot before a run's
execution and compared after it (the SQL and the comparison are snapshot.py's), with what the
run's revisions declare they lose and the columns the application itself writes."""

from __future__ import annotations

import time

from django.conf import settings

from dashboard.databases import credentials
from dashboard.databases.models import ManagedDatabase
from dashboard.lib import pg
from dashboard.schema import snapshot
from dashboard.schema.models import DataSnapshot
from dashboard.schema.status import scripts_of


def _connect(db: ManagedDatabase) -> pg.Connection:
    return pg.connect(db.dsn, credentials.password(db), timeout=settings.RUNWAY_CONNECT_TIMEOUT)


def take(db: ManagedDatabase, reason: str) -> DataSnapshot:
    """Snapshot ``db``'s critical tables in their configured modes; stored."""
    started = time.perf_counter()
    with _connect(db) as conn:
        tables = snapshot.take(conn, list(db.critical_tables), dict(db.snapshot_modes))
        at = pg.alembic_revision(conn)
    return DataSnapshot.objects.create(
        database=db,
        reason=reason[:200],
        database_at=at[:500],
        tables=[t.to_json() for t in tables],
        seconds=round(time.perf_counter() - started, 3),
    )


def declared(db: ManagedDatabase, revisions: list[str]) -> list[snapshot.Expectation]:
    """What ``revisions`` declare they lose (``# runway: expect ...`` in their files)."""
    tree = scripts_of(db)
    files = [
        (rev, tree.location / tree.revisions[rev].path)
        for rev in revisions
        if rev in tree.revisions
    ]
    return snapshot.expectations_of(files)


def compare(db: ManagedDatabase, before: DataSnapshot, revisions: list[str]) -> snapshot.Comparison:
    tables = [snapshot.TableSnapshot.from_json(t) for t in before.tables]
    with _connect(db) as conn:
        return snapshot.compare(
            conn, tables, declared(db, revisions), app_writes=list(db.application_writes)
        )
