"""A migration stopped on purpose, and one whose worker died, on the real cluster and REAL
Celery workers:

- the Abort (engine, the run page's button, ``manage.py abort_migration``) during a long
  statement of a revision (``pg_sleep`` inside ``upgrade()``) cancels it, the session's
  transaction rolls back, the database stays at the previous revision, and the step fails as
  aborted saying so, in its outcome and the audit trail; a statement that ignores the cancel
  (Python sleeping inside the revision's transaction) has its session ended after the grace;
- only an engineer (or higher) may abort: viewer, auditor-viewer, a user without a role and an
  anonymous visitor are refused, on the server;
- a worker SIGKILLed mid-revision is reaped (a 3 s stale timeout), its migrating session is
  gone, the lock free, the step says where the database is, and Resume runs what is left, each
  revision exactly once (a log table the revisions insert into).

The audit chain verifies after each."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from helpers import (
    alembic_project,
    make_user,
    recorded_backup,
    runbook,
    wait_until,
    worker_process,
)

from dashboard.audit.models import AuditEvent
from dashboard.jobs import lifecycle as jobs
from dashboard.jobs.models import JobState
from dashboard.jobs.tasks import run_job
from dashboard.lib import pg
from dashboard.lib.secrets import resolve
from runbooks import engine
from runbooks.models import Run, RunState, StepJob, StepRun, StepState

pytestmark = pytest.mark.django_db(transaction=True)

UPGRADE_THEN_APPROVE = """
id: upgrade-only
title: Upgrade
needs_target: true
phases:
  - id: only
    title: Only
    steps:
      - id: upgrade
        action: schema.upgrade
        title: Upgrade to the target
      - id: after
        approval: A lead approves what happened
        role: lead
"""

# r1 creates the log table; each revision writes its row there in its own transaction, so a
# revision run twice shows twice, one rolled back not at all.
R1 = """
op.execute("CREATE TABLE applied (revision text NOT NULL, at timestamptz DEFAULT now())")
op.execute("INSERT INTO applied (revision) VALUES ('r1')")
"""
# Sleeps inside its transaction, after its insert, only where the worker under test says so.
R2_SLEEPS = """
import os
op.execute("INSERT INTO applied (revision) VALUES ('r2')")
if os.environ.get("RUNWAY_TEST_SLOW_REVISION"):
    op.execute("SELECT pg_sleep(60)")
"""
# Holds its transaction open from Python, deaf to a cancel (no statement runs most of the time).
R2_DEAF = """
import os, time
op.execute("INSERT INTO applied (revision) VALUES ('r2')")
if os.environ.get("RUNWAY_TEST_SLOW_REVISION"):
    for _ in range(120):
        time.sleep(0.5)
        op.execute("SELECT 1")
"""
# An autocommit block commits its index before the revision goes on (and sleeps).
R2_BLOCK = """
import os
with op.get_context().autocommit_block():
    op.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS applied_by_revision ON applied (revision)")
op.execute("INSERT INTO applied (revision) VALUES ('r2')")
if os.environ.get("RUNWAY_TEST_SLOW_REVISION"):
    op.execute("SELECT pg_sleep(60)")
"""
R3 = """
op.execute("INSERT INTO applied (revision) VALUES ('r3')")
"""


def target_rows(db: Any, sql: str) -> list[Any]:
    with pg.connect(db.dsn, resolve(db.password_ref)) as conn:
        return conn.execute(sql).fetchall()


def version(db: Any) -> str:
    with pg.connect(db.dsn, resolve(db.password_ref)) as conn:
        return pg.alembic_revision(conn)


def applied(db: Any) -> list[str]:
    if not target_rows(db, "SELECT to_regclass('applied')")[0][0]:
        return []
    return [r[0] for r in target_rows(db, "SELECT revision FROM applied ORDER BY at, revision")]


def with_revisions(db: Any, folder: Path, r2: str) -> Any:
    db.script_location = str(
        alembic_project(folder, ("r1", "0016", R1), ("r2", "r1", r2), ("r3", "r2", R3))
    )
    db.save()
    return db


def start_upgrade(engineer: Any, db: Any, settings: Any, queue: str) -> tuple[Run, StepJob]:
    """A run whose upgrade step has a completed, validated backup, sent to ``queue``."""
    settings.RUNWAY_JOB_QUEUE = f"{queue}-nobody"  # the engine's own message goes nowhere
    run = engine.start_run(engineer, runbook(UPGRADE_THEN_APPROVE), db, "r3")
    recorded_backup(run)
    job = run.steps.get(step_id="upgrade").job
    settings.RUNWAY_JOB_QUEUE = queue
    run_job.apply_async(("run_step", job.pk), queue=queue)
    return run, job


def running_statement(db: Any, like: str) -> Callable[[], bool]:
    def check() -> bool:
        return bool(
            target_rows(
                db,
                "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                f"AND state = 'active' AND query LIKE '{like}'",
            )
        )

    return check


def watched(job: StepJob, revision: str) -> Callable[[], bool]:
    """The watcher published the migrating session of ``revision``."""

    def check() -> bool:
        fresh = StepJob.objects.get(pk=job.pk)
        assert fresh.is_active, f"{fresh.state}: {fresh.error}\n{fresh.output}"
        p = fresh.progress or {}
        return p.get("revision") == revision and bool((p.get("backend") or {}).get("pid"))

    return check


def ended(job: StepJob) -> Callable[[], bool]:
    return lambda: not StepJob.objects.get(pk=job.pk).is_active


def no_session_in_a_transaction(db: Any) -> bool:
    return not target_rows(
        db,
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL",
    )


def resume_here(engineer: Any, run: Run, settings: Any) -> StepRun:
    """Resume (the retry of the step), run by this process: it never sleeps in r2."""
    settings.RUNWAY_JOB_QUEUE = f"resume-nobody-{os.getpid()}"
    step = run.steps.get(step_id="upgrade")
    engine.retry(engineer, run, step)
    again = run.steps.get(step_id="upgrade").job
    jobs.run("run_step", again.pk)
    step.refresh_from_db()
    return step


def run_here(job: StepJob) -> None:
    """What a worker does with the job, in this process (its own connection closed after)."""
    from django.db import connection

    try:
        jobs.run("run_step", job.pk)
    finally:
        connection.close()


# --- Abort ---


def test_an_abort_during_a_long_statement_rolls_the_revision_back_and_resume_finishes(
    worker_env: dict[str, str],
    tmp_path: Path,
    settings: Any,
    engineer: Any,
    live_target: Any,
) -> None:
    db = with_revisions(live_target, tmp_path / "app", R2_SLEEPS)
    queue = f"abort-{os.getpid()}"
    env = {**worker_env, "RUNWAY_TEST_SLOW_REVISION": "1"}
    with worker_process(env, queue, tmp_path / "w.log"):
        run, job = start_upgrade(engineer, db, settings, queue)
        wait_until(running_statement(db, "SELECT pg_sleep(60)%"), "r2's long statement", 120)
        wait_until(watched(job, "r2"), "the watcher to publish r2's session", 20)
        pid = StepJob.objects.get(pk=job.pk).progress["backend"]["pid"]
        step = run.steps.get(step_id="upgrade")
        engine.abort_step(engineer, run, step, "the demo is on fire", grace=10)
        wait_until(ended(job), "the step to stop", 30)

    job.refresh_from_db()
    step.refresh_from_db()
    run.refresh_from_db()
    # The step failed as aborted (the attempt cancelled), the run waits for a person.
    assert job.state == JobState.CANCELLED, job.output
    assert step.state == StepState.FAILED and step.verdict == "fail"
    assert step.summary.startswith("Aborted by erin: the demo is on fire. r2 was stopped:")
    assert f"its statement was cancelled (pid {pid})" in step.summary
    assert "the version table still says r1, as before r2 began" in step.summary
    assert step.summary.endswith("Resume runs r2, r3."), step.summary
    assert run.state == RunState.ACTIVE
    assert "an engineer to retry “Upgrade to the target” or abort" in engine.waiting_for(run)
    # Nothing half-applied: r1 stands, r2's insert and its version row rolled back.
    assert version(db) == "r1" and applied(db) == ["r1"]
    assert no_session_in_a_transaction(db)
    with pg.connect(db.dsn, resolve(db.password_ref)) as conn:
        assert pg.migration_lock_holder(conn) is None
    aborted = job.evidence["abort"]
    assert aborted["revision"] == "r2" and aborted["database_at"] == "r1"
    assert aborted["version_before"] == "r1" and aborted["rolled_back"] is True
    assert aborted["cancelled_at"] and aborted["terminated_at"] is None
    assert aborted["session_after"] in ("gone", "idle") and aborted["by"] == "erin"
    assert [t["revision"] for t in job.evidence["watch"]["timings"]] == ["r1", "r2"]
    assert job.evidence["watch"]["series"]["looks"] >= 2
    # In the audit trail: who asked and why, and what the abort found.
    asked = AuditEvent.objects.get(action="run.step_abort_requested")
    assert asked.actor_name == "erin" and asked.details["reason"] == "the demo is on fire"
    assert asked.details["grace_seconds"] == 10
    found = AuditEvent.objects.get(action="run.migration_aborted")
    assert found.details["database_at"] == "r1" and found.details["revision"] == "r2"
    assert found.details["rolled_back"] is True
    call_command("verify_audit")

    # The page offers Resume; it continues from r1: r2 and r3 run once each.
    client = Client()
    client.force_login(engineer)
    page = client.get(run.get_absolute_url()).content.decode()
    assert ">Resume</button>" in page and "Aborted by erin" in page
    resumed = resume_here(engineer, run, settings)
    assert resumed.state == StepState.DONE, resumed.summary + resumed.output
    assert version(db) == "r3" and applied(db) == ["r1", "r2", "r3"]
    last = resumed.job
    assert last is not None and last.evidence["pending"] == ["r2", "r3"]
    call_command("verify_audit")


def test_the_command_aborts_and_ends_a_session_that_ignores_the_cancel_after_the_grace(
    worker_env: dict[str, str],
    tmp_path: Path,
    settings: Any,
    engineer: Any,
    live_target: Any,
) -> None:
    db = with_revisions(live_target, tmp_path / "app", R2_DEAF)
    queue = f"abort-cmd-{os.getpid()}"
    env = {**worker_env, "RUNWAY_TEST_SLOW_REVISION": "1"}
    with worker_process(env, queue, tmp_path / "w.log"):
        run, job = start_upgrade(engineer, db, settings, queue)
        wait_until(watched(job, "r2"), "r2 under way", 120)
        wait_until(lambda: "SELECT 1" in StepJob.objects.get(pk=job.pk).output, "r2's loop", 30)
        out = StringIO()
        call_command(
            "abort_migration",
            db.name,
            "--reason",
            "wrong window",
            "--grace",
            "1",
            "--by",
            "erin",
            stdout=out,
        )
    said = out.getvalue()
    job.refresh_from_db()
    step = run.steps.get(step_id="upgrade")
    assert "Abort requested for “Upgrade to the target”" in said
    assert f"Failed: {step.summary}" in said
    assert job.state == JobState.CANCELLED and step.state == StepState.FAILED
    aborted = job.evidence["abort"]
    assert aborted["terminated_at"], aborted  # the cancel found no statement to stop
    assert aborted["grace_seconds"] == 1 and aborted["rolled_back"] is True
    assert "its session was ended after the 1 s grace" in step.summary
    assert version(db) == "r1" and applied(db) == ["r1"]
    assert no_session_in_a_transaction(db)
    assert AuditEvent.objects.get(action="run.step_abort_requested").actor_name == "erin"
    call_command("verify_audit")
    # Nothing is running now: the command says so.
    with pytest.raises(Exception, match="No migration is running on analyticbot"):
        call_command("abort_migration", db.name, "--reason", "again")


def test_an_abort_after_an_autocommit_block_says_exactly_what_was_committed(
    worker_env: dict[str, str],
    tmp_path: Path,
    settings: Any,
    engineer: Any,
    live_target: Any,
) -> None:
    db = with_revisions(live_target, tmp_path / "app", R2_BLOCK)
    queue = f"abort-block-{os.getpid()}"
    env = {**worker_env, "RUNWAY_TEST_SLOW_REVISION": "1"}
    with worker_process(env, queue, tmp_path / "w.log"):
        run, job = start_upgrade(engineer, db, settings, queue)
        wait_until(running_statement(db, "SELECT pg_sleep(60)%"), "r2's long statement", 120)
        wait_until(watched(job, "r2"), "the watcher to publish r2's session", 20)
        step = run.steps.get(step_id="upgrade")
        engine.abort_step(engineer, run, step, "not today", grace=5)
        wait_until(ended(job), "the step to stop", 30)
    job.refresh_from_db()
    step.refresh_from_db()
    index = "CREATE INDEX CONCURRENTLY IF NOT EXISTS applied_by_revision ON applied (revision)"
    aborted = job.evidence["abort"]
    assert aborted["committed"] == [index]
    assert aborted["rolled_back_after_block"] == ["INSERT INTO applied (revision) VALUES ('r2')"]
    assert f"Committed by its autocommit block and kept: {index}." in step.summary
    assert "the version table still says r1" in step.summary
    # Exactly that: the index is there (and valid), r2's row and version are not.
    valid = "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('applied_by_revision')"
    assert target_rows(db, valid) == [(True,)]
    assert version(db) == "r1" and applied(db) == ["r1"]
    call_command("verify_audit")
    resumed = resume_here(engineer, run, settings)  # IF NOT EXISTS: the kept index is fine
    assert resumed.state == StepState.DONE, resumed.summary + resumed.output
    assert version(db) == "r3" and applied(db) == ["r1", "r2", "r3"]
    call_command("verify_audit")


def test_an_abort_while_it_waits_for_a_conflicting_session_stops_before_anything_runs(
    tmp_path: Path, settings: Any, engineer: Any, live_target: Any
) -> None:
    """Guarded execution waits (sending nothing) for a session whose lock its ALTER conflicts
    with; an abort then stops it there: nothing of the revision ran. (This process is the
    worker.)"""
    db = live_target
    db.script_location = str(
        alembic_project(
            tmp_path / "app", ("r1", "0016", 'op.execute("ALTER TABLE users ADD COLUMN x int")')
        )
    )
    db.save()
    settings.RUNWAY_JOB_QUEUE = f"nobody-{os.getpid()}"
    run = engine.start_run(engineer, runbook(UPGRADE_THEN_APPROVE), db, "r1")
    recorded_backup(run)
    job = run.steps.get(step_id="upgrade").job
    with pg.connect(db.dsn, resolve(db.password_ref), application_name="weekly-export") as reader:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM users")
        worker = threading.Thread(target=run_here, args=(job,), daemon=True)
        worker.start()
        wait_until(
            lambda: (StepJob.objects.get(pk=job.pk).progress or {}).get("phase") == "waiting",
            "the wait for the reader",
        )
        engine.abort_step(engineer, run, run.steps.get(step_id="upgrade"), "not now")
        worker.join(30)
    job.refresh_from_db()
    step = run.steps.get(step_id="upgrade")
    assert job.state == JobState.CANCELLED and step.state == StepState.FAILED
    assert step.summary == (
        "Aborted by erin: not now. Nothing of r1 had run (it was waiting); the database is at "
        "0016. Resume runs r1."
    ), step.summary
    assert job.evidence["abort"]["cancelled_at"] is None and version(db) == "0016"
    call_command("verify_audit")


# --- Who may abort ---


@pytest.fixture
def running_upgrade(engineer: Any, analyticbot: Any, settings: Any) -> tuple[Run, StepJob]:
    """A run whose upgrade step's job a worker claimed (no worker is needed to ask it to
    stop: the request is a row)."""
    settings.RUNWAY_JOB_QUEUE = f"nobody-{os.getpid()}"
    run = engine.start_run(engineer, runbook(UPGRADE_THEN_APPROVE), analyticbot, "0016")
    job = run.steps.get(step_id="upgrade").job
    assert job.claim("test:1")
    return run, job


@pytest.fixture
def analyticbot(db: None) -> Any:  # at 0015: 0016 is pending (no action runs here)
    from helpers import checked, make_database

    found = make_database()
    checked(found, "0015")
    return found


def abort_url(run: Run) -> str:
    from django.urls import reverse

    return reverse("run-step-abort", args=[run.database.name, run.pk, "upgrade"])


@pytest.mark.parametrize(
    "who,role", [("vera", "viewer"), ("aud", "viewer"), ("otto", None), (None, None)]
)
def test_only_an_engineer_or_higher_may_abort_a_step(
    running_upgrade: tuple[Run, StepJob], who: str | None, role: str | None
) -> None:
    run, job = running_upgrade
    client = Client()
    if who:
        client.force_login(make_user(who, role))
    response = client.post(abort_url(run), {"reason": "let me", "grace": "5"})
    if who is None:
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    else:
        assert response.status_code == 403
        page = client.get(run.get_absolute_url())
        text = page.content.decode()
        if role:
            assert page.status_code == 200 and "Abort migration" not in text
    job.refresh_from_db()
    assert job.cancel_requested_at is None and job.stop_request == {}
    assert not AuditEvent.objects.filter(action="run.step_abort_requested").exists()
    if who:  # the engine refuses them too (what the command's --by meets)
        person = type(run.started_by).objects.get(username=who)
        with pytest.raises(engine.RunError, match="Only an engineer"):
            engine.abort_step(person, run, run.steps.get(step_id="upgrade"), "let me")
    call_command("verify_audit")


@pytest.mark.parametrize("role", ["engineer", "lead", "admin"])
def test_an_engineer_lead_or_admin_aborts_from_the_run_page(
    running_upgrade: tuple[Run, StepJob], role: str
) -> None:
    run, job = running_upgrade
    person = make_user(f"p-{role}", role)
    client = Client()
    client.force_login(person)
    page = client.get(run.get_absolute_url()).content.decode()
    assert "Abort migration" in page and 'name="grace"' in page
    response = client.post(abort_url(run), {"reason": "  stop it  ", "grace": "3"})
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.cancel_requested_at is not None and job.state == JobState.RUNNING
    assert job.stop_request == {
        "by": person.username,
        "by_id": person.pk,
        "reason": "stop it",
        "grace_seconds": 3.0,
    }
    asked = AuditEvent.objects.get(action="run.step_abort_requested")
    assert asked.actor_name == person.username and asked.details["job"] == job.pk
    call_command("verify_audit")


def test_an_abort_needs_a_reason_and_a_sane_grace(
    running_upgrade: tuple[Run, StepJob], engineer: Any
) -> None:
    run, job = running_upgrade
    client = Client()
    client.force_login(engineer)
    for data in ({"reason": ""}, {"reason": "x", "grace": "-1"}, {"reason": "x", "grace": "9999"}):
        response = client.post(abort_url(run), data, follow=True)
        assert "Nothing was aborted" in response.content.decode()
    job.refresh_from_db()
    assert job.cancel_requested_at is None


# --- A worker killed mid-revision ---


def test_recovery_ends_a_dead_workers_sessions_still_there_and_leaves_another_migration_alone(
    live_target: Any,
) -> None:
    """The sessions a dead worker left (PostgreSQL had not noticed yet): its migrating session,
    in a transaction, and its lock session, holding the migration lock. Recovery ends both
    after the grace, by pid and start time; a lock held by a session it did not record is
    another migration's."""
    from dashboard.schema import watch

    db = live_target
    password = resolve(db.password_ref)

    def identity(conn: Any) -> dict[str, Any]:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        found = pg.active_session(conn, pid)
        assert found is not None
        return {"pid": pid, "backend_start": found.backend_start}

    migrating = pg.connect(db.dsn, password)
    locking = pg.connect(db.dsn, password)
    try:
        migrating.execute("BEGIN")
        migrating.execute("SELECT count(*) FROM users")
        assert pg.try_migration_lock(locking)
        last = {
            "revision": "r2",
            "phase": "attempt",
            "backend": identity(migrating),
            "lock_session": identity(locking),
        }
        found = watch.recover(db, last, grace=0.5)
    finally:
        migrating.close()
        locking.close()
    assert found.backend == "ended by Runway after 0.5 s", found
    assert found.lock.startswith("free (Runway ended the dead worker's lock session"), found
    assert found.ok and found.database_at == "0016" and found.revision == "r2"
    assert "(r2 was rolled back)" in found.sentence()

    with pg.connect(db.dsn, password) as other:
        assert pg.try_migration_lock(other)  # another migration, started since
        found = watch.recover(db, {"revision": "r2", "phase": "attempt"}, grace=0.2)
        assert found.lock.startswith("held by pid ") and "another migration: left alone" in (
            found.lock
        )
        assert not found.ok and found.backend == "unknown"
        assert "Runway does not know the migrating session" in found.sentence()
        assert pg.migration_lock_holder(other) is not None  # untouched


def test_a_worker_killed_mid_revision_is_reaped_cleaned_up_and_resumed_without_repeats(
    worker_env: dict[str, str],
    tmp_path: Path,
    settings: Any,
    engineer: Any,
    live_target: Any,
) -> None:
    db = with_revisions(live_target, tmp_path / "app", R2_SLEEPS)
    queue = f"kill-{os.getpid()}"
    env = {**worker_env, "RUNWAY_TEST_SLOW_REVISION": "1"}
    with worker_process(env, queue, tmp_path / "w.log") as proc:
        run, job = start_upgrade(engineer, db, settings, queue)
        wait_until(running_statement(db, "SELECT pg_sleep(60)%"), "r2's long statement", 120)
        wait_until(watched(job, "r2"), "the watcher to publish r2's session", 20)
        recorded = StepJob.objects.get(pk=job.pk).progress
        pid = recorded["backend"]["pid"]
        assert recorded["lock_session"]["pid"] != pid
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    # The reaper, with a 3 s stale timeout, takes it once the heart has been still that long.
    settings.RUNWAY_JOB_STALE_SECONDS = {"run_step": 3}
    reaped: list[Any] = []
    wait_until(lambda: bool(reaped.extend(jobs.reap(kinds=["run_step"])) or reaped), "the reaper")
    assert [r.job.pk for r in reaped] == [job.pk]
    job.refresh_from_db()
    step = run.steps.get(step_id="upgrade")
    assert job.state == JobState.INTERRUPTED and step.state == StepState.FAILED
    assert step.summary.startswith("The worker died mid-step (worker ")
    recovery = job.progress["recovery"]
    assert recovery["backend_pid"] == pid and recovery["ok"] is True
    assert recovery["backend"] in ("gone", "ended by Runway after 5 s"), recovery
    assert recovery["lock"] == "free" or recovery["lock"].startswith("free"), recovery
    assert recovery["database_at"] == "r1"
    assert f"Its migrating session (pid {pid}) is " in step.summary
    assert "The database is at r1 (r2 was rolled back). Resume runs r2, r3." in step.summary
    # PostgreSQL rolled the open revision back; nobody holds anything.
    assert version(db) == "r1" and applied(db) == ["r1"]
    assert no_session_in_a_transaction(db)
    with pg.connect(db.dsn, resolve(db.password_ref)) as conn:
        assert pg.migration_lock_holder(conn) is None
        assert pg.active_session(conn, pid) is None
    finished = AuditEvent.objects.get(action="run.step_finished")
    assert finished.details["recovery"]["database_at"] == "r1"
    assert AuditEvent.objects.filter(action="run_step.interrupted").exists()
    call_command("verify_audit")

    client = Client()
    client.force_login(engineer)
    page = client.get(run.get_absolute_url()).content.decode()
    assert ">Resume</button>" in page and "After the worker died" in page

    resumed = resume_here(engineer, run, settings)
    assert resumed.state == StepState.DONE, resumed.summary + resumed.output
    assert [(j.attempt, j.state) for j in resumed.jobs.all()] == [
        (1, JobState.INTERRUPTED),
        (2, JobState.SUCCEEDED),
    ]
    assert version(db) == "r3" and applied(db) == ["r1", "r2", "r3"]  # each exactly once
    call_command("verify_audit")
