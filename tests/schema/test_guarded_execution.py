"""Guarded execution on the real cluster: attempts that never queue, short escalating lock
timeouts with backoff, the blockers named, INVALID indexes dropped before a retry, statement
timeouts per revision, one migration per database, stopping; and the policy on the database's
form (bounds, JSON, revision ids) with its production role check."""

from __future__ import annotations

import html
import os
import re
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.urls import reverse
from helpers import ROOT, TARGET_PASSWORD, alembic_project, checked, make_database, wait_until

from dashboard.audit.models import AuditEvent
from dashboard.databases import registry
from dashboard.databases.models import ManagedDatabase
from dashboard.lib import pg
from dashboard.schema import execution, guard
from dashboard.schema.execution import Progress

pytestmark = pytest.mark.django_db

ADD_NICKNAME = 'op.execute("ALTER TABLE users ADD COLUMN nickname text")'


@pytest.fixture
def target(make_target: Callable[..., str]) -> Any:
    db = make_database(dsn=make_target())
    checked(db, "0016")
    return db


def use(db: Any, folder: Path, **fields: Any) -> Any:
    db.script_location = str(folder)
    for name, value in fields.items():
        setattr(db, name, value)
    db.save()
    return db


def connect(db: Any, **kwargs: Any) -> psycopg.Connection:
    return psycopg.connect(db.dsn, password=TARGET_PASSWORD, **kwargs)


def query(db: Any, sql: str) -> list[tuple[Any, ...]]:
    with connect(db) as conn:
        return conn.execute(sql).fetchall()


def versions(db: Any) -> list[str]:
    return sorted(r[0] for r in query(db, "SELECT version_num FROM alembic_version"))


def has_nickname(db: Any) -> bool:
    return bool(
        query(
            db,
            "SELECT 1 FROM information_schema.columns "
            "WHERE table_name = 'users' AND column_name = 'nickname'",
        )
    )


@contextmanager
def blocker(db: Any, statement: str, app: str) -> Iterator[tuple[psycopg.Connection, int]]:
    """Another session, in an open transaction that ran ``statement`` (and holds its locks)."""
    conn = connect(db, application_name=app)
    try:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        conn.execute(statement)
        yield conn, pid
    finally:
        conn.rollback()
        conn.close()


class Recorder:
    """Every Progress handed over, in order."""

    def __init__(self, then: Callable[[Progress], None] | None = None) -> None:
        self.seen: list[Progress] = []
        self.then = then

    def __call__(self, progress: Progress) -> None:
        self.seen.append(progress)
        if self.then is not None:
            self.then(progress)

    @property
    def last(self) -> Progress:
        return self.seen[-1]

    def phases(self, revision: str) -> list[str]:
        out: list[str] = []
        for p in self.seen:
            if p.revision == revision and (not out or out[-1] != p.phase):
                out.append(p.phase)
        return out

    def waiting_on(self, revision: str, pid: int) -> bool:
        return any(
            p.revision == revision
            and p.phase == "waiting"
            and pid in {b["pid"] for b in p.blockers}
            for p in list(self.seen)
        )


class Background:
    """``work()`` in a thread (its own Django connection, closed when it ends)."""

    def __init__(self, work: Callable[[], Any]) -> None:
        self.value: Any = None
        self.error: BaseException | None = None

        def run() -> None:
            from django.db import connections

            try:
                self.value = work()
            except BaseException as exc:  # noqa: BLE001 - handed to result()
                self.error = exc
            finally:
                connections.close_all()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def result(self, timeout: float) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the migration did not finish"
        if self.error is not None:
            raise self.error
        return self.value


# --- The policy's pure parts ---


def test_the_conflict_matrix_is_postgresqls() -> None:
    modes = list(guard.MODES.values())
    for a in modes:
        for b in modes:
            assert guard.conflicts(a, b) == guard.conflicts(b, a), (a, b)
    assert guard.conflicts("AccessExclusiveLock", "AccessShareLock")
    assert not guard.conflicts("RowExclusiveLock", "RowExclusiveLock")
    assert guard.conflicts("ShareUpdateExclusiveLock", "ShareUpdateExclusiveLock")
    assert not guard.conflicts("ShareLock", "ShareLock")
    assert guard.conflicts("ShareLock", "RowExclusiveLock")
    assert not guard.conflicts("ShareUpdateExclusiveLock", "RowExclusiveLock")
    assert [len(guard.CONFLICTS[m]) for m in modes] == [1, 2, 4, 5, 5, 6, 7, 8]


def test_the_lock_timeout_escalates_to_the_ceiling_and_the_backoff_is_jittered() -> None:
    policy = guard.Policy()
    assert [policy.lock_timeout_for(n) for n in range(1, 7)] == [100, 200, 300, 500, 500, 500]
    assert [guard.Policy(lock_timeout_ms=50).lock_timeout_for(n) for n in (1, 4)] == [10, 50]
    assert policy.backoff_seconds(1, 0.0) == pytest.approx(0.1)
    assert policy.backoff_seconds(1, 1.0) == pytest.approx(0.3)
    assert policy.backoff_seconds(20, 0.5) == pytest.approx(5.0)  # capped
    override = guard.Policy(revision_statement_timeouts={"abc": 3600})
    assert override.settings_for("abc", 1, check_interval=True) == {
        "lock_timeout": "100ms",
        "statement_timeout": "3600000ms",
        "client_connection_check_interval": "1000ms",
    }
    assert override.settings_for("other", 4, check_interval=False) == {
        "lock_timeout": "500ms",
        "statement_timeout": "300000ms",
    }


def lock(mode: str, *, granted: bool = True, age: float | None = 5000.0) -> pg.RelationLock:
    return pg.RelationLock("users", "public.users", 42, mode, granted, xact_age_ms=age)


def test_a_young_holder_is_not_waited_for_but_a_waiting_request_is() -> None:
    needs = guard.Needs("r")
    needs.take("users", "ACCESS EXCLUSIVE")
    found = guard.blocking(
        [
            lock("RowExclusiveLock", age=3.0),  # the application's ordinary short write
            lock("AccessShareLock", age=60_000.0),  # a long report
            lock("RowExclusiveLock", granted=False, age=3.0),  # queued: ours would queue too
            lock("AccessShareLock", age=None),  # its age hidden from the role: counted
        ],
        needs,
        short_transaction_ms=200,
    )
    assert [(b.mode, b.granted, b.xact_age_ms) for b in found] == [
        ("AccessShareLock", True, 60_000.0),
        ("RowExclusiveLock", False, 3.0),
        ("AccessShareLock", True, None),
    ]
    weak = guard.Needs("r")
    weak.take("users", "SHARE UPDATE EXCLUSIVE")  # CREATE INDEX CONCURRENTLY: writers go on
    assert guard.blocking([lock("RowExclusiveLock")], weak, short_transaction_ms=0) == []


# --- Waiting without queueing ---


@pytest.mark.django_db(transaction=True)
def test_a_conflicting_lock_makes_it_wait_without_queueing_then_it_proceeds(
    target: Any, tmp_path: Path
) -> None:
    folder = alembic_project(
        tmp_path / "app",
        ("g1", "0016", "op.execute('CREATE TABLE g_notes (id int)')"),
        ("g2", "g1", ADD_NICKNAME),
    )
    use(target, folder)
    recorder, lines = Recorder(), []
    policy = guard.Policy(lock_wait_seconds=120)
    with blocker(target, "LOCK TABLE users IN ACCESS SHARE MODE", "nightly-report") as (conn, pid):
        run = Background(
            lambda: execution.migrate(
                target, ["g1", "g2"], log=lines.append, on_progress=recorder, policy=policy
            )
        )
        wait_until(lambda: recorder.waiting_on("g2", pid), "the wait for the blocker")
        runway = recorder.last.backend_pid
        assert runway is not None  # g1 ran: Runway's migrating session is connected
        samples: list[list[tuple[Any, ...]]] = []

        def sampled() -> bool:
            samples.append(
                query(
                    target,
                    "SELECT pid, mode, relation::regclass::text FROM pg_locks "
                    f"WHERE NOT granted OR (pid = {runway} AND relation = 'users'::regclass)",
                )
            )
            return len(samples) >= 10

        wait_until(sampled, "ten looks at pg_locks while it waits")
        # No lock request waits (Runway's or anyone's queued behind it), and Runway's session
        # holds nothing on users: it has not asked yet.
        assert samples == [[]] * len(samples)
        assert recorder.last.phase == "waiting"
        shown = recorder.last.blockers
        assert [
            (b["pid"], b["application"], b["user"], b["mode"], b["table"], b["granted"])
            for b in shown
        ] == [(pid, "nightly-report", "app_owner", "ACCESS SHARE", "users", True)]
        assert shown[0]["query"] == "LOCK TABLE users IN ACCESS SHARE MODE" and shown[0]["since"]
        conn.commit()
        steps = run.result(60)
    assert [(s.revision, s.ok, s.attempts) for s in steps] == [("g1", True, 1), ("g2", True, 1)]
    assert steps[1].waited_seconds > 0 and steps[0].waited_seconds == 0
    assert has_nickname(target) and versions(target) == ["g2"]
    assert recorder.phases("g2") == ["waiting", "attempt", "done"]  # one attempt, no backoff
    log = "\n".join(lines)
    assert "  locks: users (ACCESS EXCLUSIVE)" in log
    assert (
        f"  waiting (not queued) for pid {pid} (user app_owner, application 'nightly-report'"
        in (log)
    )
    assert [t["revision"] for t in recorder.last.timings] == ["g1", "g2"]
    assert recorder.last.timings[1]["waited_seconds"] == steps[1].waited_seconds


def test_when_the_attempts_run_out_the_step_fails_naming_the_blocker(
    target: Any, tmp_path: Path
) -> None:
    use(target, alembic_project(tmp_path / "app", ("h1", "0016", ADD_NICKNAME)))
    policy = guard.Policy(
        lock_timeout_ms=50, lock_attempts=3, lock_wait_seconds=0.3, backoff_first_seconds=0.05
    )
    lines: list[str] = []
    with blocker(target, "SELECT count(*) FROM users", "nightly-report") as (_, pid):
        started = time.monotonic()
        steps = execution.migrate(target, ["h1"], log=lines.append, policy=policy)
        took = time.monotonic() - started
    assert [(s.revision, s.ok, s.attempts) for s in steps] == [("h1", False, 3)], "\n".join(lines)
    error = steps[0].error
    assert error.startswith(
        "gave up after 3 attempts (lock not available within 30 ms each time; its locks: "
        "users (ACCESS EXCLUSIVE)); blocked by "
        f"pid {pid} (user app_owner, application 'nightly-report', idle in transaction, in a "
        "transaction since "
    ), error
    assert error.endswith("; holds ACCESS SHARE on users): SELECT count(*) FROM users"), error
    assert took < 10, took
    log = "\n".join(lines)
    for n, ms in ((1, 10), (2, 20), (3, 30)):
        assert f"  attempt {n}/3 with lock_timeout {ms} ms" in log
    assert "still blocked after 0.3 s: attempting anyway (any stall is at most 10 ms)" in log
    assert not has_nickname(target) and versions(target) == ["0016"]


def test_a_session_that_takes_the_lock_after_the_wait_costs_one_short_attempt(
    target: Any, tmp_path: Path
) -> None:
    use(target, alembic_project(tmp_path / "app", ("i1", "0016", ADD_NICKNAME)))
    grabber = connect(target, application_name="sneaky")
    grabber_pid = grabber.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
    grabbed: list[bool] = []

    def before(statement: Any) -> None:
        if statement.sql.startswith("ALTER TABLE users") and not grabbed:
            grabber.execute("LOCK TABLE users IN ACCESS SHARE MODE")  # granted: Runway has none
            grabbed.append(True)

    def release(progress: Progress) -> None:
        if progress.phase == "backoff" and grabber.info.transaction_status != 0:
            grabber.commit()

    lines: list[str] = []
    try:
        steps = execution.migrate(
            target, ["i1"], log=lines.append, before_statement=before, on_progress=release
        )
    finally:
        grabber.close()
    assert [(s.revision, s.ok, s.attempts) for s in steps] == [("i1", True, 2)], steps
    failed = next(line for line in lines if "FAILED ALTER TABLE users" in line)
    assert "canceling statement due to lock timeout" in failed
    assert float(failed.split()[0]) < 1000  # the first attempt's 100 ms, not 3 minutes
    log = "\n".join(lines)
    assert f"  attempt 1 failed (lock not available); blocked by pid {grabber_pid}" in log
    assert "  attempt 2/30 with lock_timeout 200 ms" in log
    assert steps[0].seconds < 10 and has_nickname(target)


# --- CONCURRENTLY ---

BUILD_INDEX = """
with op.get_context().autocommit_block():
    op.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS users_created_at_idx ON users (created_at)")
"""


def index_state(db: Any, name: str) -> list[tuple[Any, ...]]:
    return query(
        db,
        "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        f"WHERE c.relname = '{name}'",
    )


def test_an_invalid_index_left_by_a_failed_concurrently_build_is_dropped_before_the_retry(
    target: Any, tmp_path: Path
) -> None:
    use(
        target,
        alembic_project(tmp_path / "app", ("j1", "0016", BUILD_INDEX)),
        revision_statement_timeouts={"j1": 1},
    )
    lines: list[str] = []
    # An open write on users: the build waits for it (without queueing anyone) until the
    # revision's own statement timeout of 1 s ends it, leaving an INVALID index behind.
    writer = "UPDATE users SET username = username WHERE id = (SELECT min(id) FROM users)"
    with blocker(target, writer, "app-writer"):
        steps = execution.migrate(target, ["j1"], log=lines.append)
        assert [(s.revision, s.ok, s.attempts) for s in steps] == [("j1", False, 1)]
        assert "canceling statement due to statement timeout" in steps[0].error
        assert 0.9 < steps[0].seconds < 8
        assert index_state(target, "users_created_at_idx") == [("users_created_at_idx", False)]
        assert (
            "  the INVALID index users_created_at_idx stays (dropping it would have to wait)"
            in "\n".join(lines)
        )
    assert versions(target) == ["0016"]
    # The retry: IF NOT EXISTS alone would skip the build and keep the INVALID index.
    lines.clear()
    steps = execution.migrate(target, ["j1"], log=lines.append)
    assert [(s.revision, s.ok) for s in steps] == [("j1", True)], steps
    log = "\n".join(lines)
    dropping = log.index(
        "  dropping the INVALID index users_created_at_idx a failed CONCURRENTLY build left: "
        "DROP INDEX CONCURRENTLY IF EXISTS users_created_at_idx"
    )
    assert dropping < log.index("  attempt 1/30") < log.index("CREATE INDEX CONCURRENTLY")
    assert index_state(target, "users_created_at_idx") == [("users_created_at_idx", True)]
    assert versions(target) == ["j1"]


def test_concurrently_inside_the_transaction_is_refused_before_anything_runs(
    target: Any, tmp_path: Path
) -> None:
    folder = alembic_project(
        tmp_path / "app",
        ("o1", "0016", "op.execute('CREATE TABLE o_notes (id int)')"),
        ("o2", "o1", "op.execute('CREATE INDEX CONCURRENTLY o_notes_id ON o_notes (id)')"),
    )
    lines: list[str] = []
    with pytest.raises(execution.ExecutionError) as caught:
        execution.migrate(use(target, folder), ["o1", "o2"], log=lines.append)
    assert str(caught.value) == (
        "Refused before anything ran: o2 runs `CREATE INDEX CONCURRENTLY o_notes_id ON o_notes "
        "(id)` inside its transaction, where PostgreSQL refuses CONCURRENTLY: wrap it in `with "
        "op.get_context().autocommit_block():` (e.g. op.create_index(..., "
        "postgresql_concurrently=True) inside that block)."
    )
    assert versions(target) == ["0016"] and query(target, "SELECT to_regclass('o_notes')") == [
        (None,)
    ]
    assert not any("migration lock" in line for line in lines)


def test_the_session_itself_never_sends_concurrently_inside_the_transaction(
    target: Any, tmp_path: Path
) -> None:
    """What the analysis could not see (the SQL is built at run time) is refused by the
    session before it is sent."""
    from dashboard.lib.alembic import online
    from dashboard.schema.status import scripts_of

    body = "op.execute(' '.join(['CREATE INDEX', 'CONCURRENTLY q_idx ON users (id)']))"
    use(target, alembic_project(tmp_path / "app", ("q1", "0016", body)))
    url = pg.sqlalchemy_url(target.dsn, TARGET_PASSWORD)
    session = online.Session(url, online.Chain.of(scripts_of(target)))
    with session, pytest.raises(online.RevisionFailed) as caught:
        session.run("q1")
    assert caught.value.failure.category == "concurrently_in_transaction"
    assert "run it in `with op.get_context().autocommit_block():`. Runway did not send it" in str(
        caught.value
    )
    assert versions(target) == ["0016"]


# --- Statement timeouts per revision ---


def timeout_is(value: str) -> str:
    return (
        "op.execute(\"DO $$ BEGIN IF current_setting('statement_timeout') <> "
        f"'{value}' THEN RAISE 'statement_timeout is %', current_setting('statement_timeout'); "
        'END IF; END $$")'
    )


def test_a_revisions_own_statement_timeout_is_honoured(target: Any, tmp_path: Path) -> None:
    folder = alembic_project(
        tmp_path / "app",
        ("k1", "0016", timeout_is("5min")),
        ("k2", "k1", timeout_is("2s") + "\nop.execute('SELECT pg_sleep(6)')"),
    )
    use(target, folder, revision_statement_timeouts={"k2": 2})
    steps = execution.migrate(target, ["k1", "k2"])
    assert [(s.revision, s.ok, s.attempts) for s in steps] == [("k1", True, 1), ("k2", False, 1)]
    assert "canceling statement due to statement timeout" in steps[1].error
    assert 1.8 < steps[1].seconds < 5.5, steps[1].seconds  # not retried, not 6 s
    assert versions(target) == ["k1"]


# --- One migration per database ---


@pytest.mark.django_db(transaction=True)
def test_two_migrations_racing_for_one_database_one_runs_the_other_is_told_who_holds_it(
    target: Any, tmp_path: Path
) -> None:
    use(target, alembic_project(tmp_path / "app", ("l1", "0016", "op.execute('SELECT 1')")))
    inside, go_on = threading.Event(), threading.Event()

    def hold(statement: Any) -> None:
        if statement.sql == "SELECT 1":
            inside.set()
            go_on.wait(60)

    first = Background(lambda: execution.migrate(target, ["l1"], before_statement=hold))
    wait_until(inside.is_set, "the first migration to be running")
    holder = query(
        target,
        "SELECT a.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
        "WHERE l.locktype = 'advisory' AND l.granted",
    )
    assert len(holder) == 1
    pid, application = holder[0]
    assert application == f"runway migration lock {socket.gethostname()}:{os.getpid()}"[:63]
    started = time.monotonic()
    with pytest.raises(execution.MigrationBusy) as caught:
        execution.migrate(target, ["l1"])
    assert time.monotonic() - started < 10  # at once: it never waits for the lock
    assert re.fullmatch(
        rf"Another migration is running on {target.name} \(held by pid {pid}, "
        rf"{re.escape(application)}, since \d{{4}}-\d\d-\d\dT[^)]+\)\.",
        str(caught.value),
    ), str(caught.value)
    go_on.set()
    steps = first.result(60)
    assert [(s.revision, s.ok) for s in steps] == [("l1", True)]
    assert versions(target) == ["l1"]


# --- Stopping ---


def test_should_stop_stops_between_attempts(target: Any, tmp_path: Path) -> None:
    use(target, alembic_project(tmp_path / "app", ("m1", "0016", ADD_NICKNAME)))
    stop = threading.Event()
    recorder = Recorder(lambda p: stop.set() if p.phase == "backoff" else None)
    lines: list[str] = []
    policy = guard.Policy(lock_wait_seconds=0)
    with blocker(target, "LOCK TABLE users IN ACCESS SHARE MODE", "nightly-report"):
        steps = execution.migrate(
            target,
            ["m1"],
            log=lines.append,
            on_progress=recorder,
            should_stop=stop.is_set,
            policy=policy,
        )
    assert [(s.revision, s.ok, s.attempts) for s in steps] == [("m1", False, 1)]
    assert steps[0].error == "stopped: asked to stop between attempts"
    assert recorder.last.phase == "stopped"
    assert sum(1 for line in lines if line.startswith("  attempt ") and "/30" in line) == 1
    assert not has_nickname(target) and versions(target) == ["0016"]


def test_should_stop_between_revisions_runs_no_further_one(target: Any, tmp_path: Path) -> None:
    folder = alembic_project(
        tmp_path / "app",
        ("n1", "0016", "op.execute('CREATE TABLE n_one (id int)')"),
        ("n2", "n1", "op.execute('CREATE TABLE n_two (id int)')"),
    )
    stop = threading.Event()
    recorder = Recorder(lambda p: stop.set() if p.phase == "done" else None)
    steps = execution.migrate(
        use(target, folder), ["n1", "n2"], on_progress=recorder, should_stop=stop.is_set
    )
    assert [(s.revision, s.ok, s.error) for s in steps] == [
        ("n1", True, ""),
        ("n2", False, "stopped: asked to stop before it began"),
    ]
    assert recorder.last.phase == "stopped" and versions(target) == ["n1"]


def test_a_statement_cancelled_while_stopping_is_not_retried(target: Any, tmp_path: Path) -> None:
    use(
        target,
        alembic_project(tmp_path / "app", ("p1", "0016", "op.execute('SELECT pg_sleep(60)')")),
    )
    stop = threading.Event()
    recorder = Recorder()

    def abort() -> None:
        def sleeping() -> bool:
            pid = recorder.seen[-1].backend_pid if recorder.seen else None
            return bool(
                pid
                and recorder.seen[-1].statement.startswith("SELECT pg_sleep")
                and query(
                    target,
                    f"SELECT 1 FROM pg_stat_activity WHERE pid = {pid} AND state = 'active' "
                    "AND query LIKE 'SELECT pg_sleep%'",
                )
            )

        wait_until(sleeping, "the revision's long statement")
        stop.set()
        with connect(target, autocommit=True) as conn:
            conn.execute("SELECT pg_cancel_backend(%s)", [recorder.seen[-1].backend_pid])

    thread = threading.Thread(target=abort, daemon=True)
    thread.start()
    started = time.monotonic()
    steps = execution.migrate(target, ["p1"], on_progress=recorder, should_stop=stop.is_set)
    thread.join(10)
    assert [(s.revision, s.ok, s.attempts) for s in steps] == [("p1", False, 1)]
    assert steps[0].error.startswith("stopped: during attempt 1: "), steps[0].error
    assert "canceling statement due to user request" in steps[0].error
    assert time.monotonic() - started < 30 and versions(target) == ["0016"]
    assert recorder.last.phase == "stopped" and recorder.last.statement == ""


# --- The project's own alembic ---


def test_the_project_mode_waits_and_attempts_with_the_attempts_timeouts(
    settings: Any, target: Any, tmp_path: Path
) -> None:
    body = (
        "op.execute(\"DO $$ BEGIN IF current_setting('lock_timeout') <> '100ms' THEN "
        "RAISE 'lock_timeout is %', current_setting('lock_timeout'); END IF; END $$\")\n"
        + ADD_NICKNAME
    )
    settings.RUNWAY_PROJECT_PYTHONS = [sys.executable]
    folder = alembic_project(tmp_path / "app", ("s1", "0016", body))
    shutil.copy(ROOT / "migrations_target" / "alembic.ini", folder / "alembic.ini")
    use(target, folder, run_mode="project", project_python=sys.executable)
    lines: list[str] = []
    with blocker(target, "LOCK TABLE users IN ACCESS SHARE MODE", "nightly-report") as (conn, pid):

        def release(progress: Progress) -> None:
            if progress.blockers and conn.info.transaction_status != 0:
                assert (progress.phase, [b["pid"] for b in progress.blockers]) == ("waiting", [pid])
                conn.commit()

        recorder = Recorder(release)
        steps = execution.migrate(
            target, ["s1"], log=lines.append, on_progress=recorder, policy=guard.Policy()
        )
    assert [(s.revision, s.ok, s.attempts) for s in steps] == [("s1", True, 1)], "\n".join(lines)
    assert steps[0].waited_seconds > 0
    assert {p.backend_pid for p in recorder.seen} == {None}
    assert has_nickname(target) and versions(target) == ["s1"]


# --- The policy on the database's pages ---


def policy_form(db: Any, **overrides: str) -> dict[str, str]:
    data = {
        "name": db.name,
        "environment": db.environment,
        "dsn": db.dsn,
        "password_ref": db.password_ref,
        "require_auth": db.require_auth,
        "script_location": db.script_location,
        "critical_tables": ", ".join(db.critical_tables),
        "lock_timeout_ms": str(db.lock_timeout_ms),
        "lock_attempts": str(db.lock_attempts),
        "lock_wait_seconds": str(db.lock_wait_seconds),
        "statement_timeout_seconds": str(db.statement_timeout_seconds),
        "revision_statement_timeouts": "",
    }
    return data | overrides


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("lock_timeout_ms", "-5", "-5 is outside 10..30000 milliseconds (default 500"),
        ("lock_timeout_ms", "9" * 30, "is outside 10..30000 milliseconds"),
        ("lock_timeout_ms", "1.5", "Enter a whole number."),
        ("lock_attempts", "0", "0 is outside 1..200 attempts (default 30"),
        ("lock_wait_seconds", "3601", "3601 is outside 0..3600 seconds (default 10; 0 attempts"),
        ("statement_timeout_seconds", "0", "0 is outside 1..86400 seconds (default 300"),
        ("revision_statement_timeouts", "{0017: 60", "Not valid JSON (Expecting property name"),
        ("revision_statement_timeouts", '["0017"]', "Give a JSON object of revision id -> secon"),
        ("revision_statement_timeouts", '{"0017; drop": 60}', "'0017; drop' is not a revision id"),
        ("revision_statement_timeouts", '{"0017": -1}', "0017: -1 s is outside 1..86400 s"),
        ("revision_statement_timeouts", '{"0017": 1e9}', "0017: 1000000000.0 is not a whole num"),
        ("revision_statement_timeouts", '{"0017": true}', "0017: True is not a whole number"),
        ("revision_statement_timeouts", '{"0017": "1h"}', "0017: '1h' is not a whole number"),
        ("revision_statement_timeouts", '{"ffff00": 60}', "No revision file defines ffff00 in"),
    ],
)
def test_bad_policy_input_is_answered_clearly_and_nothing_changes(
    client: Any, engineer: Any, field: str, value: str, message: str
) -> None:
    db = make_database(environment="staging")
    client.force_login(engineer)
    response = client.post(
        reverse("database-edit", args=[db.name]), policy_form(db, **{field: value})
    )
    assert response.status_code == 200
    assert message in html.unescape(response.content.decode())
    stored = ManagedDatabase.objects.get(pk=db.pk)
    assert (stored.lock_timeout_ms, stored.lock_attempts, stored.lock_wait_seconds) == (500, 30, 10)
    assert (stored.statement_timeout_seconds, stored.revision_statement_timeouts) == (300, {})
    assert not AuditEvent.objects.filter(action="database.updated").exists()


def test_the_policy_is_saved_audited_and_shown(client: Any, engineer: Any, viewer: Any) -> None:
    db = make_database(environment="staging")
    client.force_login(engineer)
    response = client.post(
        reverse("database-edit", args=[db.name]),
        policy_form(
            db,
            lock_timeout_ms="250",
            lock_attempts="40",
            lock_wait_seconds="0",
            statement_timeout_seconds="600",
            revision_statement_timeouts='{"0018": 3600}',
        ),
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    stored = ManagedDatabase.objects.get(pk=db.pk)
    assert guard.Policy.of(stored) == guard.Policy(
        lock_timeout_ms=250,
        lock_attempts=40,
        lock_wait_seconds=0,
        statement_timeout_seconds=600,
        revision_statement_timeouts={"0018": 3600},
    )
    changes = AuditEvent.objects.get(action="database.updated").details["changes"]
    assert changes == {
        "lock_timeout_ms": [500, 250],
        "lock_attempts": [30, 40],
        "lock_wait_seconds": [10, 0],
        "statement_timeout_seconds": [300, 600],
        "revision_statement_timeouts": [{}, {"0018": 3600}],
    }
    client.force_login(viewer)
    page = html.unescape(client.get(db.get_absolute_url()).content.decode())
    assert "250 ms at most per attempt" in page and "<code>0018</code>: 3600 s" in page
    edit = client.get(reverse("database-edit", args=[db.name]))
    assert edit.status_code == 403  # a viewer sees the policy, never its form
    # A form that leaves the policy out (an older client, a script) keeps it as it is.
    client.force_login(engineer)
    bare = {k: v for k, v in policy_form(stored).items() if k not in registry.POLICY_FIELDS}
    assert client.post(reverse("database-edit", args=[db.name]), bare).status_code == 302
    assert guard.Policy.of(ManagedDatabase.objects.get(pk=db.pk)) == guard.Policy.of(stored)


@pytest.mark.parametrize(
    "who,allowed", [("viewer", False), ("engineer", False), ("lead", True), ("admin_user", True)]
)
def test_only_a_lead_changes_the_policy_of_a_production_database(
    request: Any, who: str, allowed: bool
) -> None:
    db = make_database()  # production
    actor = request.getfixturevalue(who)
    db.lock_timeout_ms, db.revision_statement_timeouts = 200, {"0018": 1800}
    if not allowed:
        with pytest.raises(registry.NotAllowed) as caught:
            registry.update(actor, db)
        assert str(caught.value) == (
            "Changing the migration policy of analyticbot (lock_timeout_ms, "
            "revision_statement_timeouts) needs the lead role: on a production database it "
            "decides how long the application may be held up by a migration."
        )
        assert ManagedDatabase.objects.get(pk=db.pk).lock_timeout_ms == 500
        assert not AuditEvent.objects.filter(action="database.updated").exists()
        return
    registry.update(actor, db)
    event = AuditEvent.objects.get(action="database.updated")
    assert event.actor_name == actor.username and event.details["changes"] == {
        "lock_timeout_ms": [500, 200],
        "revision_statement_timeouts": [{}, {"0018": 1800}],
    }


def test_an_engineer_sees_the_production_policy_locked_and_cannot_post_past_it(
    client: Any, engineer: Any, lead: Any
) -> None:
    db = make_database()  # production
    client.force_login(engineer)
    page = html.unescape(client.get(reverse("database-edit", args=[db.name])).content.decode())
    assert "Only a lead may change this on a production database" in page
    response = client.post(
        reverse("database-edit", args=[db.name]), policy_form(db, lock_attempts="5")
    )
    assert response.status_code == 302  # the locked field keeps its value
    assert ManagedDatabase.objects.get(pk=db.pk).lock_attempts == 30
    client.force_login(lead)
    response = client.post(
        reverse("database-edit", args=[db.name]), policy_form(db, lock_attempts="5")
    )
    assert response.status_code == 302
    assert ManagedDatabase.objects.get(pk=db.pk).lock_attempts == 5
    # Registering a production database with its own policy needs a lead too.
    fresh = ManagedDatabase(name="billing", environment="production", lock_attempts=5)
    with pytest.raises(registry.NotAllowed, match="needs the lead role"):
        registry.register(engineer, fresh)
    staging = ManagedDatabase(name="billing", environment="staging", lock_attempts=5)
    assert registry.register(engineer, staging).lock_attempts == 5
