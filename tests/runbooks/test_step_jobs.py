"""Run steps as jobs of the one lifecycle (kind ``run_step``): the cancel request reaches the
action, the heart beats while it works, and on REAL workers: a worker SIGKILLed in the middle of
a migration leaves an interrupted job, a failed step the run stops at, a database untouched, an
audit chain that verifies, and a retry that is a new job; two workers given one step run it
once."""

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
from helpers import alembic_project, runbook, wait_until, worker_process

from dashboard.audit.models import AuditEvent
from dashboard.jobs import lifecycle as jobs
from dashboard.jobs.models import JobState
from dashboard.lib import pg
from dashboard.lib.secrets import resolve
from runbooks import actions, engine, reports
from runbooks.models import RunState, StepJob, StepState

pytestmark = pytest.mark.django_db(transaction=True)

WAIT_THEN_APPROVE = """
id: waits
title: Waits
phases:
  - id: only
    title: Only
    steps:
      - id: wait
        action: test.wait
        title: Wait for a cancel
      - id: after
        approval: A lead approves
        role: lead
"""


def test_a_cancel_request_reaches_the_running_action_and_the_heart_beats(
    engineer: Any, analyticbot: Any, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    # This test is the worker: the session's real worker must not take the job first.
    settings.RUNWAY_JOB_QUEUE = f"nobody-listens-{os.getpid()}"
    monkeypatch.setitem(
        jobs.KINDS, "run_step", dataclasses.replace(jobs.KINDS["run_step"], heartbeat_every=0.1)
    )
    started = threading.Event()
    seen: list[bool] = []

    def wait(ctx: actions.Context) -> actions.Outcome:
        ctx.log("waiting for a cancel")
        started.set()
        seen.append(ctx.wait_for_cancel(20))  # what a watcher thread of a long statement does
        seen.append(ctx.cancel_requested)
        ctx.log("asked to stop: stopping")
        ctx.check_cancelled()
        return actions.Outcome("pass", "never asked")

    monkeypatch.setitem(
        actions.REGISTRY, "test.wait", actions.Action("test.wait", "W", False, wait)
    )
    run = engine.start_run(engineer, runbook(WAIT_THEN_APPROVE), analyticbot)
    job = run.steps.get(step_id="wait").job
    worker = threading.Thread(target=lambda: jobs.run("run_step", job.pk))
    worker.start()
    assert started.wait(20)
    wait_until(
        lambda: (
            StepJob.objects.get(pk=job.pk).heartbeat_at > StepJob.objects.get(pk=job.pk).started_at
        ),
        "a heartbeat while the action waits",
    )
    assert "waiting for a cancel" in run.steps.get(step_id="wait").output  # the live log
    engine.cancel_step(engineer, run, run.steps.get(step_id="wait"))
    worker.join(20)
    job.refresh_from_db()
    step = run.steps.get(step_id="wait")
    assert seen == [True, True]
    assert job.state == JobState.CANCELLED and job.cancel_requested_at is not None
    assert "asked to stop: stopping" in job.output
    assert step.state == StepState.FAILED and step.summary == "Cancelled: Cancelled on request."
    assert run.steps.get(step_id="after").state == StepState.WAITING  # the run stops there
    finished = AuditEvent.objects.get(action="run.step_finished")
    assert finished.details["job_state"] == "cancelled"
    assert AuditEvent.objects.filter(action="run.step_cancel_requested").exists()


# --- Real workers ---

BACKUP_THEN_UPGRADE = """
id: guarded
title: Guarded
needs_target: true
phases:
  - id: only
    title: Only
    steps:
      - id: backup
        action: backup.create
        title: Back up
      - id: validate-backup
        action: backup.validate
        title: Validate the backup
      - id: upgrade
        action: schema.upgrade
        title: Upgrade
      - id: integrity
        action: integrity.verify
        title: Verify
"""

# Sleeps (inside its transaction, after its DDL) only where the worker under test says so.
SLOW_REVISION = """
import os
op.execute("CREATE TABLE half_done (id integer)")
if os.environ.get("RUNWAY_TEST_SLOW_REVISION"):
    op.execute("SELECT pg_sleep(300)")
"""


def target_rows(db: Any, sql: str) -> list[Any]:
    with pg.connect(db.dsn, resolve(db.password_ref)) as conn:
        return conn.execute(sql).fetchall()


def test_a_worker_killed_mid_upgrade_is_reaped_the_step_fails_and_a_retry_is_a_new_job(
    worker_env: dict[str, str],
    tmp_path: Path,
    settings: Any,
    engineer: Any,
    live_target: Any,
    owner_may_create_databases: None,
) -> None:
    live_target.script_location = str(
        alembic_project(tmp_path / "app", ("r1", "0016", SLOW_REVISION))
    )
    live_target.save()
    queue = f"step-kill-{os.getpid()}"
    env = {**worker_env, "RUNWAY_TEST_SLOW_REVISION": "1"}
    with worker_process(env, queue, tmp_path / "w.log") as proc:
        settings.RUNWAY_JOB_QUEUE = queue
        run = engine.start_run(engineer, runbook(BACKUP_THEN_UPGRADE), live_target, "r1")

        def sleeping() -> bool:
            failed = run.steps.filter(state=StepState.FAILED).first()
            assert failed is None, f"{failed.step_id}: {failed.summary}\n{failed.output}"
            return bool(
                target_rows(
                    live_target,
                    "SELECT 1 FROM pg_stat_activity WHERE state = 'active' "
                    "AND query LIKE 'SELECT pg_sleep(300)%'",
                )
            )

        wait_until(sleeping, "the worker to reach the revision's long statement", 180)
        upgrade = run.steps.get(step_id="upgrade")
        job = upgrade.job
        assert job.state == JobState.RUNNING and upgrade.status == "running"
        # The heart beats from its own thread while the statement blocks the action.
        wait_until(
            lambda: StepJob.objects.get(pk=job.pk).heartbeat_at > job.started_at,
            "a heartbeat during the statement",
            15,
        )
        assert "half_done" in StepJob.objects.get(pk=job.pk).output  # its live log so far
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert jobs.reap(kinds=["run_step"]) == []  # it beat seconds ago: not yet
    stale_after = jobs.KINDS["run_step"].stale_seconds()
    later = timezone.now() + timedelta(seconds=stale_after + 1)
    reaped = jobs.reap(now=later, kinds=["run_step"])
    assert [r.job.pk for r in reaped] == [job.pk]

    job.refresh_from_db()
    upgrade.refresh_from_db()
    run.refresh_from_db()
    assert job.state == JobState.INTERRUPTED and job.worker.split(":")[-1] == str(proc.pid)
    assert upgrade.state == StepState.FAILED and upgrade.verdict == "fail"
    assert upgrade.summary.startswith(f"The worker died mid-step (worker {job.worker}")
    assert run.state == RunState.ACTIVE and run.phase_index == 0  # stopped at the step
    assert run.steps.get(step_id="integrity").state == StepState.WAITING
    assert "an engineer to retry “Upgrade” or abort" in engine.waiting_for(run)
    # Nothing half-done is listed as good: the database is where it was, nothing of the
    # revision is visible, no attempt of the upgrade succeeded, the report says failed.
    assert target_rows(live_target, "SELECT version_num FROM alembic_version") == [("0016",)]
    assert target_rows(live_target, "SELECT to_regclass('half_done')") == [(None,)]
    assert not StepJob.objects.filter(step=upgrade, state=JobState.SUCCEEDED).exists()
    assert upgrade.evidence == {}
    listed = {s["step"]: s for s in reports.summary(run)["steps"]}
    assert listed["upgrade"]["state"] == "failed"
    assert [a["state"] for a in listed["upgrade"]["attempts"]] == ["interrupted"]
    assert {e.action for e in reports.run_events(run)} >= {
        "run_step.interrupted",
        "run.step_finished",
    }
    call_command("verify_audit")

    # PostgreSQL ends the dead worker's session when its statement returns; here, now.
    target_rows(
        live_target,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    wait_until(
        lambda: (
            not target_rows(
                live_target,
                "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()",
            )
        ),
        "the dead worker's sessions to end",
    )
    settings.RUNWAY_JOB_QUEUE = f"{queue}-nobody"
    engine.retry(engineer, run, upgrade)
    again = run.steps.get(step_id="upgrade").job
    assert again.pk != job.pk and again.attempt == 2 and again.state == JobState.QUEUED
    jobs.run("run_step", again.pk)  # what a worker does with it; this process does not sleep
    upgrade.refresh_from_db()
    assert upgrade.state == StepState.DONE, upgrade.summary + upgrade.output
    assert [(j.attempt, j.state) for j in upgrade.jobs.all()] == [
        (1, JobState.INTERRUPTED),
        (2, JobState.SUCCEEDED),
    ]
    assert target_rows(live_target, "SELECT version_num FROM alembic_version") == [("r1",)]
    call_command("verify_audit")


VERIFY_THEN_APPROVE = """
id: verify
title: Verify
phases:
  - id: only
    title: Only
    steps:
      - id: verify
        action: integrity.verify
        title: Verify integrity
      - id: approve
        approval: A lead approves
        role: lead
"""


def test_two_workers_given_one_step_run_it_once(
    worker_env: dict[str, str], tmp_path: Path, settings: Any, engineer: Any, live_target: Any
) -> None:
    from dashboard.jobs.tasks import run_job

    queue = f"step-race-{os.getpid()}"
    with (
        worker_process(worker_env, queue, tmp_path / "a.log"),
        worker_process(worker_env, queue, tmp_path / "b.log"),
    ):
        settings.RUNWAY_JOB_QUEUE = queue
        run = engine.start_run(engineer, runbook(VERIFY_THEN_APPROVE), live_target)
        job = run.steps.get(step_id="verify").job
        for _ in range(4):  # the engine's message, and the same one four times more
            run_job.apply_async(("run_step", job.pk), queue=queue)

        def delivered() -> int:
            logs = (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
            return logs.count("succeeded in")

        wait_until(lambda: delivered() == 5, "five deliveries", 60)
        time.sleep(0.2)
    job.refresh_from_db()
    step = run.steps.get(step_id="verify")
    assert job.state == JobState.SUCCEEDED and job.attempts == 1
    assert step.state == StepState.DONE and step.jobs.count() == 1
    assert AuditEvent.objects.filter(action="run.step_started").count() == 1
    assert AuditEvent.objects.filter(action="run.step_finished").count() == 1
    assert run.steps.get(step_id="approve").state == StepState.OPEN
