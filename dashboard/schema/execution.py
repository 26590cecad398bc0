"""Running a database's revisions for real: one revision at a time, each its own transaction, the
way the database says its revisions run (:mod:`.runners`: Runway's own online environment, or
the project's own alembic), under a PostgreSQL advisory lock taken in the managed database itself,
so one migration at a time runs per database whichever worker or host runs it (a second one
fails at once with :class:`MigrationBusy`, naming the holder). Each revision is attempted the
guarded way (:mod:`.guard`: wait without queueing for conflicting sessions, short escalating
lock timeouts, backoff, a statement timeout per revision) under the database's policy. Each step
is logged (with its timing, and in Runway's environment each statement with its own) as it
happens through the ``log`` callback, and every change of state is handed to ``on_progress``.

In the project's mode (its own alembic in a subprocess) the waiting, the attempts and the
INVALID-index clean-up apply, with the timeouts passed in ``PGOPTIONS`` per attempt; what does
not: the statement running and the backend pid are unknown (``Progress.statement`` stays "",
``backend_pid`` None), env.py may override the timeouts, CONCURRENTLY statements get the
attempt's short lock timeout (not the statement timeout), and a stop is seen between attempts,
not during one."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from django.conf import settings

from dashboard.databases import credentials
from dashboard.databases.models import ManagedDatabase, RunMode
from dashboard.lib import pg
from dashboard.lib.alembic import online
from dashboard.schema import guard, runners


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
    attempts: int = 0
    waited_seconds: float = 0.0

    def to_json(self) -> dict[str, object]:
        return asdict(self)


PHASES = ("waiting", "attempt", "backoff", "cleanup", "done", "failed", "stopped")


@dataclass
class Progress:
    """Where a migrate() call is, handed to ``on_progress`` at every change (a copy: keep it)."""

    revision: str
    index: int  # 1-based position among the revisions of this migrate() call
    total: int
    phase: str  # one of PHASES
    attempt: int
    lock_timeout_ms: int
    backend_pid: int | None  # the migrating session's (None before it connects / project mode)
    blockers: list[dict[str, Any]] = field(default_factory=list)
    statement: str = ""  # the statement running now (one line), "" between statements
    statement_started: float | None = None  # time.time() when it started
    timings: list[dict[str, Any]] = field(default_factory=list)  # per finished revision


def timeouts() -> str:
    """The server options every rehearsal runs with (the seed audit's 3 and 5 minutes by
    default): a copy has no application to protect, so it is not attempted the guarded way.
    Deployments run under the database's policy (:class:`guard.Policy`)."""
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
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    policy: guard.Policy | None = None,
) -> list[Step]:
    """Run ``revisions`` in order, each its own transaction: upgrade each (oldest first), or,
    when ``direction`` is "downgrade", undo each (newest first: each revision's downgrade());
    stop at the first failure. Returns what ran. ``before_statement`` is called before each
    statement a revision sends (Runway's environment only).

    ``policy`` (default: the database's) decides the attempts. ``should_stop()`` is asked while
    waiting, between attempts and between revisions: when it says yes nothing more is
    attempted, and the revision under way ends as ``Step(ok=False, error="stopped: ...")``; a
    statement cancelled from outside (pg_cancel_backend) while it says yes is not retried.

    ExecutionError (nothing ran) when the database cannot run them as configured, or a
    revision runs CONCURRENTLY inside its transaction; MigrationBusy when another migration
    holds the database's migration lock."""
    if direction not in ("upgrade", "downgrade"):
        raise ValueError(f"direction must be upgrade or downgrade, not {direction!r}")
    policy = policy if policy is not None else guard.Policy.of(db)
    stop = should_stop if should_stop is not None else (lambda: False)
    needs = _needs(db, revisions, direction, log)
    refused = guard.refusals(needs.values())
    if refused:
        raise ExecutionError("Refused before anything ran: " + "; ".join(refused) + ".")
    password = credentials.password(db)
    progress = _Reporter(
        Progress("", 0, len(revisions), "waiting", 0, policy.lock_timeout_ms, None),
        on_progress,
        log,
    )

    def started(statement: online.Statement) -> None:
        progress.update(statement=statement.sql, statement_started=time.time())
        if before_statement is not None:
            before_statement(statement)

    def finished(statement: online.Statement) -> None:
        found = needs.get(statement.revision)
        if found is not None:
            found.observe(statement.sql)
        progress.update(statement="", statement_started=None)

    try:
        runner = runners.runner_for(
            db,
            db.dsn,
            password,
            options=policy.server_options(),
            log=log,
            before_statement=started,
            after_statement=finished,
        )
    except runners.Refused as exc:
        raise ExecutionError(str(exc)) from None
    progress.runner = runner
    steps: list[Step] = []
    application = f"runway migration lock {socket.gethostname()}:{os.getpid()}"[:63]
    with pg.connect(
        db.dsn, password, timeout=settings.RUNWAY_CONNECT_TIMEOUT, application_name=application
    ) as lock:
        lock.autocommit = True
        if not pg.try_migration_lock(lock):
            holder = pg.migration_lock_holder(lock)
            who = (
                f" (held by pid {holder['pid']}, {holder['application'] or holder['user']}, "
                f"since {holder['since']})"
                if holder
                else ""
            )
            runner.close()
            raise MigrationBusy(f"Another migration is running on {db.name}{who}.")
        log(f"took the migration lock on {db.name}")
        log(f"revisions run in {_mode(db)}")
        log(f"policy: {policy.describe()}")
        # The watcher's own questions never hang; its waits are polls, never lock requests.
        pg.set_timeouts(lock, lock_timeout_ms=policy.lock_timeout_ms, statement_timeout_ms=30_000)
        check_interval = pg.server_version_num(lock) >= 140000
        try:
            for index, revision in enumerate(revisions, 1):
                progress.update(
                    revision=revision, index=index, attempt=0, blockers=[], phase="waiting"
                )
                if stop():
                    steps.append(
                        Step(revision, 0.0, False, "stopped: asked to stop before it began")
                    )
                    log(f"stopped before {revision}")
                    progress.update(phase="stopped")
                    break
                step = _run_one(
                    runner, lock, revision, direction, needs[revision], policy,
                    log=log, progress=progress, stop=stop, check_interval=check_interval,
                )  # fmt: skip
                steps.append(step)
                progress.timings.append(
                    {
                        "revision": step.revision,
                        "seconds": step.seconds,
                        "attempts": step.attempts,
                        "waited_seconds": step.waited_seconds,
                        "ok": step.ok,
                    }
                )
                if not step.ok:
                    progress.update(
                        phase="stopped" if step.error.startswith("stopped:") else "failed"
                    )
                    break
                progress.update(phase="done")
        finally:
            runner.close()
            with contextlib.suppress(pg.Error):  # a lost connection took the lock with it
                pg.release_migration_lock(lock)
            log("released the migration lock")
    return steps


def _run_one(
    runner: runners.Runner,
    watcher: pg.Connection,
    revision: str,
    direction: str,
    needs: guard.Needs,
    policy: guard.Policy,
    *,
    log: Callable[[str], None],
    progress: _Reporter,
    stop: Callable[[], bool],
    check_interval: bool,
) -> Step:
    log(f"{direction} to {revision} …" if direction == "upgrade" else f"undo {revision} …")
    if needs.known:
        log(f"  locks: {needs.describe()}")
    started = time.monotonic()

    def attempt(session_settings: Mapping[str, str]) -> None:
        runner.prepare(session_settings)
        progress.update()  # the backend pid, once connected
        runner.run(revision, direction)

    def phase(
        name: str,
        *,
        attempt: int | None = None,
        lock_timeout_ms: int | None = None,
        blockers: list[dict[str, Any]] | None = None,
    ) -> None:
        changes: dict[str, Any] = {"phase": name}
        if attempt is not None:
            changes["attempt"] = attempt
        if lock_timeout_ms is not None:
            changes["lock_timeout_ms"] = lock_timeout_ms
        if blockers is not None:
            changes["blockers"] = blockers
        progress.update(**changes)

    outcome = guard.run_revision(
        guard.Revision(
            revision=revision,
            needs=needs,
            policy=policy,
            watcher=watcher,
            attempt=attempt,
            own_pids=lambda: [pid for pid in [runner.backend_pid] if pid is not None],
            log=log,
            phase=phase,
            should_stop=stop,
            check_interval=check_interval,
        )
    )
    seconds = round(time.monotonic() - started, 3)
    step = Step(
        revision, seconds, outcome.ok, outcome.error, outcome.attempts, outcome.waited_seconds
    )
    tried = f"{outcome.attempts} attempt(s), {outcome.waited_seconds:.1f} s waiting"
    if outcome.ok:
        log(f"{revision} done in {seconds:.3f} s ({tried})")
    elif outcome.stopped:
        log(f"{revision} {outcome.error} after {seconds:.3f} s ({tried}): rolled back")
    else:
        log(f"{revision} FAILED after {seconds:.3f} s ({tried}): {outcome.error}")
    return step


class _Reporter:
    """The one Progress of a migrate() call; each change is handed on as a copy."""

    def __init__(
        self,
        progress: Progress,
        on_progress: Callable[[Progress], None] | None,
        log: Callable[[str], None],
    ) -> None:
        self.progress = progress
        self.on_progress = on_progress
        self.log = log
        self.runner: runners.Runner | None = None
        self._complained = False

    @property
    def timings(self) -> list[dict[str, Any]]:
        return self.progress.timings

    def update(self, **changes: Any) -> None:
        for name, value in changes.items():
            setattr(self.progress, name, value)
        if self.runner is not None:
            self.progress.backend_pid = self.runner.backend_pid
        if self.on_progress is None:
            return
        shown = replace(
            self.progress,
            blockers=list(self.progress.blockers),
            timings=[dict(t) for t in self.progress.timings],
        )
        try:
            self.on_progress(shown)
        except Exception as exc:  # noqa: BLE001 - a watcher's failure never fails the migration
            if not self._complained:
                self.log(f"(the progress report failed and is skipped from now on: {exc})")
                self._complained = True
                self.on_progress = None


def _needs(
    db: ManagedDatabase, revisions: list[str], direction: str, log: Callable[[str], None]
) -> dict[str, guard.Needs]:
    """What each revision locks and builds, from its risk analysis (stored, or analysed now)."""
    from dashboard.schema.analysis import reports_for

    try:
        reports = {r.revision: r for r in reports_for(db, list(revisions))}
    except Exception as exc:  # noqa: BLE001 - without it, attempts still run with short timeouts
        log(f"the risk analysis is unavailable ({type(exc).__name__}: {exc})")
        reports = {}
    return {rev: guard.needs_of(reports.get(rev), rev, direction) for rev in revisions}


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
