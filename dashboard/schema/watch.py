"""Watching a migration while it runs: live progress, the application around it, a safe abort,
and the clean-up after a worker died mid-revision.

:class:`Watcher` is a thread beside :func:`dashboard.schema.execution.migrate`, on a connection
of its own to the managed database. About once a second (and at once when the migration reports
a change through ``on_progress``) it reads (:func:`dashboard.lib.pg.watch_sample`) the migrating
session's activity and what blocks it, its index build's progress
(``pg_stat_progress_create_index``), and the database's traffic: commits per second
(``pg_stat_database.xact_commit``, less the watcher's own, guarded execution's polls and the
revisions' own commits, each counted as it happens) and
the longest lock wait of any other session, the application's stall. Each look becomes a
snapshot handed to a :class:`Channel` (the run step's job row) for the run page; the series is
kept bounded (:class:`Series`) for its plot and the step's evidence.

When the channel says a stop was asked for, the watcher aborts safely (:meth:`Watcher.abort`):
``should_stop()`` turns true so that migrate() starts nothing more, the migrating statement is
cancelled (``pg_cancel_backend``), the session is ended (``pg_terminate_backend``) when it is
still in the revision's transaction after the grace period, and once migrate() returned the
watcher confirms the rollback: the session is gone or idle outside a transaction and the version
table is where it was before the revision began (:class:`Abort`).

:func:`recover` is the clean-up after a worker died mid-migration: the session recorded in the
last snapshot must be gone (PostgreSQL notices a dead client through
``client_connection_check_interval``; still there after a grace, it is ended), the migration lock
free, and it says which revision the database is at.

No runbook here (domain code): the caller wires the channel to its job.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from django.conf import settings

from dashboard.databases import credentials
from dashboard.databases.models import ManagedDatabase
from dashboard.lib import pg
from dashboard.lib.alembic import online

if TYPE_CHECKING:
    from dashboard.schema.execution import Progress

logger = logging.getLogger(__name__)

EVERY = 0.5  # seconds between two looks (sooner when the migration reports a change)
SOONEST = 0.2  # never two looks closer than this
PLOT_STEP = 1.0  # seconds between two points of the plotted series (each the worst look since)
MAX_POINTS = 240  # of the plotted series; older points are merged in pairs beyond it
# Commits per second are counted over the last few seconds: each backend adds its commits to
# pg_stat_database at most once a second, so a shorter span shows bursts and gaps, not traffic.
RATE_WINDOW = 2.0
STALL_MS = 100.0  # another session waiting this long for a lock is stalled
DEFAULT_GRACE = 10.0  # seconds from the cancel to the end of the session, unless asked otherwise
RECOVERY_GRACE = 5.0  # seconds a dead worker's session gets to go by itself
SETTLE_SECONDS = 5.0  # how long an ended session may take to leave pg_stat_activity

# Phases of execution.Progress in which a revision's transaction may be open.
IN_REVISION = ("attempt", "cleanup")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


# --- What the watcher is told and tells ---


@dataclass(frozen=True)
class StopRequest:
    """Someone asked the migration to stop: who, why, and how long the statement gets between
    the cancel and the end of its session."""

    by: str
    reason: str
    grace_seconds: float = DEFAULT_GRACE
    requested_at: str = ""

    @classmethod
    def of(cls, data: dict[str, Any] | None) -> StopRequest:
        data = data or {}
        grace = data.get("grace_seconds")
        return cls(
            by=str(data.get("by") or "someone"),
            reason=str(data.get("reason") or "no reason given"),
            grace_seconds=float(grace) if grace is not None else DEFAULT_GRACE,
            requested_at=str(data.get("requested_at") or ""),
        )


class Channel(Protocol):
    """Where the snapshots go and stop requests come from (a run step's job row)."""

    def publish(self, snapshot: dict[str, Any]) -> None:
        """The latest snapshot, for the page (called from the watcher's thread)."""

    def stop_request(self) -> StopRequest | None:
        """A stop asked for (without blocking), else None."""


# --- The plotted series ---


@dataclass
class Series:
    """Throughput and the longest stall over the execution, one point per look, at most
    ``bound`` points: beyond, neighbours merge in pairs (the mean throughput, the worst stall),
    so a long migration keeps its whole shape in a bounded row. The totals count every look."""

    bound: int = MAX_POINTS
    t: list[float] = field(default_factory=list)  # seconds since the watch began
    tps: list[float | None] = field(default_factory=list)  # None: not known yet
    stall_ms: list[float] = field(default_factory=list)
    peak_stall_ms: float = 0.0
    stalled_seconds: float = 0.0
    seconds: float = 0.0
    looks: int = 0
    _tps_sum: float = 0.0
    _tps_n: int = 0
    tps_min: float | None = None

    def add(self, t: float, tps: float | None, stall_ms: float) -> None:
        """One point: the throughput at ``t`` and the worst stall seen since the last point."""
        self.seconds = max(self.seconds, t)
        self.peak_stall_ms = max(self.peak_stall_ms, stall_ms)
        if tps is not None:
            self._tps_sum += tps
            self._tps_n += 1
            self.tps_min = tps if self.tps_min is None else min(self.tps_min, tps)
        self.t.append(round(t, 2))
        self.tps.append(round(tps, 1) if tps is not None else None)
        self.stall_ms.append(round(stall_ms, 1))
        if len(self.t) > self.bound:
            self._halve()

    def look(self, dt: float, stall_ms: float) -> None:
        """One look, ``dt`` seconds after the one before, saw a wait of ``stall_ms``: the part
        of ``dt`` it covers was stalled (when the wait is one the application feels)."""
        self.looks += 1
        self.peak_stall_ms = max(self.peak_stall_ms, stall_ms)
        if stall_ms >= STALL_MS:
            self.stalled_seconds += min(dt, stall_ms / 1000)

    def _halve(self) -> None:
        t, tps, stall = [], [], []
        for i in range(0, len(self.t), 2):
            pair = slice(i, i + 2)
            known = [v for v in self.tps[pair] if v is not None]
            t.append(self.t[i])
            tps.append(round(sum(known) / len(known), 1) if known else None)
            stall.append(max(self.stall_ms[pair]))
        self.t, self.tps, self.stall_ms = t, tps, stall

    @property
    def tps_mean(self) -> float | None:
        return round(self._tps_sum / self._tps_n, 1) if self._tps_n else None

    def summary(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 1),
            "looks": self.looks,
            "peak_stall_ms": round(self.peak_stall_ms, 1),
            "stalled_seconds": round(self.stalled_seconds, 1),
            "stall_threshold_ms": STALL_MS,
            "tps_mean": self.tps_mean,
            "tps_min": round(self.tps_min, 1) if self.tps_min is not None else None,
        }

    def to_json(self) -> dict[str, Any]:
        return {"t": self.t, "tps": self.tps, "stall_ms": self.stall_ms, **self.summary()}


# --- Statements of the revision under way (what an autocommit block committed) ---


@dataclass
class _Statement:
    sql: str
    started: float  # time.time()
    autocommit: bool  # ran outside the revision's transaction (seen, or CONCURRENTLY)


def _effectless(sql: str) -> bool:
    return sql.lstrip().upper().startswith(("SELECT", "SHOW"))


def committed_by_autocommit(
    statements: list[_Statement], running: str | None
) -> tuple[list[str], list[str]]:
    """What of a revision that did not finish stays: every statement up to its last one that
    ran outside the transaction (an autocommit block commits what came before it, and each
    statement in it), but the one that was running (cancelled); and the statements after
    that, which rolled back unless they too ran in the block. Statements that change nothing
    (SELECT, SHOW) are left out. ([], []) without an autocommit block."""
    last = max((i for i, s in enumerate(statements) if s.autocommit), default=None)
    if last is None:
        return [], []
    done = statements[: last + 1]
    if running is not None and done and done[-1].sql == running:
        done = done[:-1]
    after = statements[last + 1 :]
    return (
        [s.sql for s in done if not _effectless(s.sql)],
        [s.sql for s in after if not _effectless(s.sql) and s.sql != running],
    )


# --- The abort's record ---


@dataclass
class Abort:
    """What a safe abort did and found, for the step's outcome and the audit trail."""

    by: str
    reason: str
    grace_seconds: float
    requested_at: str
    seen_at: str
    revision: str = ""  # the revision under way ("" between revisions)
    phase: str = ""  # migrate()'s phase when the request was seen
    statement: str = ""  # the statement running then
    backend_pid: int | None = None
    cancelled_at: str | None = None
    terminated_at: str | None = None
    session_after: str = ""  # gone | idle (outside a transaction) | STILL IN A TRANSACTION
    version_before: str | None = None  # alembic_version before the revision began
    version_now: str | None = None  # and once it stopped
    committed: list[str] = field(default_factory=list)  # by an autocommit block before the end
    rolled_back_after_block: list[str] = field(default_factory=list)
    invalid_indexes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def rolled_back(self) -> bool:
        """The revision's transaction is gone and the version table did not move."""
        return (
            self.session_after in ("gone", "idle")
            and self.version_now is not None
            and self.version_now == self.version_before
        )

    def sentence(self) -> str:
        """The outcome in words: what stopped, how, and where the database is."""
        at = "unknown" if self.version_now is None else self.version_now or "(no revision)"
        who = f"Aborted by {self.by}: {self.reason}."
        if not self.revision:
            return f"{who} It stopped between revisions; the database is at {at}."
        if not (self.cancelled_at or self.terminated_at) and self.phase not in IN_REVISION:
            return (
                f"{who} Nothing of {self.revision} had run (it was {self.phase or 'starting'}); "
                f"the database is at {at}."
            )
        how = []
        if self.cancelled_at:
            how.append(f"its statement was cancelled (pid {self.backend_pid})")
        if self.terminated_at:
            how.append(f"its session was ended after the {self.grace_seconds:g} s grace")
        if not how:
            how.append(f"it was {self.phase or 'not yet started'}, nothing was running")
        parts = [f"{who} {self.revision} was stopped: {', '.join(how)}."]
        if self.rolled_back:
            parts.append(
                f"Rolled back: the session is {self.session_after} and the version table "
                f"still says {at}, as before {self.revision} began."
            )
        elif self.version_now is not None and self.version_now != self.version_before:
            parts.append(
                f"The version table says {at} (it said {self.version_before or '(none)'} before "
                f"{self.revision} began): {self.revision} committed before the abort reached it."
            )
        else:
            parts.append(f"The rollback could not be confirmed; the database is at {at}.")
        if self.committed:
            parts.append(
                f"Committed by its autocommit block and kept: {'; '.join(self.committed)}."
            )
        if self.rolled_back_after_block:
            parts.append(
                "Rolled back unless they ran inside the block: "
                + "; ".join(self.rolled_back_after_block)
                + "."
            )
        if self.invalid_indexes:
            parts.append(f"INVALID indexes left: {', '.join(self.invalid_indexes)}.")
        parts.extend(self.problems)
        return " ".join(parts)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["rolled_back"] = self.rolled_back
        data["database_at"] = self.version_now
        return data


# --- The watcher ---


def _connect(db: ManagedDatabase) -> pg.Connection:
    return pg.connect(
        db.dsn,
        credentials.password(db),
        timeout=settings.RUNWAY_CONNECT_TIMEOUT,
        application_name="runway watch",
    )


class Watcher:
    """Use as a context manager around migrate(), handing it :meth:`on_progress`,
    :meth:`should_stop` and :meth:`before_statement`::

        with watch.Watcher(db, channel, log=log) as watcher:
            steps = execution.migrate(db, pending, on_progress=watcher.on_progress,
                                      should_stop=watcher.should_stop,
                                      before_statement=watcher.before_statement)
        watcher.abort_report  # an Abort when one was asked for

    The watcher never fails the migration: a look that fails is logged once and tried again."""

    def __init__(
        self,
        db: ManagedDatabase,
        channel: Channel,
        *,
        log: Callable[[str], None] = lambda line: None,
        every: float | None = None,
        connect: Callable[[ManagedDatabase], pg.Connection] = _connect,
    ) -> None:
        self.db = db
        self.channel = channel
        self.log = log
        self.every = every if every is not None else EVERY
        self._connect = connect
        self.series = Series()
        self.abort_report: Abort | None = None
        self._conn: pg.Connection | None = None
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        self._statements: dict[str, list[_Statement]] = {}
        self._versions: dict[str, str | None] = {}  # alembic_version before each revision
        self._start_version: str | None = None
        self._stopping = threading.Event()
        self._done = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()
        self._last_look = 0.0
        self._last_point = 0.0
        self._polls = 0  # guarded execution's looks at pg_locks (one commit each), as reported
        self._last_look_t = 0.0
        self._worst_since_point = 0.0
        self._history: collections.deque[tuple[float, int, int]] = collections.deque()
        self._looks = 0
        self._last_sample: pg.WatchSample | None = None
        self._commits_seen = 0  # revisions committed (each one commit that is Runway's own)
        self._complained = False
        self._lock_session: dict[str, Any] | None = None
        self._backend: dict[str, Any] | None = None  # pid and start of the migrating session
        self._stop_state: dict[str, Any] = {}

    # --- migrate()'s hooks (called from the migrating thread) ---

    def on_progress(self, progress: Progress) -> None:
        with self._lock:
            previous = self._progress
            self._progress = progress
            self._polls += _polls_before(previous, progress)
            self._commits_seen = sum(1 for t in progress.timings if t.get("ok"))
            if progress.phase == "attempt" and (
                previous is None
                or (previous.revision, previous.attempt, previous.phase)
                != (progress.revision, progress.attempt, "attempt")
            ):
                # A new attempt runs the revision from its start: only its own statements count.
                self._statements[progress.revision] = []
        if previous is None or (previous.revision, previous.phase, previous.statement) != (
            progress.revision,
            progress.phase,
            progress.statement,
        ):
            self._wake.set()

    def should_stop(self) -> bool:
        return self._stopping.is_set()

    def before_statement(self, statement: online.Statement) -> None:
        autocommit = online.is_concurrently(statement.sql)
        with self._lock:
            self._statements.setdefault(statement.revision, []).append(
                _Statement(statement.sql, time.time(), autocommit)
            )

    # --- the thread ---

    def __enter__(self) -> Watcher:
        try:
            self._conn = self._connect(self.db)
            self._start_version = pg.alembic_revision(self._conn)
        except pg.Error as exc:
            self._complain(f"the watcher cannot connect ({exc}); no live progress")
        self._thread = threading.Thread(target=self._run, daemon=True, name="migration-watch")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()

    def finish(self) -> None:
        """migrate() returned: confirm an abort's rollback, take a last look, stop."""
        self._done.set()
        self._wake.set()
        if self._thread is not None:
            grace = self.abort_report.grace_seconds if self.abort_report else DEFAULT_GRACE
            self._thread.join(timeout=grace + SETTLE_SECONDS + 30)
        try:
            if self.abort_report is not None:
                self._confirm(self.abort_report)
            self._look()
        except pg.Error as exc:
            self._complain(f"the watcher's last look failed: {exc}")
        finally:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None

    def _run(self) -> None:
        from django.db import connection

        try:
            while not self._done.is_set():
                wait = max(SOONEST - (time.monotonic() - self._last_look), 0.0)
                if wait:
                    time.sleep(wait)
                try:
                    self._look()
                    request = self.channel.stop_request()
                    if request is not None and not self._stopping.is_set():
                        self.abort(request)
                except Exception as exc:  # noqa: BLE001 - the watcher never fails the migration
                    self._complain(f"the watcher's look failed ({type(exc).__name__}: {exc})")
                    self._reconnect()
                self._wake.wait(self.every)
                self._wake.clear()
        finally:
            connection.close()  # this thread's connection to Runway's own database

    def _complain(self, text: str) -> None:
        logger.warning("%s", text)
        if not self._complained:
            self._complained = True
            self.log(text)

    def _reconnect(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None
        with contextlib.suppress(pg.Error):
            self._conn = self._connect(self.db)

    # --- one look ---

    def _look(self) -> None:
        if self._conn is None:
            self._reconnect()
            if self._conn is None:
                return
        with self._lock:
            progress = self._progress
        pid = progress.backend_pid if progress is not None else None
        sample = pg.watch_sample(self._conn, pid)
        self._last_look = time.monotonic()
        self._last_sample = sample
        with self._lock:  # what the migration says now (its statement may have moved on)
            if self._progress is not None and self._progress.backend_pid == pid:
                progress = self._progress
        if progress is not None:
            self._remember(progress, sample)
        self._plot(sample)
        self.channel.publish(self.snapshot(progress, sample))

    def _remember(self, progress: Progress, sample: pg.WatchSample) -> None:
        """What recovery and an abort need later: the migrating session's identity, the lock
        session's, and the version table before each revision."""
        assert self._conn is not None
        backend = sample.backend
        if backend is not None:
            self._backend = {"pid": backend.pid, "backend_start": backend.backend_start}
            if backend.state == "active" and _own_transaction(backend):
                # A statement that is its own transaction runs in an autocommit block.
                self._mark_autocommit(progress.revision, progress.statement)
        if self._lock_session is None:
            holder = pg.migration_lock_holder(self._conn)
            if holder is not None:
                self._lock_session = {"pid": holder["pid"], "backend_start": holder["since"]}
        if progress.revision and progress.revision not in self._versions:
            # What the revision starts from: a plain read never waits for its transaction, and
            # sees none of it until it commits.
            self._versions[progress.revision] = pg.alembic_revision(self._conn)

    def _mark_autocommit(self, revision: str, sql: str) -> None:
        with self._lock:
            for s in reversed(self._statements.get(revision, [])):
                if s.sql == sql:
                    s.autocommit = True
                    break

    def _plot(self, sample: pg.WatchSample) -> None:
        traffic = sample.traffic
        t = time.monotonic() - self._started
        self._looks += 1
        self.series.look(t - self._last_look_t, traffic.longest_lock_wait_ms)
        self._last_look_t = t
        self._worst_since_point = max(self._worst_since_point, traffic.longest_lock_wait_ms)
        if self._history and t - self._last_point < PLOT_STEP * 0.9:
            return  # shown and counted, not plotted
        # Runway's own commits, each counted: each look of the watcher is one transaction, each
        # revision that committed one more, and each look of guarded execution at pg_locks.
        with self._lock:
            own = self._looks + self._commits_seen + self._polls
        self._history.append((traffic.at, traffic.xact_commit, own))
        while len(self._history) > 2 and self._history[1][0] <= traffic.at - RATE_WINDOW:
            self._history.popleft()
        at0, commits0, own0 = self._history[0]
        tps: float | None = None
        if traffic.at - at0 >= min(RATE_WINDOW, 1.0) * 0.9:
            tps = max(0.0, (traffic.xact_commit - commits0 - (own - own0)) / (traffic.at - at0))
        self._last_point = t
        self.series.add(t, tps, self._worst_since_point)
        self._worst_since_point = 0.0

    # --- the snapshot the page shows ---

    def snapshot(self, progress: Progress | None, sample: pg.WatchSample | None) -> dict[str, Any]:
        data: dict[str, Any] = {"updated_at": _now(), "started_version": self._start_version}
        if progress is not None:
            data.update(
                revision=progress.revision,
                index=progress.index,
                total=progress.total,
                phase=progress.phase,
                attempt=progress.attempt,
                lock_timeout_ms=progress.lock_timeout_ms,
                statement=progress.statement,
                statement_started_at=_iso(progress.statement_started),
                timings=list(progress.timings),
                waiting_for=list(progress.blockers),  # conflicting sessions, before an attempt
            )
        if self._backend is not None:
            data["backend"] = dict(self._backend)
        if self._lock_session is not None:
            data["lock_session"] = dict(self._lock_session)
        if sample is not None:
            backend = sample.backend
            if backend is not None:
                data["backend"] = {
                    "pid": backend.pid,
                    "backend_start": backend.backend_start,
                    "state": backend.state,
                    "wait_event_type": backend.wait_event_type,
                    "wait_event": backend.wait_event,
                    "query": backend.query,
                    "query_start": backend.query_start,
                    "query_seconds": backend.query_seconds,
                    "xact_start": backend.xact_start,
                }
            data["blocked_by"] = [dataclasses.asdict(b) for b in sample.blockers]
            if sample.index_build is not None:
                data["index_build"] = dataclasses.asdict(sample.index_build)
            data["traffic"] = {
                "tps": self.series.tps[-1] if self.series.tps else None,
                "longest_lock_wait_ms": round(sample.traffic.longest_lock_wait_ms, 1),
                "waiting_sessions": sample.traffic.waiting_sessions,
            }
        data["series"] = self.series.to_json()
        if self._stop_state:
            data["stopping"] = dict(self._stop_state)
        return data

    def report(self) -> dict[str, Any]:
        """For the step's evidence: the series and its summary, and the per-revision
        timings."""
        with self._lock:
            timings = list(self._progress.timings) if self._progress is not None else []
        return {"series": self.series.to_json(), "timings": timings}

    # --- the safe abort ---

    def abort(self, request: StopRequest) -> Abort:
        """Stop the migration safely (from the watcher's thread, or any other): nothing more
        starts, the statement is cancelled, the session ended after the grace period if it is
        still in the revision's transaction. The rollback is confirmed in :meth:`finish`."""
        self._stopping.set()
        with self._lock:
            progress = self._progress
        report = Abort(
            by=request.by,
            reason=request.reason,
            grace_seconds=request.grace_seconds,
            requested_at=request.requested_at,
            seen_at=_now(),
        )
        self.abort_report = report
        self.log(
            f"abort requested by {request.by}: {request.reason} "
            f"(grace {request.grace_seconds:g} s); nothing more starts"
        )
        if progress is None or not progress.revision:
            self._stop_state = {"at": report.seen_at, "step": "nothing had started"}
            return report
        report.revision, report.phase = progress.revision, progress.phase
        report.statement = progress.statement
        report.backend_pid = pid = progress.backend_pid
        self._stop_state = {"at": report.seen_at, "revision": progress.revision}
        if pid is None:
            if progress.phase in IN_REVISION:
                report.problems.append(
                    "The migrating session is not known here (the project's own alembic): it "
                    "stops when its attempt ends."
                )
            return report
        if self._conn is None:
            self._reconnect()
        if self._conn is None:
            report.problems.append(
                f"Runway could not connect to cancel pid {pid}: {progress.revision} runs on "
                "until its statement ends, and nothing starts after it."
            )
            return report
        session = pg.active_session(self._conn, pid)
        if session is None or not session.in_transaction:
            self.log(f"  {progress.revision}: no statement running (phase {progress.phase})")
            return report
        transaction = session.xact_start  # the revision's, as the cancel finds it
        if pg.cancel_backend(self._conn, pid):
            report.cancelled_at = _now()
            self._stop_state.update(cancelled_at=report.cancelled_at, pid=pid)
            self.log(f"  cancelled the statement of pid {pid}: {session.query or '?'}")
        start = session.backend_start
        deadline = time.monotonic() + request.grace_seconds
        while True:
            now = pg.active_session(self._conn, pid, start)
            # Still the transaction the cancel found (a clean-up after it is a new one).
            stuck = now is not None and now.in_transaction and now.xact_start == transaction
            if not stuck or time.monotonic() >= deadline:
                break
            self._stop_state["terminate_in_s"] = round(deadline - time.monotonic(), 1)
            with contextlib.suppress(Exception):
                self._look()
            time.sleep(0.2)
        if stuck and pg.terminate_backend(self._conn, pid):
            report.terminated_at = _now()
            self._stop_state.update(terminated_at=report.terminated_at)
            self.log(
                f"  pid {pid} still in {progress.revision}'s transaction after "
                f"{request.grace_seconds:g} s: ended its session"
            )
        return report

    def _confirm(self, report: Abort) -> None:
        """migrate() returned: the session is gone or idle outside a transaction, the version
        table where it was before the revision began, and what an autocommit block kept."""
        if self._conn is None:
            self._reconnect()
        if self._conn is None:
            report.problems.append("Runway could not connect to confirm the rollback.")
            return
        conn = self._conn
        if report.backend_pid is not None:
            found = _settled(conn, report.backend_pid, self._backend)
            if found is None:
                report.session_after = "gone"
            elif not found.in_transaction:
                report.session_after = "idle"
            else:
                report.session_after = "STILL IN A TRANSACTION"
                report.problems.append(
                    f"pid {report.backend_pid} is still in a transaction ({found.state}): "
                    "end it before resuming."
                )
        else:
            report.session_after = "gone"  # migrate() closed its connection when it returned
        report.version_now = pg.alembic_revision(conn)
        report.version_before = (
            self._versions.get(report.revision, self._start_version)
            if report.revision
            else report.version_now
        )
        if report.revision:
            with self._lock:
                statements = list(self._statements.get(report.revision, []))
            running = report.statement or None
            report.committed, report.rolled_back_after_block = committed_by_autocommit(
                statements, running
            )
        report.invalid_indexes = pg.all_invalid_indexes(conn)
        self._stop_state.update(confirmed_at=_now(), database_at=report.version_now)


def _polls_before(previous: Progress | None, progress: Progress) -> int:
    """How many looks at pg_locks (guard's polls, one autocommit transaction each) guarded
    execution made just before reporting ``progress``: it reports "waiting" after each poll that
    found a conflicting session, "backoff" after the poll that follows a failed attempt, and
    starts an attempt after the poll that found the way clear (or after its wait ran out, one
    poll too many counted then). migrate()'s own "waiting" before a revision (attempt 0) follows
    no poll, nor do the reports within an attempt (a statement started or ended, the pid)."""
    if progress.attempt < 1:
        return 0
    if progress.phase == "waiting":
        return 1
    if progress.phase in ("backoff", "attempt"):
        entered = previous is None or (previous.phase, previous.attempt) != (
            progress.phase,
            progress.attempt,
        )
        return 1 if entered else 0
    return 0


def _own_transaction(session: pg.ActiveSession) -> bool:
    """The statement running is its own transaction (started with it, or after it, as CREATE
    INDEX CONCURRENTLY's own transactions do): it runs outside any transaction block."""
    if not session.xact_start or not session.query_start:
        return False
    return datetime.fromisoformat(session.xact_start) >= datetime.fromisoformat(session.query_start)


def _settled(
    conn: pg.Connection, pid: int, identity: dict[str, Any] | None
) -> pg.ActiveSession | None:
    """The session after a stop, once it has left its transaction or the list (up to
    SETTLE_SECONDS): None when it is gone."""
    start = identity.get("backend_start") if identity and identity.get("pid") == pid else None
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        found = pg.active_session(conn, pid, start)
        if found is None or not found.in_transaction or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


# --- After a worker died mid-migration ---


@dataclass
class Recovery:
    """What the clean-up after a dead worker found and did."""

    backend_pid: int | None = None
    backend: str = ""  # gone | ended by Runway | STILL THERE | unknown
    lock: str = ""  # free | held by ... | freed by Runway
    database_at: str | None = None
    revision: str = ""  # the revision that was under way
    invalid_indexes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.database_at is not None

    def sentence(self) -> str:
        parts = []
        if self.backend_pid is not None:
            parts.append(f"Its migrating session (pid {self.backend_pid}) is {self.backend}")
        else:
            parts.append("Its migrating session was not recorded")
        parts.append(f"the migration lock is {self.lock}")
        text = "; ".join(parts) + "."
        if self.database_at is not None:
            under = f" ({self.revision} was rolled back)" if self.revision else ""
            text += f" The database is at {self.database_at or '(no revision)'}{under}."
        if self.invalid_indexes:
            text += f" INVALID indexes left: {', '.join(self.invalid_indexes)}."
        if self.problems:
            text += " " + " ".join(self.problems)
        return text

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ok": self.ok}


def recover(
    db: ManagedDatabase,
    last: dict[str, Any],
    *,
    grace: float = RECOVERY_GRACE,
    connect: Callable[[ManagedDatabase], pg.Connection] = _connect,
) -> Recovery:
    """After the worker running a migration died: ``last`` is the watcher's last snapshot. The
    migrating session it recorded must be gone (PostgreSQL rolls its transaction back when it
    goes); one still there after ``grace`` seconds is ended. So is the dead worker's lock
    session; a lock held by any other session is another migration's, left alone."""
    found = Recovery(revision=str(last.get("revision") or ""))
    if last.get("phase") in ("done", "failed", "stopped"):
        found.revision = ""
    try:
        conn = connect(db)
    except pg.Error as exc:
        found.problems.append(f"Runway could not connect to check the database: {exc}")
        return found
    with conn:
        backend = last.get("backend") or {}
        if backend.get("pid"):
            found.backend_pid = int(backend["pid"])
            found.backend = _end_when_stuck(
                conn, found.backend_pid, backend.get("backend_start"), grace
            )
        else:
            found.backend = "unknown"
            if last.get("phase") in IN_REVISION:
                found.problems.append(
                    "Runway does not know the migrating session (the project's own alembic "
                    "runs in a process of its own, which may outlive the worker): make sure no "
                    "session of it is still in pg_stat_activity before resuming."
                )
        found.lock = _free_lock(conn, last.get("lock_session") or {}, grace)
        if found.backend == "STILL THERE":
            found.problems.append(
                f"pid {found.backend_pid} could not be ended: end it before resuming."
            )
        if found.lock.startswith("held"):
            found.problems.append(f"The migration lock is {found.lock}.")
        found.database_at = pg.alembic_revision(conn)
        if found.revision and found.revision in found.database_at.split(","):
            found.revision = ""  # it had committed before the worker died
        found.invalid_indexes = pg.all_invalid_indexes(conn)
    return found


def _end_when_stuck(conn: pg.Connection, pid: int, start: str | None, grace: float) -> str:
    for _ in _until(grace):
        if pg.active_session(conn, pid, start) is None:
            return "gone"
    if pg.active_session(conn, pid, start) is None:
        return "gone"
    pg.terminate_backend(conn, pid)
    for _ in _until(SETTLE_SECONDS):
        if pg.active_session(conn, pid, start) is None:
            return f"ended by Runway after {grace:g} s"
    return "STILL THERE"


def _free_lock(conn: pg.Connection, recorded: dict[str, Any], grace: float) -> str:
    holder = pg.migration_lock_holder(conn)
    if holder is None:
        return "free"
    pid, start = recorded.get("pid"), recorded.get("backend_start")
    if pid != holder["pid"] or start is None:
        who = holder["application"] or holder["user"]
        return f"held by pid {holder['pid']} ({who}), another migration: left alone"
    state = _end_when_stuck(conn, int(pid), str(start), grace)
    if state == "gone":
        return "free"
    if state.startswith("ended"):
        return f"free (Runway ended the dead worker's lock session, pid {pid})"
    return f"held by pid {pid}, the dead worker's, which could not be ended"


def _until(seconds: float, step: float = 0.25) -> Iterator[None]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        yield
        time.sleep(step)
