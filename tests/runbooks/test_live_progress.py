"""Live progress of a migration step, on the real cluster: what the watcher reads
(``pg.watch_sample``), what it keeps (the bounded series, what an autocommit block committed),
and the run page's fragment while a real upgrade runs under the demo's application
(``devstack.load``): the revision (i of n), the statement and its time, the session that blocks
it, an index build's phase and progress bar, per-revision timings, the application's commits per
second and longest stall as a plot, and the evidence kept when the step ends. In Chromium: the
run page while the migration runs, saved as test-artifacts/run-live-progress.png."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from helpers import alembic_project, log_in, runbook, wait_until

from dashboard.backups.models import Backup, Validation
from dashboard.jobs import lifecycle as jobs
from dashboard.jobs.models import JobState
from dashboard.lib import pg
from dashboard.lib.secrets import resolve
from dashboard.schema import guard, watch
from devstack.load import Load
from runbooks import engine, live
from runbooks.models import Run, StepJob, StepState

pytestmark = pytest.mark.django_db(transaction=True)

UPGRADE_THEN_APPROVE = """
id: upgrade-only
title: Deploy the payments index
needs_target: true
phases:
  - id: execution
    title: Execution
    steps:
      - id: upgrade
        action: schema.upgrade
        title: Upgrade to the target revision
      - id: after
        approval: A lead approves what happened
        role: lead
"""

R1 = """
op.execute("CREATE TABLE audit_notes (id bigserial PRIMARY KEY, note text)")
"""
# The index build the page follows: slow on purpose, and by the same amount on a loaded machine
# as on an idle one. Its expression sleeps 50 ms every 4,000 rows (2.5 s of scanning for
# BIG_ROWS), so the page, which looks every second, sees the scan's blocks whatever the load;
# a plain build of this table can end between two looks.
R2 = """
with op.get_context().autocommit_block():
    op.execute("SET max_parallel_maintenance_workers = 0")
    op.execute("CREATE INDEX CONCURRENTLY payments_big_note ON payments_big (slow_note(id, note))")
"""
R3 = """
op.execute("ALTER TABLE audit_notes ADD COLUMN author text")
"""
BIG_ROWS = 200_000


def conn_of(db: Any, **extra: str) -> Any:
    return pg.connect(db.dsn, resolve(db.password_ref), **extra)


def older_than_short_work(db: Any, pid: int) -> None:
    """Wait until session ``pid``'s transaction is older than the guard's short-work allowance."""
    allowance = guard.Policy().short_transaction_ms + 50

    def old_enough() -> bool:
        with conn_of(db) as conn:
            row = conn.execute(
                "SELECT now() - xact_start > make_interval(secs => %s) "
                "FROM pg_stat_activity WHERE pid = %s",
                (allowance / 1000, pid),
            ).fetchone()
        return bool(row and row[0])

    wait_until(old_enough, f"session {pid}'s transaction to pass {allowance} ms", 10)


def fragment(client: Client, run: Run) -> str:
    url = reverse("run-detail", args=[run.database.name, run.pk]) + "?step=upgrade"
    return client.get(url, HTTP_HX_REQUEST="true").content.decode()


def prepare(
    db: Any,
    folder: Path,
    settings: Any,
    engineer: Any,
    *,
    revisions: list[tuple[str, str, str]] | None = None,
    target: str = "r3",
) -> tuple[Run, StepJob]:
    """A run of ``revisions`` (default r1-r3, r2 the slow index build on a big table) whose
    upgrade step has a completed, validated backup; nothing sends its job."""
    if revisions is None:
        revisions = [("r1", "0016", R1), ("r2", "r1", R2), ("r3", "r2", R3)]
        with conn_of(db) as conn:
            conn.execute(
                "CREATE TABLE payments_big AS SELECT g AS id, md5(g::text) AS note "
                f"FROM generate_series(1, {BIG_ROWS}) g"
            )
            conn.execute("ANALYZE payments_big")
            conn.execute(
                "CREATE FUNCTION slow_note(id int, note text) RETURNS text IMMUTABLE "
                "LANGUAGE plpgsql AS $$ BEGIN IF id % 4000 = 0 THEN PERFORM pg_sleep(0.05); "
                "END IF; RETURN note; END $$"
            )
    db.script_location = str(alembic_project(folder, *revisions))
    db.save()
    settings.RUNWAY_JOB_QUEUE = f"nobody-{os.getpid()}"  # this test is the worker
    run = engine.start_run(engineer, runbook(UPGRADE_THEN_APPROVE), db, target)
    backup = Backup.objects.create(database=db, state="succeeded", revision="0016")
    Validation.objects.create(backup=backup, state="succeeded", passed=True)
    Run.objects.filter(pk=run.pk).update(backup=backup)
    run.refresh_from_db()
    job = run.steps.get(step_id="upgrade").job
    assert job is not None
    return run, job


@contextmanager
def upgrading(job: StepJob) -> Iterator[threading.Thread]:
    """The step's job run here, in a thread, as a worker runs it."""

    def work() -> None:
        from django.db import connection

        try:
            jobs.run("run_step", job.pk)
        finally:
            connection.close()

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    try:
        yield worker
    finally:
        worker.join(120)


@contextmanager
def writer_holding(db: Any, table: str) -> Iterator[int]:
    """Another application's session with an open transaction that wrote to ``table``: a
    CREATE INDEX CONCURRENTLY waits for it to end."""
    with conn_of(db, application_name="billing-report") as conn:
        pid = int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])
        conn.execute("BEGIN")
        conn.execute(f"INSERT INTO {table} (id, note) VALUES (-1, 'held')")
        yield pid
        conn.execute("COMMIT")


BAR = re.compile(r"\d+% · [\d,]+ of [\d,]+ (blocks|tuples)")


def showing(
    client: Client, run: Run, wanted: Callable[[str], bool], job: StepJob | None = None
) -> Callable[[], str | None]:
    """The step's live fragment once it shows what is wanted ("ended" if the job ended)."""

    def look() -> str | None:
        if job is not None and not StepJob.objects.get(pk=job.pk).is_active:
            return "ended"
        html = fragment(client, run)
        return html if wanted(html) else None

    return look


def until(predicate: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    found: list[Any] = []

    def check() -> bool:
        value = predicate()
        if value:
            found.append(value)
        return bool(value)

    wait_until(check, what, timeout)
    return found[-1]


# --- What the watcher reads ---


def test_a_look_names_the_blocker_of_a_waiting_session_and_the_longest_wait(
    live_target: Any,
) -> None:
    with (
        conn_of(live_target, application_name="nightly-report") as holder,
        conn_of(live_target) as waiter,
        conn_of(live_target) as watcher,
    ):
        holder_pid = holder.execute("SELECT pg_backend_pid()").fetchone()[0]
        holder.execute("BEGIN")
        holder.execute("LOCK TABLE payments IN ACCESS EXCLUSIVE MODE")
        waiter_pid = waiter.execute("SELECT pg_backend_pid()").fetchone()[0]
        blocked = threading.Thread(target=lambda: waiter.execute("SELECT 1 FROM payments"))
        blocked.start()
        try:
            wait_until(
                lambda: pg.watch_sample(watcher, None).traffic.waiting_sessions == 1, "the wait"
            )
            time.sleep(0.3)
            look = pg.watch_sample(watcher, waiter_pid)
            anyone = pg.watch_sample(watcher, None).traffic
        finally:
            holder.execute("ROLLBACK")
            blocked.join(10)
        assert look.backend is not None and look.backend.pid == waiter_pid
        assert look.backend.wait_event_type == "Lock" and look.backend.in_transaction
        assert look.backend.blocked_by == (holder_pid,)
        [blocker] = look.blockers
        assert (blocker.pid, blocker.application) == (holder_pid, "nightly-report")
        assert (blocker.mode, blocker.table, blocker.granted) == (
            "AccessExclusiveLock",
            "payments",
            True,
        )
        assert blocker.query == "LOCK TABLE payments IN ACCESS EXCLUSIVE MODE"
        assert blocker.seconds is not None and blocker.seconds >= 0.3
        assert look.index_build is None
        # The migrating session's own wait is not the application's stall; any other is.
        assert look.traffic.longest_lock_wait_ms == 0 and look.traffic.waiting_sessions == 0
        assert anyone.longest_lock_wait_ms >= 300 and anyone.waiting_sessions == 1
        assert pg.active_session(watcher, waiter_pid, look.backend.backend_start) is not None
        assert pg.active_session(watcher, waiter_pid, "2001-01-01T00:00:00+00:00") is None


def test_the_series_stays_bounded_and_keeps_its_worst_stall() -> None:
    series = watch.Series(bound=8)
    for i in range(100):
        stall = 2500.0 if i == 37 else 50.0 if i == 38 else 0.0
        series.look(1.0, stall)  # a wait under STALL_MS is not a stall
        series.add(float(i), 100.0 + i, stall)
    assert len(series.t) <= 8 and len(series.t) == len(series.tps) == len(series.stall_ms)
    assert max(series.stall_ms) == 2500.0  # merged pairs keep the worst
    summary = series.summary()
    assert summary["looks"] == 100 and summary["peak_stall_ms"] == 2500.0
    assert summary["stalled_seconds"] == 1.0 and summary["tps_mean"] == 149.5
    svg = str(live.plot(series.to_json()))
    assert svg.startswith("<svg") and "<rect" in svg and "longest lock wait 2500 ms" in svg


def test_what_an_autocommit_block_committed_before_a_stop() -> None:
    ran = [
        watch._Statement("SELECT to_regclass('alembic_version')", 0, False),
        watch._Statement("ALTER TABLE a ADD COLUMN b int", 0, False),
        watch._Statement("CREATE INDEX CONCURRENTLY a_b ON a (b)", 0, True),
        watch._Statement("UPDATE a SET b = 1", 0, False),
        watch._Statement("SELECT pg_sleep(60)", 0, False),
    ]
    kept, after = watch.committed_by_autocommit(ran, "SELECT pg_sleep(60)")
    assert kept == ["ALTER TABLE a ADD COLUMN b int", "CREATE INDEX CONCURRENTLY a_b ON a (b)"]
    assert after == ["UPDATE a SET b = 1"]
    # Cancelled inside the block: the statement itself is not counted as committed.
    assert watch.committed_by_autocommit(ran[:3], ran[2].sql) == (
        ["ALTER TABLE a ADD COLUMN b int"],
        [],
    )
    assert watch.committed_by_autocommit(ran[:2], None) == ([], [])


# --- The run page while a real upgrade runs under the application ---


def test_the_fragment_follows_a_blocked_index_build_to_its_end_under_load(
    tmp_path: Path,
    settings: Any,
    engineer: Any,
    live_target: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(watch, "EVERY", 0.25)
    run, job = prepare(live_target, tmp_path / "app", settings, engineer)
    client = Client()
    client.force_login(engineer)
    load = Load(live_target.dsn, clients=2, password=resolve(live_target.password_ref), think=0.02)
    load.start()
    try:
        t0 = load.clock()
        with upgrading(job):
            with writer_holding(live_target, "payments_big") as writer:
                # r2's build waits for the open transaction: the page names it.
                page = until(
                    showing(
                        client,
                        run,
                        lambda html: f'data-blocker="{writer}"' in html and "CONCURRENTLY" in html,
                    ),
                    "the blocker on the page",
                )
                assert "Revision 2 of 3: r2" in page
                assert "billing-report" in page and "INSERT INTO payments_big" in page
                assert "CREATE INDEX CONCURRENTLY payments_big_note ON payments_big" in page
                assert "running for" in page and "data-index-build" in page
                assert "waiting for writers before build" in page
                assert 'data-timing="r1"' in page  # r1's timing is in already
                assert "The application meanwhile" in page
            # Released: the build runs; the page shows its bar in blocks or tuples.
            built = until(
                showing(client, run, lambda html: bool(BAR.search(html)), job=job),
                "the index build's progress bar",
            )
            assert built != "ended", "the build ended before the page showed its progress"
            assert "building index" in built or "index validation" in built
            wait_until(lambda: not StepJob.objects.get(pk=job.pk).is_active, "the upgrade", 120)
        seen = load.stats(since=t0)
    finally:
        load.stop()

    job.refresh_from_db()
    step = run.steps.get(step_id="upgrade")
    assert job.state == JobState.SUCCEEDED and step.state == StepState.DONE, step.summary
    watched = job.evidence["watch"]
    assert [t["revision"] for t in watched["timings"]] == ["r1", "r2", "r3"]
    assert all(t["ok"] for t in watched["timings"])
    r2 = watched["timings"][1]
    assert r2["seconds"] > 1  # it waited for the writer, then built
    series = watched["series"]
    assert series["looks"] >= 4 and len(series["t"]) == len(series["tps"])
    # The application's commits as Runway counts them, beside the load's own count.
    app = seen["window"]["per_second"]
    assert series["tps_mean"] is not None and app > 0
    print("TPS", series, seen["window"])
    assert 0.5 * app <= series["tps_mean"] <= 1.5 * app, (series["tps_mean"], app)
    # The ended step keeps the timings and the plot on the page.
    page = client.get(run.get_absolute_url()).content.decode()
    assert 'data-timing="r3"' in page and "<svg" in page and "Peak stall" in page


# How long the waiting migration is watched beside the load. pg_stat_database gets each session's
# commits in batches, about one a second (PostgreSQL flushes a backend's counts at most once a
# second): a point over RATE_WINDOW (2 s) may hold a batch more or less of the load's and of
# Runway's own sessions (about half a second's worth of each, either way). The mean of the points
# of a longer span cancels most of that (consecutive points share their batches): over 6 s, with
# three busy loops on two cores, the mean stayed within 1.02-1.25 of the load's count in 11 runs
# (over 4 s it ranged 0.53-1.47).
SPAN = 6.0


def test_the_fragment_shows_what_a_revision_waits_for_without_queueing(
    tmp_path: Path,
    settings: Any,
    engineer: Any,
    live_target: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Guarded execution waits, sending nothing, while a session holds a lock its ALTER
    conflicts with: the page says so and names the session."""
    monkeypatch.setattr(watch, "EVERY", 0.25)
    run, job = prepare(
        live_target,
        tmp_path / "app",
        settings,
        engineer,
        revisions=[("r1", "0016", 'op.execute("ALTER TABLE users ADD COLUMN nickname text")')],
        target="r1",
    )
    client = Client()
    client.force_login(engineer)
    # A light application: Runway's own questions while it waits (ten a second) would be a
    # large share of its commits if they were counted as the application's.
    load = Load(live_target.dsn, clients=1, password=resolve(live_target.password_ref), think=0.05)
    load.start()
    try:
        with conn_of(live_target, application_name="weekly-export") as reader:
            pid = reader.execute("SELECT pg_backend_pid()").fetchone()[0]
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM users")
            # Older than the application's ordinary short work, which the guard does not wait
            # for (Policy.short_transaction_ms): else its first look may let the ALTER try.
            older_than_short_work(live_target, pid)
            with upgrading(job):
                page = until(
                    showing(client, run, lambda html: f'data-blocker="{pid}"' in html, job=job),
                    "the session it waits for",
                )
                assert page != "ended", StepJob.objects.get(pk=job.pk).output
                t0 = load.clock()
                time.sleep(SPAN)
                seen = load.stats(since=t0)["window"]["per_second"]
                waiting = StepJob.objects.get(pk=job.pk).progress
                reader.execute("COMMIT")
                wait_until(lambda: not StepJob.objects.get(pk=job.pk).is_active, "the upgrade", 60)
    finally:
        load.stop()
    assert waiting["phase"] == "waiting"
    # The points of about the span the load counted (one a second, each over RATE_WINDOW).
    counted = [v for v in waiting["series"]["tps"][-round(SPAN - watch.RATE_WINDOW + 1) :]]
    assert counted and None not in counted and seen > 0
    assert 0.6 * seen <= sum(counted) / len(counted) <= 1.4 * seen, (counted, seen)
    assert "Revision 1 of 1: r1 — waiting, not queued, for conflicting sessions" in page
    assert "No statement is sent while it waits" in page
    assert "weekly-export" in page and "ACCESS SHARE on users" in page
    assert "SELECT count(*) FROM users" in page
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.output
    [timing] = job.evidence["watch"]["timings"]
    assert timing["revision"] == "r1" and timing["waited_seconds"] > 0


def test_the_plot_shows_a_stall_of_the_application_while_the_migration_waits(
    tmp_path: Path,
    settings: Any,
    engineer: Any,
    live_target: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While r2's build waits for a writer, another session locks the load's table for 1.5 s:
    the application stalls, and the series says so (its peak and the stalled seconds)."""
    monkeypatch.setattr(watch, "EVERY", 0.25)
    run, job = prepare(live_target, tmp_path / "app", settings, engineer)
    load = Load(live_target.dsn, clients=2, password=resolve(live_target.password_ref), think=0.02)
    load.start()
    try:
        with upgrading(job), writer_holding(live_target, "payments_big"):
            wait_until(
                lambda: (StepJob.objects.get(pk=job.pk).progress or {}).get("revision") == "r2",
                "r2",
            )
            with conn_of(live_target, application_name="vacuum-full-by-hand") as locker:
                locker.execute("BEGIN")
                locker.execute("LOCK TABLE payments IN ACCESS EXCLUSIVE MODE")
                time.sleep(1.5)
                locker.execute("COMMIT")
            time.sleep(0.6)
    finally:
        load.stop()
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.output
    series = job.evidence["watch"]["series"]
    # The longest wait a look saw: the 1.5 s lock less the time before the load's next query
    # and the gap to the last look before it ended (0.25 s apart, up to 0.6 s on a busy machine:
    # one full run saw 899.6 ms). The load's own queries take a few milliseconds.
    assert 600 <= series["peak_stall_ms"] <= 2500, series
    assert 0.5 <= series["stalled_seconds"] <= 2.5, series
    view = live.view({**job.progress, "series": series}, live=False)
    assert view is not None and "<rect" in str(live.plot(view["series"]))


# --- In Chromium ---


@pytest.mark.browser
def test_the_run_page_shows_live_progress_in_the_browser(
    page: Any,
    live_server: Any,
    tmp_path: Path,
    settings: Any,
    engineer: Any,
    live_target: Any,
    artifacts: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(watch, "EVERY", 0.5)
    run, job = prepare(live_target, tmp_path / "app", settings, engineer)
    log_in(page, live_server, "erin")
    page.set_viewport_size({"width": 1280, "height": 1000})
    load = Load(live_target.dsn, clients=3, password=resolve(live_target.password_ref), think=0.02)
    load.start()
    try:
        time.sleep(1.0)
        with upgrading(job):
            with writer_holding(live_target, "payments_big") as writer:
                page.goto(f"{live_server.url}{run.get_absolute_url()}")
                page.locator(f"[data-blocker='{writer}']").wait_for(timeout=60_000)
                time.sleep(2)  # a few seconds of the application on the plot
                # Someone else's job stalls the application for a moment: the plot shows it.
                with conn_of(live_target, application_name="nightly-vacuum-full") as locker:
                    locker.execute("BEGIN")
                    locker.execute("LOCK TABLE payments IN ACCESS EXCLUSIVE MODE")
                    time.sleep(1.2)
                    locker.execute("COMMIT")
                time.sleep(2)
                row = page.locator("tr[data-step='upgrade']")
                row.locator(f"[data-blocker='{writer}']").wait_for(timeout=10_000)
                assert "Revision 2 of 3: r2" in row.inner_text()
                assert row.get_by_role("button", name="Abort migration").is_visible()
                page.screenshot(path=artifacts / "run-live-progress.png", full_page=True)
            page.get_by_text(re.compile(r"of [\d,]+ (blocks|tuples)")).wait_for(timeout=60_000)
            page.screenshot(path=artifacts / "run-live-index-build.png", full_page=True)
            page.locator("tr[data-step='upgrade'][data-state='done']").wait_for(timeout=120_000)
            page.screenshot(path=artifacts / "run-after-upgrade.png", full_page=True)
    finally:
        load.stop()
