"""The one job lifecycle (dashboard/jobs): claim, heartbeat, retry, cancel, reap.

In-process tests run the real lifecycle on real rows, with the kind's work replaced where a test
needs work of a given shape; the real-worker tests kill and race real Celery processes."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone
from helpers import SilentServer, make_database, wait_until, worker_process

from dashboard.audit.models import AuditEvent
from dashboard.databases import checks
from dashboard.databases.models import ConnectionCheck
from dashboard.jobs import lifecycle as jobs
from dashboard.jobs.models import JobState

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def kind(monkeypatch: pytest.MonkeyPatch):
    """The connection check's kind with its work replaced by ``work`` (set by the test)."""
    real = jobs.KINDS["connection_check"]
    holder: dict[str, Any] = {}

    def use(work, **changes) -> jobs.Kind:
        replaced = dataclasses.replace(real, perform=work, **changes)
        monkeypatch.setitem(jobs.KINDS, "connection_check", replaced)
        holder["kind"] = replaced
        return replaced

    return use


def queued(**kwargs: Any) -> ConnectionCheck:
    db = make_database(name=kwargs.pop("name", "analyticbot"))
    return ConnectionCheck.objects.create(database=db, **kwargs)


def test_two_claimers_race_and_exactly_one_runs_the_job(kind) -> None:
    ran: list[int] = []
    kind(lambda job, ctx: (ran.append(job.pk), time.sleep(0.2)))
    job = queued()
    barrier = threading.Barrier(4)
    results: list[Any] = []

    def claimer() -> None:
        barrier.wait()
        results.append(jobs.run("connection_check", job.pk))
        from django.db import connection

        connection.close()

    threads = [threading.Thread(target=claimer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    job.refresh_from_db()
    assert ran == [job.pk] and job.attempts == 1
    assert job.state == JobState.SUCCEEDED
    assert sum(1 for r in results if r is not None) == 1


def test_a_job_that_raises_fails_with_the_reason_audited(kind) -> None:
    kind(lambda job, ctx: 1 / 0)
    job = jobs.run("connection_check", queued().pk)
    assert job is not None and job.state == JobState.FAILED
    assert job.error == "ZeroDivisionError: division by zero" and job.finished_at is not None
    event = AuditEvent.objects.get(action="connection_check.failed")
    assert event.details["reason"] == job.error


def test_a_transient_failure_is_requeued_then_given_up_on(kind, broker) -> None:
    def flaky(job, ctx):
        raise jobs.Transient("the server is starting up")

    kind(flaky, max_attempts=2, retry_backoff=60)
    job = queued()
    first = jobs.run("connection_check", job.pk)
    assert first is not None and first.state == JobState.QUEUED and first.attempts == 1
    assert "Attempt 1 failed, retrying: the server is starting up" in first.error
    second = jobs.run("connection_check", job.pk)
    assert second is not None and second.state == JobState.FAILED
    assert second.error == "Gave up after 2 attempts: the server is starting up"
    assert AuditEvent.objects.filter(action="connection_check.requeued").count() == 1


def test_a_queued_job_is_cancelled_at_once_and_never_runs(kind) -> None:
    ran: list[int] = []
    kind(lambda job, ctx: ran.append(job.pk))
    job = queued()
    assert job.request_cancel()
    assert jobs.run("connection_check", job.pk) is None
    job.refresh_from_db()
    assert job.state == JobState.CANCELLED and ran == []


def test_a_running_job_sees_its_cancel_request_and_stops(kind) -> None:
    started = threading.Event()

    def long(job, ctx):
        started.set()
        for _ in range(200):
            ctx.check_cancelled()
            time.sleep(0.05)

    kind(long, heartbeat_every=0.1)
    job = queued()
    runner = threading.Thread(target=lambda: jobs.run("connection_check", job.pk))
    runner.start()
    assert started.wait(10)
    assert job.request_cancel()
    runner.join(15)
    job.refresh_from_db()
    assert job.state == JobState.CANCELLED and job.cancel_requested_at is not None
    assert AuditEvent.objects.filter(action="connection_check.cancelled").exists()


def test_the_heart_beats_while_the_job_works(kind) -> None:
    beats: list[Any] = []

    def slow(job, ctx):
        for _ in range(6):
            time.sleep(0.1)
            beats.append(type(job).objects.get(pk=job.pk).heartbeat_at)

    kind(slow, heartbeat_every=0.1)
    jobs.run("connection_check", queued().pk)
    assert len(set(beats)) >= 3


def test_the_reaper_interrupts_a_job_whose_heart_stopped_and_cleans_up(kind) -> None:
    cleaned: list[int] = []
    kind(lambda job, ctx: None, on_interrupted=lambda job: cleaned.append(job.pk))
    old = timezone.now() - timedelta(minutes=10)
    dead = queued(state=JobState.RUNNING, heartbeat_at=old, started_at=old, worker="w1:7")
    alive = queued(name="other", state=JobState.RUNNING, heartbeat_at=timezone.now())

    reaped = jobs.reap(kinds=["connection_check"])

    assert [r.job.pk for r in reaped] == [dead.pk]
    dead.refresh_from_db()
    alive.refresh_from_db()
    assert dead.state == JobState.INTERRUPTED and "w1:7" in dead.error
    assert alive.state == JobState.RUNNING and cleaned == [dead.pk]
    assert AuditEvent.objects.get(action="connection_check.interrupted").details["job"] == dead.pk
    assert not dead.beat()  # a worker that comes back learns it lost the job


def test_a_beat_that_lands_first_wins_against_the_reaper(kind) -> None:
    kind(lambda job, ctx: None)
    old = timezone.now() - timedelta(minutes=10)
    job = queued(state=JobState.RUNNING, heartbeat_at=old)
    seen = job.heartbeat_at
    assert job.beat()  # the worker reports between the reaper's read and its update
    assert not job.interrupt("stale", heartbeat=seen)
    job.refresh_from_db()
    assert job.state == JobState.RUNNING


def test_a_job_nobody_took_is_interrupted_saying_so(kind) -> None:
    kind(lambda job, ctx: None)
    job = queued(requested_at=timezone.now() - timedelta(hours=1))
    jobs.reap(kinds=["connection_check"])
    job.refresh_from_db()
    assert job.state == JobState.INTERRUPTED and "no worker took it" in job.error


def test_the_stale_timeout_is_set_per_kind(settings) -> None:
    kind = jobs.KINDS["connection_check"]
    assert kind.stale_seconds() == 60
    settings.RUNWAY_JOB_STALE_SECONDS = {"connection_check": 5}
    assert kind.stale_seconds() == 5


def test_the_queryset_finds_active_and_stale_jobs(kind) -> None:
    kind(lambda job, ctx: None)
    old = timezone.now() - timedelta(minutes=10)
    stale = queued(state=JobState.RUNNING, heartbeat_at=old)
    fresh = queued(name="b", state=JobState.RUNNING, heartbeat_at=timezone.now())
    waiting = queued(name="c")
    done = queued(name="d", state=JobState.SUCCEEDED)
    assert set(ConnectionCheck.objects.active()) == {stale, fresh, waiting}
    assert list(ConnectionCheck.objects.stale()) == [stale]
    assert done.is_done and not done.is_active


# --- Real workers ---


def test_a_worker_killed_mid_check_is_reaped_and_the_chain_verifies(
    worker_env: dict[str, str], tmp_path: Path, settings: Any
) -> None:
    silent = SilentServer()
    try:
        env = {**worker_env, "RUNWAY_CONNECT_TIMEOUT": "60"}
        with worker_process(env, f"kill-{os.getpid()}", tmp_path / "w.log") as proc:
            settings.RUNWAY_JOB_QUEUE = f"kill-{os.getpid()}"
            db = make_database(dsn=f"host=127.0.0.1 port={silent.port} dbname=x user=x")
            check = checks.request_check(None, db)
            wait_until(
                lambda: ConnectionCheck.objects.get(pk=check.pk).state == JobState.RUNNING,
                "the worker to start the check",
            )
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        check.refresh_from_db()
        assert check.state == JobState.RUNNING  # nobody has said otherwise yet
        later = timezone.now() + timedelta(seconds=61)
        reaped = jobs.reap(now=later, kinds=["connection_check"])
        assert [r.job.pk for r in reaped] == [check.pk]
        check.refresh_from_db()
        assert check.state == JobState.INTERRUPTED and not check.connected
        assert not ConnectionCheck.objects.connected().filter(pk=check.pk).exists()
        call_command("verify_audit")
    finally:
        silent.close()


def test_two_workers_given_the_same_job_run_it_once(
    worker_env: dict[str, str], tmp_path: Path, make_target: Any, settings: Any
) -> None:
    from dashboard.jobs.tasks import run_job

    queue = f"race-{os.getpid()}"
    with (
        worker_process(worker_env, queue, tmp_path / "a.log"),
        worker_process(worker_env, queue, tmp_path / "b.log"),
    ):
        settings.RUNWAY_JOB_QUEUE = queue
        db = make_database(dsn=make_target())
        check = ConnectionCheck.objects.create(database=db)
        for _ in range(4):  # the same message delivered four times, to two workers
            run_job.apply_async(("connection_check", check.pk), queue=queue)

        def delivered() -> int:
            logs = (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
            return logs.count("succeeded in")

        wait_until(lambda: delivered() == 4, "four deliveries")  # each claimed, or dropped
        check.refresh_from_db()
        assert check.connected and check.attempts == 1
        assert AuditEvent.objects.filter(action="database.checked").count() == 1
