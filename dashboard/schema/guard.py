"""Guarded execution of one revision: attempts that never queue.

An ``ALTER TABLE`` that waits for its lock makes every later query on the table wait behind it:
a lock timeout caps each stall, not their number. So before each attempt Runway waits, *without
sending a lock request*, until no other session holds or waits for a lock that conflicts with
what the revision needs on the tables it touches (:class:`Needs`, from the risk analysis; the
matrix is PostgreSQL's, :data:`CONFLICTS`). The wait polls ``pg_locks`` on a separate autocommit
connection that holds no lock on those tables. Then it attempts with a short ``lock_timeout``
(escalating, GitLab-style, up to the database's ceiling), and when the lock is not available
(55P03) or a deadlock is detected (40P01), the revision's transaction is rolled back, Runway
sleeps with jittered backoff and tries again, up to the policy's attempts; then the step fails
naming the sessions that blocked it.

Nothing here talks to PostgreSQL but through :mod:`dashboard.lib.pg`; the runner (Runway's
environment or the project's alembic) is given to :func:`run_revision` by
:mod:`.execution`.

Choices:

- A session whose conflicting lock is *granted* and whose transaction is younger than
  ``Policy.short_transaction_ms`` is the application's ordinary short work: it is not waited
  for (under steady traffic some writer always holds a ROW EXCLUSIVE lock for a few ms); if it
  turns out long, the attempt's short lock_timeout caps the stall. Waiting requests always
  count (a queued request ahead of ours would make ours queue too), and so do sessions whose
  age the role may not read.
- When the wait runs out (``lock_wait_seconds``) Runway attempts anyway: the stall is capped by
  the attempt's lock_timeout, and the blockers are named when the attempts run out.
- CONCURRENTLY statements never run inside the revision's transaction: such a revision is
  refused before anything runs (:func:`refusals`), naming ``autocommit_block()``. Committing
  what came before on Runway's own initiative would split a revision its author wrote as one
  transaction. In an autocommit block they run without a lock timeout, bounded by the
  statement timeout (their waits do not queue the application, and a lock timeout in a build's
  last wait would throw the build away); see :mod:`dashboard.lib.alembic.online`. In the
  project's mode Runway cannot tell them apart: they get the attempt's short lock timeout.
- An INVALID index of a name the revision builds CONCURRENTLY (or the ``_ccnew``/``_ccold`` of
  a REINDEX CONCURRENTLY) is dropped with ``DROP INDEX CONCURRENTLY IF EXISTS`` before each
  attempt (a leftover of the previous attempt, or of a killed worker), and tried once more,
  briefly, after a final failure.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pglast
from pglast import ast
from pglast.enums import ObjectType, ReindexObjectType

from dashboard.databases.models import ManagedDatabase
from dashboard.lib import pg
from dashboard.lib.alembic.online import is_concurrently
from dashboard.schema import risk, rules
from dashboard.schema.runners import RevisionFailed

# --- PostgreSQL's table lock modes and which conflict ---

# The rules' names (LOCK TABLE's words) -> pg_locks' names.
MODES = {
    "ACCESS SHARE": "AccessShareLock",
    "ROW SHARE": "RowShareLock",
    "ROW EXCLUSIVE": "RowExclusiveLock",
    "SHARE UPDATE EXCLUSIVE": "ShareUpdateExclusiveLock",
    "SHARE": "ShareLock",
    "SHARE ROW EXCLUSIVE": "ShareRowExclusiveLock",
    "EXCLUSIVE": "ExclusiveLock",
    "ACCESS EXCLUSIVE": "AccessExclusiveLock",
}
_NAMES = {v: k for k, v in MODES.items()}

# The conflict table of "Explicit Locking" in PostgreSQL's manual (symmetric).
_A, _RS, _RE, _SUE, _S, _SRE, _E, _AE = MODES.values()
CONFLICTS: dict[str, frozenset[str]] = {
    _A: frozenset({_AE}),
    _RS: frozenset({_E, _AE}),
    _RE: frozenset({_S, _SRE, _E, _AE}),
    _SUE: frozenset({_SUE, _S, _SRE, _E, _AE}),
    _S: frozenset({_RE, _SUE, _SRE, _E, _AE}),
    _SRE: frozenset({_RE, _SUE, _S, _SRE, _E, _AE}),
    _E: frozenset({_RS, _RE, _SUE, _S, _SRE, _E, _AE}),
    _AE: frozenset({_A, _RS, _RE, _SUE, _S, _SRE, _E, _AE}),
}


def conflicts(wanted: str, other: str) -> bool:
    """Whether a lock in mode ``wanted`` must wait for one in mode ``other`` on the same table
    (pg_locks' names; SIReadLock and other kinds conflict with none of these)."""
    return other in CONFLICTS.get(wanted, frozenset())


def mode_name(mode: str) -> str:
    """ "ACCESS EXCLUSIVE" for AccessExclusiveLock (as people write it)."""
    return _NAMES.get(mode, mode)


# --- The policy ---

ESCALATION = (0.2, 0.4, 0.6, 1.0)  # of the ceiling, attempt by attempt (then the ceiling)
RETRIED = {"55P03": "lock not available", "40P01": "deadlock detected"}


@dataclass(frozen=True)
class Policy:
    """How one database's revisions are attempted (the fields of its ManagedDatabase, plus
    the fixed pacing)."""

    lock_timeout_ms: int = 500  # the ceiling of the escalation
    lock_attempts: int = 30
    lock_wait_seconds: float = 10
    statement_timeout_seconds: float = 300
    revision_statement_timeouts: Mapping[str, float] = field(default_factory=dict)
    connection_check_interval_ms: int = 1000  # PostgreSQL 14+: a gone client is noticed
    short_transaction_ms: int = 200
    poll_seconds: float = 0.1
    backoff_first_seconds: float = 0.2
    backoff_max_seconds: float = 5.0

    @classmethod
    def of(cls, db: ManagedDatabase) -> Policy:
        return cls(
            lock_timeout_ms=db.lock_timeout_ms,
            lock_attempts=db.lock_attempts,
            lock_wait_seconds=db.lock_wait_seconds,
            statement_timeout_seconds=db.statement_timeout_seconds,
            revision_statement_timeouts=dict(db.revision_statement_timeouts or {}),
        )

    def statement_timeout_for(self, revision: str) -> float:
        return float(self.revision_statement_timeouts.get(revision, self.statement_timeout_seconds))

    def lock_timeout_for(self, attempt: int) -> int:
        """The lock timeout of attempt ``attempt`` (1-based), in ms: 100, 200, 300, 500, 500, …
        for a 500 ms ceiling."""
        share = ESCALATION[min(attempt, len(ESCALATION)) - 1]
        return max(1, min(self.lock_timeout_ms, round(self.lock_timeout_ms * share)))

    def backoff_seconds(self, failures: int, jitter: float) -> float:
        """The sleep after the ``failures``-th failed attempt: doubling from
        ``backoff_first_seconds`` up to ``backoff_max_seconds``, times 0.5..1.5 (``jitter`` in
        0..1) so that retries of several runs do not fall into step."""
        base = min(self.backoff_max_seconds, self.backoff_first_seconds * 2 ** (failures - 1))
        return base * (0.5 + jitter)

    def settings_for(self, revision: str, attempt: int, *, check_interval: bool) -> dict[str, str]:
        """The session settings of one attempt (plain SET in Runway's environment, PGOPTIONS
        for the project's alembic)."""
        settings = {
            "lock_timeout": f"{self.lock_timeout_for(attempt)}ms",
            "statement_timeout": f"{round(self.statement_timeout_for(revision) * 1000)}ms",
        }
        if check_interval and self.connection_check_interval_ms:
            settings["client_connection_check_interval"] = f"{self.connection_check_interval_ms}ms"
        return settings

    def server_options(self) -> str:
        """The connection's own options (before the first SET): the ceiling and the default
        statement timeout."""
        return (
            f"-c lock_timeout={self.lock_timeout_ms}ms "
            f"-c statement_timeout={round(self.statement_timeout_seconds * 1000)}ms"
        )

    def describe(self) -> str:
        steps = " -> ".join(
            dict.fromkeys(str(self.lock_timeout_for(i)) for i in range(1, len(ESCALATION) + 1))
        )
        text = (
            f"lock_timeout {steps} ms (the ceiling) attempt by attempt, up to "
            f"{self.lock_attempts} attempts per revision, each after waiting up to "
            f"{_seconds(self.lock_wait_seconds)} for conflicting sessions (without queueing); "
            f"statement_timeout {_seconds(self.statement_timeout_seconds)}"
        )
        overrides = sorted(self.revision_statement_timeouts.items())
        if overrides:
            text += " (" + ", ".join(f"{rev}: {_seconds(s)}" for rev, s in overrides) + ")"
        return text


def _seconds(value: float) -> str:
    return f"{value:g} s"


# --- What a revision needs ---


@dataclass
class Needs:
    """What one revision locks (table or index -> pg_locks modes), as far as the analysis
    knows, and what it builds CONCURRENTLY (for the INVALID leftovers)."""

    revision: str
    known: bool = True
    why_unknown: str = ""
    locks: dict[str, set[str]] = field(default_factory=dict)
    indexes: dict[str, set[str]] = field(default_factory=dict)  # table -> index names built
    reindexed: set[str] = field(default_factory=set)  # tables whose indexes are rebuilt
    reindexed_indexes: set[str] = field(default_factory=set)  # single indexes rebuilt
    refused: list[str] = field(default_factory=list)  # CONCURRENTLY inside the transaction

    def take(self, name: str, mode: str) -> None:
        if name and mode:
            self.locks.setdefault(name, set()).add(MODES.get(mode, mode))

    @property
    def tables(self) -> list[str]:
        return sorted(self.locks)

    def describe(self) -> str:
        if not self.known:
            return f"its locks are unknown ({self.why_unknown})"
        if not self.locks:
            return "it locks no existing table"
        return ", ".join(
            f"{name} ({', '.join(sorted(mode_name(m) for m in modes))})"
            for name, modes in sorted(self.locks.items())
        )

    def observe(self, statement: str) -> None:
        """A statement the revision sent (Runway's environment): what it builds CONCURRENTLY
        counts too (the analysis may not have known it)."""
        if is_concurrently(statement):
            _built(self, statement)


def needs_of(report: risk.RevisionReport | None, revision: str, direction: str) -> Needs:
    """The revision's needs from its risk report: its upgrade's statements, or its
    downgrade's (analysed here from the report's rendered downgrade SQL)."""
    needs = Needs(revision)
    if report is None:
        return Needs(revision, known=False, why_unknown="no analysis")
    if direction == "upgrade":
        if not report.previewable:
            return Needs(revision, known=False, why_unknown=_first(report.error) or "not rendered")
        statements: Iterable[Any] = report.statements
    else:
        if report.downgrade_error:
            return Needs(revision, known=False, why_unknown=_first(report.downgrade_error))
        statements = rules.analyse_sql(report.downgrade_sql, revision=revision).statements
    for st in statements:
        for table, mode in st.locks.items():
            needs.take(table, mode)
        if is_concurrently(st.sql):
            if st.in_transaction:
                needs.refused.append(" ".join(st.sql.split()))
            _built(needs, st.sql)
        else:
            _dropped_index(needs, st.sql)
    return needs


def _first(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _table(rv: Any) -> str:
    if rv is None or not getattr(rv, "relname", None):
        return ""
    if rv.schemaname and rv.schemaname != "public":
        return f"{rv.schemaname}.{rv.relname}"
    return str(rv.relname)


def _parsed(statement: str) -> list[Any]:
    try:
        return [raw.stmt for raw in pglast.parse_sql(statement)]
    except pglast.parser.ParseError:
        return []


def _built(needs: Needs, statement: str) -> None:
    for node in _parsed(statement):
        if isinstance(node, ast.IndexStmt) and node.concurrent and node.idxname:
            needs.indexes.setdefault(_table(node.relation), set()).add(str(node.idxname))
        elif isinstance(node, ast.ReindexStmt):
            if node.kind == ReindexObjectType.REINDEX_OBJECT_TABLE:
                needs.reindexed.add(_table(node.relation))
            elif node.kind == ReindexObjectType.REINDEX_OBJECT_INDEX:
                needs.reindexed_indexes.add(_table(node.relation))
        elif isinstance(node, ast.DropStmt) and node.removeType == ObjectType.OBJECT_INDEX:
            for obj in node.objects or ():
                needs.take(_dotted(obj), "SHARE UPDATE EXCLUSIVE")


def _dropped_index(needs: Needs, statement: str) -> None:
    """A plain DROP INDEX takes ACCESS EXCLUSIVE on the index itself: queries using it hold
    ACCESS SHARE on it (its table may be unknown to the analysis)."""
    if "DROP" not in statement.upper():
        return
    for node in _parsed(statement):
        if isinstance(node, ast.DropStmt) and node.removeType == ObjectType.OBJECT_INDEX:
            for obj in node.objects or ():
                needs.take(_dotted(obj), "ACCESS EXCLUSIVE")


def _dotted(items: Any) -> str:
    parts = [getattr(i, "sval", "") for i in items or ()]
    if len(parts) == 2 and parts[0] == "public":
        parts = parts[1:]
    return ".".join(p for p in parts if p)


def refusals(needs: Iterable[Needs]) -> list[str]:
    """Why these revisions may not run at all: a CONCURRENTLY statement inside the revision's
    transaction (PostgreSQL rejects it after what came before it ran)."""
    return [
        f"{n.revision} runs `{_short(sql, 120)}` inside its transaction, where PostgreSQL "
        "refuses CONCURRENTLY: wrap it in `with op.get_context().autocommit_block():` "
        "(e.g. op.create_index(..., postgresql_concurrently=True) inside that block)"
        for n in needs
        for sql in n.refused
    ]


# --- Who is in the way ---


def blocking(
    locks: Iterable[pg.RelationLock], needs: Needs, *, short_transaction_ms: float
) -> list[pg.RelationLock]:
    """The locks among ``locks`` that an attempt would queue behind: granted or waiting in a
    mode that conflicts with one the revision needs on that table, except a granted one of a
    transaction younger than ``short_transaction_ms`` (0: none excepted)."""
    found = []
    for lock in locks:
        wanted = needs.locks.get(lock.table, set())
        if not any(conflicts(mode, lock.mode) for mode in wanted):
            continue
        young = lock.xact_age_ms is not None and lock.xact_age_ms < short_transaction_ms
        if lock.granted and young and lock.pid is not None:
            continue
        found.append(lock)
    return found


def blocker_json(lock: pg.RelationLock) -> dict[str, Any]:
    """What the progress and the step's evidence show of one blocker."""
    return {
        "pid": lock.pid,
        "user": lock.user,
        "application": lock.application,
        "query": _short(lock.query or "", 120),
        "since": lock.xact_start or lock.state_change,
        "state": lock.state,
        "mode": mode_name(lock.mode),
        "table": lock.table,
        "granted": lock.granted,
        "backend_type": lock.backend_type,
    }


def describe_blockers(locks: Iterable[pg.RelationLock]) -> str:
    """One line per session: pid, user, application, what it holds or waits for, since when,
    its query (shortened)."""
    by_pid: dict[int | None, list[pg.RelationLock]] = {}
    for lock in locks:
        by_pid.setdefault(lock.pid, []).append(lock)
    parts = []
    for pid, held in by_pid.items():
        first = held[0]
        what = "; ".join(
            f"{'holds' if lock.granted else 'waits for'} {mode_name(lock.mode)} on {lock.table}"
            for lock in held
        )
        if pid is None:
            parts.append(f"a prepared transaction ({what})")
            continue
        if first.user is None and first.backend_type is None:
            parts.append(
                f"pid {pid} ({what}; a session Runway's role may not see: grant it "
                "pg_read_all_stats to name it)"
            )
            continue
        who = first.user or "?"
        app = first.application or (first.backend_type or "")
        since = first.xact_start or first.state_change or "?"
        state = f", {first.state}" if first.state else ""
        query = f": {_short(first.query or '', 120)}" if first.query else ""
        parts.append(
            f"pid {pid} (user {who}, application {app!r}{state}, in a transaction since "
            f"{since}; {what}){query}"
        )
    return "; ".join(parts)


def _short(text: str, limit: int) -> str:
    one = " ".join(text.split())
    return one if len(one) <= limit else one[: limit - 1] + "…"


# --- One revision, attempt by attempt ---


@dataclass
class Outcome:
    ok: bool
    attempts: int
    waited_seconds: float
    error: str = ""
    stopped: bool = False
    blockers: list[dict[str, Any]] = field(default_factory=list)


Phase = Callable[..., None]  # phase(name, attempt=, lock_timeout_ms=, blockers=)


@dataclass
class Revision:
    """Running one revision under ``policy``: the pieces :func:`run_revision` is handed."""

    revision: str
    needs: Needs
    policy: Policy
    watcher: pg.Connection  # autocommit, holds no lock on the tables
    attempt: Callable[[Mapping[str, str]], None]  # prepare and run; RevisionFailed
    own_pids: Callable[[], list[int]]  # Runway's migrating backend(s): never a blocker
    log: Callable[[str], None]
    phase: Phase
    should_stop: Callable[[], bool]
    check_interval: bool = False  # client_connection_check_interval exists (PostgreSQL 14+)
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    jitter: Callable[[], float] = random.random


def run_revision(r: Revision) -> Outcome:
    """Attempt ``r.revision`` until it applies, fails for a reason a retry cannot fix, the
    attempts run out, or ``r.should_stop()``. Never raises RevisionFailed."""
    policy = r.policy
    waited = 0.0
    seen: list[pg.RelationLock] = []  # the last blockers seen (for the message)
    if not r.needs.known:
        r.log(
            f"  {r.needs.describe()}: Runway cannot wait for its lock holders; each attempt "
            "still runs with the short lock_timeout"
        )
    for attempt in range(1, policy.lock_attempts + 1):
        lock_timeout = policy.lock_timeout_for(attempt)
        if r.should_stop():
            return _stopped(r, attempt - 1, waited, "asked to stop before the attempt", seen)
        try:
            _clean_up(r, attempt, lock_timeout)
        except RevisionFailed as exc:
            failure: RevisionFailed | None = exc
        else:
            failure = None
        if failure is None:
            found, seconds, stop = _wait(r, attempt, lock_timeout)
            waited += seconds
            if found:
                seen = found
            if stop:
                return _stopped(r, attempt - 1, waited, "asked to stop while waiting", seen)
            r.phase("attempt", attempt=attempt, lock_timeout_ms=lock_timeout, blockers=[])
            r.log(f"  attempt {attempt}/{policy.lock_attempts} with lock_timeout {lock_timeout} ms")
            try:
                r.attempt(policy.settings_for(r.revision, attempt, check_interval=r.check_interval))
            except RevisionFailed as exc:
                failure = exc
            else:
                return Outcome(True, attempt, round(waited, 3))
        assert failure is not None
        if r.should_stop():
            _clean_up_after(r)
            return _stopped(r, attempt, waited, f"during attempt {attempt}: {failure}", seen)
        reason = RETRIED.get(failure.sqlstate or "")
        if reason is None:
            _clean_up_after(r)
            return Outcome(False, attempt, round(waited, 3), str(failure))
        now = _blockers(r, short_transaction_ms=0)
        if now:
            seen = now
        if failure.partial:
            r.log(
                "  what its autocommit block did before the failure stays: the next attempt "
                "runs the revision from its start (write such statements IF NOT EXISTS)"
            )
        if attempt == policy.lock_attempts:
            _clean_up_after(r)
            who = describe_blockers(seen) if seen else _unnamed(r.needs)
            return Outcome(
                False,
                attempt,
                round(waited, 3),
                f"gave up after {attempt} attempts ({reason} within {lock_timeout} ms each "
                f"time; its locks: {r.needs.describe()}); blocked by {who}",
                blockers=[blocker_json(b) for b in seen],
            )
        pause = policy.backoff_seconds(attempt, r.jitter())
        shown = f"; blocked by {describe_blockers(now)}" if now else ""
        r.log(f"  attempt {attempt} failed ({reason}){shown}; next in {pause:.2f} s")
        r.phase(
            "backoff",
            attempt=attempt,
            lock_timeout_ms=lock_timeout,
            blockers=[blocker_json(b) for b in now],
        )
        if _sleep(r, pause):
            return _stopped(r, attempt, waited, "asked to stop between attempts", seen)
    raise AssertionError("unreachable: the last attempt returns")


def _unnamed(needs: Needs) -> str:
    if not needs.known:
        return "a session Runway could not name (the revision's tables are unknown)"
    return "a session that had finished when Runway looked"


def _stopped(
    r: Revision, attempts: int, waited: float, why: str, seen: list[pg.RelationLock]
) -> Outcome:
    r.phase("stopped", attempt=attempts, blockers=[blocker_json(b) for b in seen])
    return Outcome(False, attempts, round(waited, 3), f"stopped: {why}", stopped=True)


def _blockers(r: Revision, *, short_transaction_ms: float) -> list[pg.RelationLock]:
    if not r.needs.locks:
        return []
    locks = pg.relation_locks(r.watcher, r.needs.tables, exclude=r.own_pids())
    return blocking(locks, r.needs, short_transaction_ms=short_transaction_ms)


def _wait(
    r: Revision, attempt: int, lock_timeout: int
) -> tuple[list[pg.RelationLock], float, bool]:
    """Wait until nothing conflicting is held or waited for, polling; (what was seen last,
    seconds waited, stopped). Holds no lock meanwhile."""
    started = r.clock()
    deadline = started + r.policy.lock_wait_seconds
    shown: set[int | None] = set()
    last: list[pg.RelationLock] = []
    while True:
        found = _blockers(r, short_transaction_ms=r.policy.short_transaction_ms)
        if not found:
            if not last:
                return [], 0.0, False  # nothing in the way: no wait at all
            r.log(f"  clear after {r.clock() - started:.1f} s of waiting")
            return last, r.clock() - started, False
        last = found
        pids = {lock.pid for lock in found}
        if pids != shown:
            r.log(f"  waiting (not queued) for {describe_blockers(found)}")
            shown = pids
        r.phase(
            "waiting",
            attempt=attempt,
            lock_timeout_ms=lock_timeout,
            blockers=[blocker_json(b) for b in found],
        )
        if r.should_stop():
            return found, r.clock() - started, True
        if r.clock() >= deadline:
            r.log(
                f"  still blocked after {r.policy.lock_wait_seconds:g} s: attempting anyway "
                f"(any stall is at most {lock_timeout} ms)"
            )
            return found, r.clock() - started, False
        r.sleep(r.policy.poll_seconds)


def _sleep(r: Revision, seconds: float) -> bool:
    """Sleep, looking at should_stop() every poll; True when asked to stop."""
    until = r.clock() + seconds
    while True:
        if r.should_stop():
            return True
        left = until - r.clock()
        if left <= 0:
            return False
        r.sleep(min(left, r.policy.poll_seconds))


# --- INVALID indexes ---


def _leftovers(r: Revision) -> list[tuple[str, str]]:
    needs = r.needs
    found: list[tuple[str, str]] = []
    for table, names in sorted(needs.indexes.items()):
        found += pg.invalid_indexes(r.watcher, table, sorted(names))
    for table in sorted(needs.reindexed):
        found += pg.invalid_indexes(r.watcher, table, [], reindexed=True)
    for index in sorted(needs.reindexed_indexes):
        owner = pg.index_table(r.watcher, index)
        if owner:
            found += pg.invalid_indexes(r.watcher, owner, [], reindexed=True)
    return list(dict.fromkeys(found))


def _clean_up(r: Revision, attempt: int, lock_timeout: int) -> None:
    """Drop the INVALID indexes a failed CONCURRENTLY build of this revision left (logged).
    Its waits never queue the application; RevisionFailed (55P03, retried) when they take
    longer than the wait allows."""
    if not (r.needs.indexes or r.needs.reindexed or r.needs.reindexed_indexes):
        return
    patience_ms = max(r.policy.lock_timeout_ms, round(r.policy.lock_wait_seconds * 1000))
    statement_ms = round(r.policy.statement_timeout_for(r.revision) * 1000)
    for schema, name in _leftovers(r):
        r.phase("cleanup", attempt=attempt, lock_timeout_ms=lock_timeout, blockers=[])
        shown = name if schema == "public" else f"{schema}.{name}"
        r.log(
            f"  dropping the INVALID index {shown} a failed CONCURRENTLY build left: "
            f"DROP INDEX CONCURRENTLY IF EXISTS {shown}"
        )
        try:
            pg.drop_index_concurrently(
                r.watcher,
                schema,
                name,
                lock_timeout_ms=patience_ms,
                statement_timeout_ms=max(patience_ms, statement_ms),
            )
        except pg.Error as exc:
            raise RevisionFailed(
                f"could not drop the INVALID index {shown}: {str(exc).strip()}",
                sqlstate=getattr(exc, "sqlstate", None),
            ) from None
        r.log(f"  dropped {shown}")


def _clean_up_after(r: Revision) -> None:
    """After a final failure: drop what the build left if that is quick, else say so."""
    if not (r.needs.indexes or r.needs.reindexed or r.needs.reindexed_indexes):
        return
    with contextlib.suppress(pg.Error):
        left = _leftovers(r)
        for schema, name in left:
            shown = name if schema == "public" else f"{schema}.{name}"
            try:
                pg.drop_index_concurrently(
                    r.watcher,
                    schema,
                    name,
                    lock_timeout_ms=r.policy.lock_timeout_ms,
                    statement_timeout_ms=max(r.policy.lock_timeout_ms, 5000),
                )
            except pg.Error:
                r.log(
                    f"  the INVALID index {shown} stays (dropping it would have to wait): the "
                    "next attempt drops it first, or run DROP INDEX CONCURRENTLY IF EXISTS "
                    f"{shown}"
                )
            else:
                r.log(f"  dropped the INVALID index {shown} the failed build left")
