"""A managed database's migration status: its scripts against what its last check read."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from dashboard.databases.models import ConnectionCheck, ManagedDatabase
from dashboard.lib import alembic


def fingerprint(path: Path) -> tuple[float, int]:
    """Changes whenever a revision file in any version location is added, removed or edited,
    or the project's alembic.ini is."""
    try:
        return alembic.read_config(path).fingerprint()
    except alembic.NotAnAlembicProject:
        return (0.0, -1)


@lru_cache(maxsize=64)
def _read_cached(path: str, fingerprint: tuple[float, int]) -> alembic.ScriptTree:
    return alembic.read_scripts(path)


def scripts_of(db: ManagedDatabase) -> alembic.ScriptTree:
    """The database's script tree, re-read only when its versions folder changes."""
    path = db.script_path
    return _read_cached(str(path), fingerprint(path))


@dataclass
class Status:
    history: alembic.History | None
    error: str = ""
    known: bool = False  # whether a successful check has read alembic_version

    @property
    def pending_count(self) -> int | None:
        return len(self.history.pending) if self.history and self.known else None


def status_of(db: ManagedDatabase, check: ConnectionCheck | None) -> Status:
    known = check is not None and check.connected
    current = check.current_revisions if known and check else []
    try:
        tree = scripts_of(db)
    except alembic.NotAnAlembicProject as exc:
        return Status(None, str(exc), known)
    return Status(alembic.history(tree, current), "", known)


def last_good_check(db: ManagedDatabase) -> ConnectionCheck | None:
    return db.checks.connected().order_by("-finished_at").first()
