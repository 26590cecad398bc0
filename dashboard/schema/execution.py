"""Running a database's revisions for real: one revision at a time, each its own transaction, the
way the database says its revisions run (:mod:`.runners`: Runway's own online environment, or
the project's own alembic), under a PostgreSQL advisory lock taken in the managed database itself,
so one migration at a time runs per database whichever worker or host runs it. Each step is
logged (with its timing, and in Runway's environment each statement with its own) as it happens
through the ``log`` callback."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from django.conf import settings

from dashboard.databases import credentials
from dashboard.databases.models import ManagedDatabase, RunMode
from dashboard.lib import pg
from dashboard.lib.alembic import online
from dashboard.schema import runners


class ExecutionError(RuntimeError):
    """The migration could not run or stopped; the message says why."""


class MigrationBusy(ExecutionError):
    """Another migration holds the database's migration lock."""


@dataclass
class Step:
    revision: str
    seconds: float
    ok: bool
    error: str = ""

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def timeouts() -> str:
    """The server options every migration (and rehearsal) runs with: a DDL statement that cannot
    get its lock gives up instead of queueing every other query behind it, and no statement
    runs for ever (the seed audit's 3 and 5 minutes by default)."""
    return (
        f"-c lock_timeout={settings.RUNWAY_MIGRATION_LOCK_TIMEOUT} "
        f"-c statement_timeout={settings.RUNWAY_MIGRATION_STATEMENT_TIMEOUT}"
    )


def migrate(
    db: ManagedDatabase,
    revisions: list[str],
    *,
    direction: str = "upgrade",
    log: Callable[[str], None] = lambda line: None,
    before_statement: online.StatementHook | None = None,
) -> list[Step]:
    """Run ``revisions`` in order, each its own transaction: upgrade each (oldest first), or,
    when ``direction`` is "downgrade", undo each (newest first: each revision's downgrade());
    stop at the first failure. Returns what ran. ``before_statement`` is called before each
    statement a revision sends (Runway's environment only)."""
    if direction not in ("upgrade", "downgrade"):
        raise ValueError(f"direction must be upgrade or downgrade, not {direction!r}")
    password = credentials.password(db)
    try:
        runner = runners.runner_for(
            db,
            db.dsn,
            password,
            options=timeouts(),
            log=log,
            before_statement=before_statement,
        )
    except runners.Refused as exc:
        raise ExecutionError(str(exc)) from None
    steps: list[Step] = []
    with pg.connect(db.dsn, password, timeout=settings.RUNWAY_CONNECT_TIMEOUT) as lock:
        lock.autocommit = True
        if not pg.try_migration_lock(lock):
            holder = pg.migration_lock_holder(lock)
            who = (
                f" (held by pid {holder['pid']}, {holder['application'] or holder['user']}, "
                f"since {holder['since']})"
                if holder
                else ""
            )
            raise MigrationBusy(f"Another migration is running on {db.name}{who}.")
        log(f"took the migration lock on {db.name}")
        log(f"revisions run in {_mode(db)}")
        try:
            for revision in revisions:
                log(
                    f"{direction} to {revision} …"
                    if direction == "upgrade"
                    else f"undo {revision} …"
                )
                started = time.monotonic()
                try:
                    runner.run(revision, direction)
                except runners.RevisionFailed as exc:
                    seconds = round(time.monotonic() - started, 3)
                    steps.append(Step(revision, seconds, False, str(exc)))
                    log(f"{revision} FAILED after {seconds:.3f} s: {exc}")
                    break
                seconds = round(time.monotonic() - started, 3)
                steps.append(Step(revision, seconds, True))
                log(f"{revision} done in {seconds:.3f} s")
        finally:
            runner.close()
            pg.release_migration_lock(lock)
            log("released the migration lock")
    return steps


def _mode(db: ManagedDatabase) -> str:
    if db.run_mode == RunMode.PROJECT:
        return f"the project's own env.py ({db.project_python})"
    return "Runway's environment (the revision files only; env.py is not run)"


def revisions_to(db: ManagedDatabase, current: list[str], target: str) -> list[str]:
    """What ``alembic upgrade target`` runs from ``current``, oldest first (each is an upgrade
    target on its own: one transaction per revision)."""
    from dashboard.schema.status import scripts_of

    tree = scripts_of(db)
    wanted = tree.ancestors(target, include_self=True)
    done = tree.ancestors_of_all(current, include_self=True)
    return [rid for rid in tree.oldest_first() if rid in wanted and rid not in done]


def revisions_back_to(db: ManagedDatabase, current: list[str], target: str | None) -> list[str]:
    """What undoing ``current`` down to ``target`` (None: the base) runs, newest first: each
    revision to undo, children before their parents (``migrate(..., direction="downgrade")``)."""
    from dashboard.schema.status import scripts_of

    tree = scripts_of(db)
    keep = tree.ancestors(target, include_self=True) if target else set()
    applied = tree.ancestors_of_all(current, include_self=True)
    return [rid for rid in tree.order if rid in applied and rid not in keep]


def live_revisions_to(db: ManagedDatabase, target: str) -> list[str]:
    """``revisions_to`` from the revision the database is at right now (read live)."""
    password = credentials.password(db)
    with pg.connect(db.dsn, password, timeout=settings.RUNWAY_CONNECT_TIMEOUT) as conn:
        current = [r for r in pg.alembic_revision(conn).split(",") if r]
    return revisions_to(db, current, target)
