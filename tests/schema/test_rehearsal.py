"""Rehearsals for real: copies made on the test cluster (TEMPLATE, or a restored backup), the
revisions run by Alembic on the copy, lock waits read from pg_locks, the copy dropped; the job
lifecycle's heartbeat, cancel and reaper on rehearsals; real workers killed mid-revision and
racing for one rehearsal."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.core.management import call_command
from django.utils import timezone
from helpers import ROOT, TARGET_PASSWORD, TARGET_ROLE, make_database, wait_until, worker_process
from helpers import alembic_project as project

from dashboard.audit.chain import verify
from dashboard.audit.models import AuditEvent
from dashboard.backups import pipeline, validation
from dashboard.backups.models import Backup, Validation
from dashboard.databases.models import ConnectionCheck
from dashboard.jobs import lifecycle as jobs
from dashboard.schema import gates, rehearsal
from dashboard.schema.models import Rehearsal
from devstack.cluster import Cluster

pytestmark = pytest.mark.django_db

PENDING = ["0017", "0018", "0019", "0020"]


def checked(db: Any, *current: str) -> Any:
    return ConnectionCheck.objects.create(
        database=db, state="succeeded", current_revisions=list(current), finished_at=timezone.now()
    )


def rehearse(db: Any, actor: Any = None) -> Rehearsal:
    requested = rehearsal.request_rehearsal(actor, db, enqueue=False)
    done = jobs.run("rehearsal", requested.pk)
    assert isinstance(done, Rehearsal)
    return done


def copies(cluster: Cluster) -> list[str]:
    """This test's rehearsal copies still on the cluster (there should be none left). Only
    its own: the session's worker may be rehearsing for a test that has ended (its job sent
    when that test's request committed), on this same cluster."""
    ours = {f"runway_rehearsal_{pk}" for pk in Rehearsal.objects.values_list("pk", flat=True)}
    with psycopg.connect(cluster.dsn()) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'runway_rehearsal_%'"
        ).fetchall()
    return [row[0] for row in rows if row[0] in ours]


def revision_of(db: Any) -> str:
    with psycopg.connect(db.dsn, password=TARGET_PASSWORD) as conn:
        return str(conn.execute("SELECT version_num FROM alembic_version").fetchone()[0])  # type: ignore[index]


def actions_of(done: Rehearsal) -> list[str]:
    events = AuditEvent.objects.filter(object_type="rehearsal", object_id=str(done.pk))
    return list(events.order_by("id").values_list("action", flat=True))


def back_up_and_validate(db: Any) -> Backup:
    backup = jobs.run("backup", pipeline.request_backup(None, db, enqueue=False).pk)
    assert isinstance(backup, Backup) and backup.completed, backup and backup.error
    proof = jobs.run("validation", validation.request_validation(None, backup, enqueue=False).pk)
    assert isinstance(proof, Validation) and proof.outcome == "passed", proof and proof.error
    return backup


# A second session (as the application would be) holds users' ACCESS EXCLUSIVE lock for 0.6 s;
# the revision's own LOCK waits for it.
CONTENDED = """
url = op.get_bind().engine.url.set(drivername="postgresql")
held = threading.Event()

def application():
    with psycopg.connect(
        host=url.host, port=url.port, dbname=url.database, user=url.username,
        password=url.password, autocommit=True,
    ) as other:
        with other.transaction():
            other.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
            held.set()
            other.execute("SELECT pg_sleep(0.6)")

holder = threading.Thread(target=application)
holder.start()
held.wait(10)
op.execute("LOCK TABLE users IN SHARE MODE")
holder.join()
"""


# --- Asking ---


def test_a_request_records_the_pending_revisions_oldest_first_and_is_audited(
    checked_target: Any, engineer: Any
) -> None:
    requested = rehearsal.request_rehearsal(engineer, checked_target, enqueue=False)
    assert requested.state == "queued"
    assert requested.from_revisions == ["0016"]
    assert requested.revisions == PENDING
    assert requested.to_revision == "0020"
    assert requested.requested_by == engineer
    event = AuditEvent.objects.get(action="schema.rehearsal_requested")
    assert event.actor_name == "erin"
    assert event.details["revisions"] == PENDING and event.details["to"] == "0020"


def test_a_request_is_refused_while_the_current_revision_is_unknown() -> None:
    db = make_database()
    with pytest.raises(rehearsal.RehearsalError, match="not known: test its connection first"):
        rehearsal.request_rehearsal(None, db)
    assert not Rehearsal.objects.exists()


def test_a_request_is_refused_when_nothing_is_pending() -> None:
    db = make_database()
    checked(db, "0020")
    with pytest.raises(rehearsal.RehearsalError, match="Nothing is pending on analyticbot"):
        rehearsal.request_rehearsal(None, db)
    assert not AuditEvent.objects.filter(action="schema.rehearsal_requested").exists()


def test_a_request_is_refused_when_the_database_is_at_a_revision_no_script_defines() -> None:
    db = make_database()
    checked(db, "0a1b2c3d")
    with pytest.raises(rehearsal.RehearsalError, match="0a1b2c3d, which no script"):
        rehearsal.request_rehearsal(None, db)


# --- The template method ---


def test_a_quiet_database_is_copied_with_template_and_every_revision_is_timed(
    checked_target: Any, owner_may_create_databases: None, pg_cluster: Cluster, lead: Any
) -> None:
    done = rehearse(checked_target, lead)
    assert done.state == "succeeded", done.error
    assert (done.method, done.backup_id) == ("template", None)
    assert [t["revision"] for t in done.timings] == PENDING
    assert all(t["ok"] and t["error"] == "" for t in done.timings)
    assert all(t["seconds"] > 0 and t["lock_wait_ms"] >= 0 for t in done.timings)
    assert done.total_seconds == pytest.approx(sum(t["seconds"] for t in done.timings), abs=0.01)
    assert done.copy_seconds > 0
    assert done.longest_lock_wait_ms == max(t["lock_wait_ms"] for t in done.timings)
    assert done.started_at <= done.heartbeat_at <= done.finished_at
    assert (done.error, done.drop_error) == ("", "")
    assert copies(pg_cluster) == []
    assert revision_of(checked_target) == "0016"  # the source itself is untouched
    assert actions_of(done) == [
        "schema.rehearsal_requested",
        "schema.rehearsal_started",
        "schema.rehearsed",
    ]
    finished = AuditEvent.objects.get(action="schema.rehearsed")
    assert finished.details["state"] == "succeeded" and finished.details["method"] == "template"
    assert finished.details["total_seconds"] == done.total_seconds
    assert verify().ok


def test_a_revision_that_sleeps_is_timed_at_least_that_long(
    checked_target: Any, owner_may_create_databases: None, tmp_path: Path
) -> None:
    folder = project(tmp_path / "app", ("s1", "0016", "op.execute('SELECT pg_sleep(0.3)')"))
    checked_target.script_location = str(folder)
    checked_target.save()
    done = rehearse(checked_target)
    assert done.state == "succeeded", done.error
    assert [t["revision"] for t in done.timings] == ["s1"]
    assert 0.3 <= done.timings[0]["seconds"] < 5


def test_a_lock_wait_inside_a_revision_is_measured(
    checked_target: Any, owner_may_create_databases: None, tmp_path: Path, pg_cluster: Cluster
) -> None:
    folder = project(
        tmp_path / "app",
        ("quick", "0016", "op.execute('CREATE TABLE notes (id int)')"),
        ("locked", "quick", CONTENDED),
    )
    checked_target.script_location = str(folder)
    checked_target.save()
    done = rehearse(checked_target)
    assert done.state == "succeeded", done.error
    quick, locked = done.timings
    assert quick["lock_wait_ms"] < 100
    # Sampled every 50 ms: the wait (about 600 ms) is seen, and never longer than the revision.
    assert 300 <= locked["lock_wait_ms"] <= locked["seconds"] * 1000
    assert done.longest_lock_wait_ms == locked["lock_wait_ms"]
    assert copies(pg_cluster) == []


def test_a_failing_revision_stops_the_rehearsal_and_the_copy_is_still_dropped(
    checked_target: Any, owner_may_create_databases: None, tmp_path: Path, pg_cluster: Cluster
) -> None:
    folder = project(
        tmp_path / "app",
        ("good", "0016", "op.execute('CREATE TABLE notes (id int)')"),
        ("bad", "good", "op.execute('SELECT 1/0')"),
        ("never", "bad", "pass"),
    )
    checked_target.script_location = str(folder)
    checked_target.save()
    done = rehearse(checked_target)
    assert done.state == "failed"
    good, bad = done.timings  # "never" was not run
    assert good["ok"] and good["error"] == ""
    assert (bad["revision"], bad["ok"]) == ("bad", False)
    assert "division by zero" in bad["error"] and TARGET_PASSWORD not in bad["error"]
    assert bad["seconds"] > 0
    assert done.error == (
        "Revision bad failed: DivisionByZero: division by zero "
        "(database_error, line 13 of versions/bad_step.py)"
    )
    assert done.total_seconds == pytest.approx(good["seconds"] + bad["seconds"], abs=0.01)
    assert copies(pg_cluster) == []
    assert revision_of(checked_target) == "0016"
    finished = AuditEvent.objects.get(action="schema.rehearsed")
    assert finished.details["state"] == "failed" and finished.details["failed_revision"] == "bad"


RECORD_WHERE = """
import json, os
found = op.get_bind().execute(sa.text("SELECT current_database()")).scalar()
argv = open("/proc/self/cmdline", "rb").read().decode().split("\\0")[:-1]
open({path!r}, "w").write(json.dumps({{"database": found, "argv": argv}}))
"""


def test_a_project_mode_database_is_rehearsed_through_its_own_alembic(
    checked_target: Any,
    owner_may_create_databases: None,
    tmp_path: Path,
    settings: Any,
    pg_cluster: Cluster,
) -> None:
    seen = tmp_path / "seen.json"
    folder = project(
        tmp_path / "app",
        ("o1", "0016", "import sqlalchemy as sa\n" + RECORD_WHERE.format(path=str(seen))),
    )
    shutil.copy(ROOT / "migrations_target" / "alembic.ini", folder / "alembic.ini")
    settings.RUNWAY_PROJECT_PYTHONS = [sys.executable]
    checked_target.script_location = str(folder)
    checked_target.run_mode = "project"
    checked_target.project_python = sys.executable
    checked_target.save()
    done = rehearse(checked_target)
    assert done.state == "succeeded", done.error
    record = json.loads(seen.read_text())
    assert record["database"] == rehearsal.copy_name(done.pk)  # on the copy, not the source
    assert record["argv"][1:4] == ["-m", "alembic", "-c"] and record["argv"][-1] == "o1"
    assert revision_of(checked_target) == "0016"
    assert copies(pg_cluster) == []


def test_a_project_mode_rehearsal_with_a_refused_interpreter_copies_nothing(
    checked_target: Any, tmp_path: Path, settings: Any
) -> None:
    settings.RUNWAY_PROJECT_PYTHONS = []
    checked_target.run_mode = "project"
    checked_target.project_python = "/usr/bin/python3"
    checked_target.save()
    done = rehearse(checked_target)
    assert done.state == "failed" and done.method == ""
    assert done.error.startswith(
        "Refused to run the project's alembic: /usr/bin/python3 is not one of the interpreters"
    )


def test_an_unresolvable_password_fails_the_rehearsal_instead_of_leaving_it_running(
    checked_target: Any,
) -> None:
    checked_target.password_ref = "env:RUNWAY_DB_TEST_NO_SUCH_PASSWORD"
    checked_target.bind_secret(None)
    checked_target.save()
    done = rehearse(checked_target)
    assert done.state == "failed"
    assert "The password reference cannot be resolved" in done.error
    assert done.finished_at is not None and done.timings == []
    assert actions_of(done)[-1] == "schema.rehearsed"


# --- The backup method ---


def test_a_busy_database_is_copied_from_its_latest_validated_backup(
    checked_target: Any,
    owner_may_create_databases: None,
    local_store: Path,
    scratch_server: Cluster,
) -> None:
    older = back_up_and_validate(checked_target)
    backup = back_up_and_validate(checked_target)
    assert backup.pk > older.pk
    with psycopg.connect(checked_target.dsn, password=TARGET_PASSWORD):  # the application
        done = rehearse(checked_target)
    assert done.state == "succeeded", done.error
    assert (done.method, done.backup_id) == ("backup", backup.pk)
    assert [t["revision"] for t in done.timings] == PENDING
    assert all(t["ok"] for t in done.timings)
    assert done.copy_seconds > 0 and done.drop_error == ""
    assert copies(scratch_server) == []
    assert revision_of(checked_target) == "0016"
    finished = AuditEvent.objects.get(action="schema.rehearsed")
    assert (finished.details["method"], finished.details["backup"]) == ("backup", backup.pk)


def test_a_busy_database_without_a_validated_backup_fails_with_the_reason(
    checked_target: Any, owner_may_create_databases: None, pg_cluster: Cluster
) -> None:
    Backup.objects.create(database=checked_target, state="succeeded", revision="0016")
    source = checked_target.dsn.split("dbname=")[1].split()[0]
    with psycopg.connect(pg_cluster.dsn(source)):  # another role's session is counted too
        done = rehearse(checked_target)
    assert done.state == "failed"
    assert done.error == (
        f"1 session is connected to {source} and no validated backup exists: take and validate "
        "a backup first."
    )
    assert (done.method, done.timings) == ("", [])
    assert copies(pg_cluster) == []


def test_a_role_that_may_not_copy_the_database_is_named(
    checked_target: Any, pg_cluster: Cluster
) -> None:
    done = rehearse(checked_target)
    assert done.state == "failed"
    assert "app_owner may not copy" in done.error and "CREATEDB" in done.error
    assert "no validated backup exists" in done.error


def test_a_backup_at_another_revision_is_not_rehearsed_on(
    checked_target: Any, local_store: Path, scratch_server: Cluster
) -> None:
    backup = back_up_and_validate(checked_target)
    Backup.objects.filter(pk=backup.pk).update(revision="0015")
    done = rehearse(checked_target)
    assert done.state == "failed"
    assert f"the newest validated backup #{backup.pk} is at 0015" in done.error
    assert copies(scratch_server) == []


# --- Once, and never left running ---


def test_a_rehearsal_runs_once_even_if_run_twice(checked_target: Any) -> None:
    requested = rehearsal.request_rehearsal(None, checked_target, enqueue=False)
    assert jobs.run("rehearsal", requested.pk) is not None
    assert jobs.run("rehearsal", requested.pk) is None  # the task delivered again
    assert actions_of(requested).count("schema.rehearsed") == 1


def test_the_kinds_declare_their_own_timeouts_and_clean_up() -> None:
    kind = jobs.KINDS["rehearsal"]
    assert (kind.model, kind.stale_seconds(), kind.queued_after) == (Rehearsal, 120, 3600)
    assert kind.heartbeat_every < kind.stale_after and kind.max_attempts == 1
    assert kind.on_interrupted is not None
    gate_run = jobs.KINDS["gate_run"]
    assert (gate_run.stale_seconds(), gate_run.queued_after, gate_run.on_interrupted) == (
        60,
        600,
        None,
    )


def left_running(db: Any, method: str, beat_minutes_ago: float = 60) -> Rehearsal:
    """A rehearsal as a worker that died mid-run leaves it."""
    beat = timezone.now() - timedelta(minutes=beat_minutes_ago)
    return Rehearsal.objects.create(
        database=db,
        state="running",
        method=method,
        started_at=beat,
        heartbeat_at=beat,
        worker="w1:99",
        revisions=PENDING,
    )


@pytest.mark.parametrize("method", ["template", "backup"])
def test_the_reaper_interrupts_a_rehearsal_whose_heart_stopped_and_drops_its_copy(
    checked_target: Any, pg_cluster: Cluster, scratch_server: Cluster, method: str
) -> None:
    left = left_running(checked_target, method)
    alive = left_running(checked_target, method, beat_minutes_ago=0)
    pg_cluster.execute(f"CREATE DATABASE {rehearsal.copy_name(left.pk)} OWNER {TARGET_ROLE}")
    reaped = jobs.reap(kinds=["rehearsal"])
    assert [r.job.pk for r in reaped] == [left.pk]
    left.refresh_from_db()
    alive.refresh_from_db()
    assert left.state == "interrupted" and "w1:99" in left.error
    assert alive.state == "running"
    assert copies(pg_cluster) == [] and left.drop_error == ""
    assert actions_of(left) == ["rehearsal.interrupted"]
    assert rehearsal.latest_rehearsal(checked_target, PENDING) is None
    assert (
        "was interrupted before it finished"
        in gates.rehearsal_gate(checked_target, PENDING).summary
    )
    assert verify().ok


def test_a_rehearsal_interrupted_before_its_copy_existed_has_nothing_to_drop(
    checked_target: Any, pg_cluster: Cluster
) -> None:
    left = left_running(checked_target, method="")
    jobs.reap(kinds=["rehearsal"])
    left.refresh_from_db()
    assert left.state == "interrupted" and left.drop_error == ""


def test_the_latest_rehearsal_is_the_newest_succeeded_one_of_exactly_these_revisions(
    checked_target: Any,
) -> None:
    now = timezone.now()

    def made(state: str, revisions: list[str], minutes_ago: int) -> Rehearsal:
        return Rehearsal.objects.create(
            database=checked_target,
            state=state,
            revisions=revisions,
            finished_at=now - timedelta(minutes=minutes_ago),
        )

    made("succeeded", PENDING, 30)
    wanted = made("succeeded", PENDING, 20)
    made("failed", PENDING, 10)
    made("interrupted", PENDING, 8)
    made("cancelled", PENDING, 6)
    made("succeeded", PENDING[1:], 5)
    made("running", PENDING, 1)
    assert rehearsal.latest_rehearsal(checked_target, PENDING) == wanted
    assert rehearsal.latest_rehearsal(checked_target, ["0020"]) is None
    assert rehearsal.latest_rehearsal(make_database(name="other"), PENDING) is None


# --- The lifecycle while a revision runs (other threads must see the rows: committed) ---

QUICK = ("s1", "0016", "op.execute('CREATE TABLE notes (id int)')")


def sleeping_on(cluster: Cluster, name: str) -> bool:
    """A session on the copy ``name`` is in pg_sleep (a revision is running there)."""
    with psycopg.connect(cluster.dsn()) as conn:
        found = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND query LIKE %s",
            [name, "%pg_sleep%"],
        ).fetchone()
    return bool(found and found[0])


def in_a_thread(rehearsal_id: int) -> threading.Thread:
    """Run the rehearsal as a worker would, in a thread of this process."""

    def work() -> None:
        from django.db import connection

        try:
            jobs.run("rehearsal", rehearsal_id)
        finally:
            connection.close()

    thread = threading.Thread(target=work)
    thread.start()
    return thread


@pytest.fixture
def quick_beats(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rehearsal kind, beating ten times a second (its work unchanged)."""
    import dataclasses

    fast = dataclasses.replace(jobs.KINDS["rehearsal"], heartbeat_every=0.1)
    monkeypatch.setitem(jobs.KINDS, "rehearsal", fast)


@pytest.mark.django_db(transaction=True)
def test_the_heart_beats_and_the_row_shows_progress_while_a_revision_runs(
    checked_target: Any,
    owner_may_create_databases: None,
    tmp_path: Path,
    pg_cluster: Cluster,
    quick_beats: None,
) -> None:
    folder = project(tmp_path / "app", QUICK, ("s2", "s1", "op.execute('SELECT pg_sleep(1.5)')"))
    checked_target.script_location = str(folder)
    checked_target.save()
    requested = rehearsal.request_rehearsal(None, checked_target, enqueue=False)
    name = rehearsal.copy_name(requested.pk)
    seen: list[tuple[Any, list[str]]] = []
    runner = in_a_thread(requested.pk)
    wait_until(lambda: sleeping_on(pg_cluster, name), "s2 to sleep on the copy")
    while sleeping_on(pg_cluster, name):
        row = Rehearsal.objects.get(pk=requested.pk)
        seen.append((row.heartbeat_at, [t["revision"] for t in row.timings]))
        time.sleep(0.05)
    runner.join(30)
    beats = {beat for beat, _ in seen}
    assert len(beats) >= 5, "the heart stopped while the revision ran"
    assert all(timed == ["s1"] for _, timed in seen)  # s1's time is shown while s2 runs
    done = Rehearsal.objects.get(pk=requested.pk)
    assert done.state == "succeeded" and [t["revision"] for t in done.timings] == ["s1", "s2"]
    assert done.attempts == 1 and done.worker


@pytest.mark.django_db(transaction=True)
def test_a_cancel_stops_the_rehearsal_before_its_next_revision_and_drops_the_copy(
    checked_target: Any,
    owner_may_create_databases: None,
    tmp_path: Path,
    pg_cluster: Cluster,
    quick_beats: None,
) -> None:
    folder = project(
        tmp_path / "app",
        ("s1", "0016", "op.execute('SELECT pg_sleep(1)')"),
        ("s2", "s1", "op.execute('CREATE TABLE notes (id int)')"),
    )
    checked_target.script_location = str(folder)
    checked_target.save()
    requested = rehearsal.request_rehearsal(None, checked_target, enqueue=False)
    runner = in_a_thread(requested.pk)
    wait_until(lambda: sleeping_on(pg_cluster, rehearsal.copy_name(requested.pk)), "s1 to run")
    assert requested.request_cancel()
    runner.join(30)
    done = Rehearsal.objects.get(pk=requested.pk)
    assert done.state == "cancelled" and done.error == "Cancelled on request."
    assert [t["revision"] for t in done.timings] == ["s1"]  # s2 never ran
    assert copies(pg_cluster) == []
    finished = AuditEvent.objects.get(action="schema.rehearsed")
    assert finished.details["state"] == "cancelled"
    summary = gates.rehearsal_gate(checked_target, ["s1", "s2"]).summary
    assert "was cancelled before it finished" in summary
    assert rehearsal.latest_rehearsal(checked_target, ["s1", "s2"]) is None


# --- Through the real worker ---


@pytest.mark.django_db(transaction=True)
def test_the_worker_rehearses_a_database(
    celery_worker: Path,
    checked_target: Any,
    owner_may_create_databases: None,
    pg_cluster: Cluster,
    lead: Any,
) -> None:
    requested = rehearsal.request_rehearsal(lead, checked_target)
    wait_until(lambda: Rehearsal.objects.get(pk=requested.pk).is_done, "the worker's rehearsal", 60)
    done = Rehearsal.objects.get(pk=requested.pk)
    assert done.state == "succeeded", done.error
    assert done.method == "template"
    assert [t["revision"] for t in done.timings] == PENDING
    assert copies(pg_cluster) == []
    assert rehearsal.latest_rehearsal(checked_target, PENDING) == done


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_revision_is_reaped_and_nothing_half_done_is_listed_as_good(
    worker_env: dict[str, str],
    checked_target: Any,
    owner_may_create_databases: None,
    tmp_path: Path,
    pg_cluster: Cluster,
    settings: Any,
) -> None:
    folder = project(tmp_path / "app", QUICK, ("s2", "s1", "op.execute('SELECT pg_sleep(600)')"))
    checked_target.script_location = str(folder)
    checked_target.save()
    queue = f"kill-rehearsal-{os.getpid()}"
    with worker_process(worker_env, queue, tmp_path / "worker.log") as proc:
        settings.RUNWAY_JOB_QUEUE = queue
        requested = rehearsal.request_rehearsal(None, checked_target)
        name = rehearsal.copy_name(requested.pk)
        wait_until(lambda: sleeping_on(pg_cluster, name), "the worker to run s2 on the copy", 60)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    left = Rehearsal.objects.get(pk=requested.pk)
    assert left.state == "running" and left.method == "template"  # nobody has said otherwise
    assert [t["revision"] for t in left.timings] == ["s1"]  # s1 ran: progress, not a result
    timeout = jobs.KINDS["rehearsal"].stale_seconds()
    assert (
        jobs.reap(now=left.heartbeat_at + timedelta(seconds=timeout / 2), kinds=["rehearsal"]) == []
    )
    later = left.heartbeat_at + timedelta(seconds=timeout + 1)
    reaped = jobs.reap(now=later, kinds=["rehearsal"])
    assert [r.job.pk for r in reaped] == [requested.pk]
    left.refresh_from_db()
    assert left.state == "interrupted" and left.finished_at is not None
    assert copies(pg_cluster) == [] and left.drop_error == ""  # s2's session went with it
    assert not sleeping_on(pg_cluster, name)
    # Nothing half-done is listed as good: not the timings, not the gate, not the pages.
    assert rehearsal.latest_rehearsal(checked_target, ["s1", "s2"]) is None
    gate = gates.rehearsal_gate(checked_target, ["s1", "s2"])
    assert gate.verdict == "fail" and "was interrupted before it finished" in gate.summary
    assert revision_of(checked_target) == "0016"
    call_command("verify_audit")


@pytest.mark.django_db(transaction=True)
def test_two_workers_given_the_same_rehearsal_run_it_once(
    worker_env: dict[str, str],
    checked_target: Any,
    owner_may_create_databases: None,
    tmp_path: Path,
    pg_cluster: Cluster,
) -> None:
    from dashboard.jobs.tasks import run_job

    queue = f"race-rehearsal-{os.getpid()}"
    with (
        worker_process(worker_env, queue, tmp_path / "a.log"),
        worker_process(worker_env, queue, tmp_path / "b.log"),
    ):
        requested = rehearsal.request_rehearsal(None, checked_target, enqueue=False)
        for _ in range(4):  # the same message delivered four times, to two workers
            run_job.apply_async(("rehearsal", requested.pk), queue=queue)

        def delivered() -> int:
            logs = (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
            return logs.count("succeeded in")

        wait_until(lambda: delivered() == 4, "four deliveries", 60)
    done = Rehearsal.objects.get(pk=requested.pk)
    assert done.state == "succeeded" and done.attempts == 1, done.error
    assert [t["revision"] for t in done.timings] == PENDING
    assert actions_of(done).count("schema.rehearsal_started") == 1
    assert actions_of(done).count("schema.rehearsed") == 1
    assert copies(pg_cluster) == []
