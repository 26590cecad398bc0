"""The engine: phases open in order, checks are ticked with notes, approvals are four-eyes and
pinned to what was reviewed, a rejection stops the run, failures stop a phase and can be retried."""

from __future__ import annotations

import dataclasses

import pytest
from helpers import CHECKS_THEN_APPROVAL, checked, make_database, make_user
from helpers import runbook as book

from dashboard.audit.models import AuditEvent
from dashboard.jobs import lifecycle as jobs
from dashboard.jobs.models import JobState
from runbooks import engine
from runbooks.models import Approval, RunState, StepState

pytestmark = pytest.mark.django_db


def start(engineer, db, text=CHECKS_THEN_APPROVAL, target="0020"):
    return engine.start_run(engineer, book(text), db, target)


def step(run, step_id):
    return run.steps.get(step_id=step_id)


def perform(step):
    """What a worker does with the step's queued job (its current attempt)."""
    return jobs.run("run_step", step.job.pk)


def test_a_run_records_what_is_pending_and_opens_the_first_phase(engineer, analyticbot):
    run = start(engineer, analyticbot)
    assert run.revisions == ["0017", "0018", "0019", "0020"]
    assert run.from_revisions == ["0016"]
    assert step(run, "look").state == StepState.OPEN
    assert step(run, "approve").state == StepState.OPEN
    assert step(run, "done").state == StepState.LOCKED
    assert AuditEvent.objects.filter(action="run.started", object_id=str(run.pk)).exists()


def test_bad_starts_are_refused_and_create_nothing(engineer, analyticbot):
    for target, message in [
        ("9999", "not a revision"),
        ("0016", "already at 0016"),
        ("", "Choose"),
    ]:
        with pytest.raises(engine.RunError, match=message):
            start(engineer, analyticbot, target=target)
    assert not analyticbot.runs.exists()


def test_one_active_run_per_database(engineer, analyticbot):
    first = start(engineer, analyticbot)
    with pytest.raises(engine.RunError, match=f"Run #{first.pk}"):
        start(engineer, analyticbot)


def test_ticks_record_who_and_the_note_and_the_phase_waits_for_required_steps(
    engineer, lead, analyticbot
):
    run = start(engineer, analyticbot)
    engine.tick(engineer, run, step(run, "look"), "  read all four  ")
    ticked = step(run, "look")
    assert ticked.state == StepState.DONE and ticked.done_by == engineer
    assert ticked.note == "read all four"
    with pytest.raises(engine.RunError, match="already ticked"):
        engine.tick(engineer, run, ticked, "")
    with pytest.raises(engine.RunError, match="not open"):
        engine.tick(engineer, run, step(run, "done"), "")
    engine.decide(lead, run, step(run, "approve"), "approve", "looked at the risk report")
    run.refresh_from_db()
    # The optional step does not hold the phase.
    assert run.phase_index == 1 and step(run, "done").state == StepState.OPEN
    engine.tick(engineer, run, step(run, "done"), "")
    run.refresh_from_db()
    assert run.state == RunState.COMPLETED and run.finished_at


def test_nobody_approves_their_own_run_and_an_engineer_cannot_approve(engineer, analyticbot):
    lead_who_started = make_user("lead2", "lead")
    run = start(lead_who_started, analyticbot)
    with pytest.raises(engine.RunError, match="four eyes"):
        engine.decide(lead_who_started, run, step(run, "approve"), "approve", "mine")
    with pytest.raises(engine.RunError, match="Only a lead"):
        engine.decide(engineer, run, step(run, "approve"), "approve", "me")
    assert not Approval.objects.exists()


def test_an_approval_needs_a_comment(engineer, lead, analyticbot):
    run = start(engineer, analyticbot)
    with pytest.raises(engine.RunError, match="comment is required"):
        engine.decide(lead, run, step(run, "approve"), "approve", "   ")


def test_production_needs_the_configured_number_of_approvals(settings, engineer, lead, analyticbot):
    settings.RUNWAY_PRODUCTION_APPROVALS = 2
    run = start(engineer, analyticbot)
    gate = step(run, "approve")
    assert gate.count == 2
    engine.decide(lead, run, gate, "approve", "ok")
    with pytest.raises(engine.RunError, match="already approved"):
        engine.decide(lead, run, step(run, "approve"), "approve", "again")
    assert step(run, "approve").state == StepState.OPEN
    engine.decide(make_user("lead3", "lead"), run, step(run, "approve"), "approve", "ok too")
    assert step(run, "approve").state == StepState.DONE


def test_a_rejection_stops_the_run(engineer, lead, analyticbot):
    run = start(engineer, analyticbot)
    engine.decide(
        lead, run, step(run, "approve"), "reject", "0020 builds an index without CONCURRENTLY"
    )
    run.refresh_from_db()
    assert run.state == RunState.REJECTED
    assert "CONCURRENTLY" in run.reason
    with pytest.raises(engine.RunError, match="rejected"):
        engine.tick(engineer, run, step(run, "look"), "")
    assert (
        AuditEvent.objects.filter(action="run.rejected").get().details["comment"].startswith("0020")
    )


def test_an_approval_pins_what_was_reviewed_and_voids_when_it_changes(engineer, lead, analyticbot):
    from dashboard.backups.models import Backup

    run = start(engineer, analyticbot)
    engine.decide(lead, run, step(run, "approve"), "approve", "ok")
    approval = Approval.objects.get()
    run.refresh_from_db()
    assert approval.target_revision == "0020"
    assert approval.risk_hash == run.risk_hash and len(run.risk_hash) == 64
    assert approval.backup_id_seen is None and not approval.void_reasons(run)
    run.backup = Backup.objects.create(database=analyticbot, state="succeeded")
    run.save()
    assert approval.void_reasons(run) == [f"the backup changed (none → #{run.backup_id})"]
    assert engine.void_approvals(run)
    run.target_revision = "0019"
    assert "the target revision changed (0020 → 0019)" in approval.void_reasons(run)


def test_abort_needs_a_reason_and_ends_the_run(engineer, analyticbot):
    run = start(engineer, analyticbot)
    with pytest.raises(engine.RunError, match="why"):
        engine.abort(engineer, run, " ")
    engine.abort(engineer, run, "window moved to Friday")
    run.refresh_from_db()
    assert run.state == RunState.ABORTED and run.reason == "window moved to Friday"
    with pytest.raises(engine.RunError, match="aborted"):
        engine.abort(engineer, run, "again")


def test_waiting_for_says_who(engineer, analyticbot):
    run = start(engineer, analyticbot)
    waiting = engine.waiting_for(run)
    assert "an engineer to tick “Look at the revisions”" in waiting
    assert any("a lead to approve “A lead approves” (0/1)" in w for w in waiting)


FAILING_ACTION = """
id: reach
title: Reach it
phases:
  - id: only
    title: Only
    steps:
      - id: read
        action: database.check
        title: Read the database
      - id: after
        approval: A lead approves
        role: lead
"""


def test_a_failed_action_stops_the_phase_with_the_reason_and_can_be_retried(engineer, analyticbot):
    run = engine.start_run(engineer, book(FAILING_ACTION), analyticbot)
    started = step(run, "read")
    assert started.state == StepState.STARTED and started.status == JobState.QUEUED
    assert "a worker: “Read the database” is queued" in engine.waiting_for(run)
    first = perform(started)
    failed = step(run, "read")
    assert failed.state == StepState.FAILED and failed.verdict == "fail"
    # The action ran and said what it found: its job succeeded, with a failing verdict.
    assert first.state == JobState.SUCCEEDED and first.verdict == "fail"
    assert "could not connect" in failed.summary.lower() or "refused" in failed.summary.lower()
    assert failed.summary == first.summary and failed.output == first.output
    assert step(run, "after").state == StepState.WAITING  # the phase stopped there
    assert "an engineer to retry “Read the database” or abort" in engine.waiting_for(run)
    engine.retry(engineer, run, failed)
    again = step(run, "read")
    assert again.state == StepState.STARTED and again.summary == ""
    assert [(j.attempt, j.state) for j in again.jobs.all()] == [
        (1, JobState.SUCCEEDED),
        (2, JobState.QUEUED),
    ]
    assert again.job.output == "" and again.history == [first]
    with pytest.raises(engine.RunError, match="Only a failed automated step"):
        engine.retry(engineer, run, step(run, "read"))


def test_an_action_that_crashes_fails_its_job_and_the_step(engineer, analyticbot, monkeypatch):
    from runbooks import actions

    def broken(ctx):
        ctx.log("about to divide")
        return 1 / 0

    broken_check = dataclasses.replace(actions.REGISTRY["database.check"], fn=broken)
    monkeypatch.setitem(actions.REGISTRY, "database.check", broken_check)
    run = engine.start_run(engineer, book(FAILING_ACTION), analyticbot)
    job = perform(step(run, "read"))
    failed = step(run, "read")
    assert job.state == JobState.FAILED and job.error.startswith("The action crashed: Zero")
    assert failed.state == StepState.FAILED and failed.verdict == "fail"
    assert "about to divide" in failed.output and "ZeroDivisionError" in failed.output
    finished = AuditEvent.objects.get(action="run.step_finished")
    assert finished.details["job_state"] == "failed" and finished.details["job"] == job.pk


def test_a_step_whose_worker_died_is_failed_by_the_reaper(engineer, analyticbot):
    from datetime import timedelta

    from django.utils import timezone

    run = engine.start_run(engineer, book(FAILING_ACTION), analyticbot)
    job = step(run, "read").job
    assert job.claim("host-a:4242")
    stale = timezone.now() - timedelta(seconds=91)  # the kind's timeout is 90 s
    type(job).objects.filter(pk=job.pk).update(heartbeat_at=stale)
    reaped = jobs.reap(kinds=["run_step"])
    assert [r.job.pk for r in reaped] == [job.pk]
    dead = step(run, "read")
    job.refresh_from_db()
    assert job.state == JobState.INTERRUPTED and "host-a:4242" in job.error
    assert dead.state == StepState.FAILED and dead.verdict == "fail"
    assert "The worker died mid-step (worker host-a:4242" in dead.summary
    assert step(run, "after").state == StepState.WAITING  # the run stops there
    events = AuditEvent.objects.filter(action__in=["run_step.interrupted", "run.step_finished"])
    assert sorted(e.action for e in events) == ["run.step_finished", "run_step.interrupted"]
    assert jobs.run("run_step", job.pk) is None  # a redelivered task does not run it again
    engine.retry(engineer, run, dead)
    assert step(run, "read").job.attempt == 2


def test_a_step_no_worker_took_fails_saying_so(engineer, analyticbot):
    from datetime import timedelta

    from django.utils import timezone

    run = engine.start_run(engineer, book(FAILING_ACTION), analyticbot)
    job = step(run, "read").job
    type(job).objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(hours=2))
    jobs.reap(kinds=["run_step"])
    job.refresh_from_db()
    lonely = step(run, "read")
    assert job.state == JobState.INTERRUPTED and job.started_at is None
    assert lonely.state == StepState.FAILED
    assert lonely.summary.startswith("No worker took this step within 60 minutes")


def test_abort_cancels_a_queued_step_and_asks_a_running_one_to_stop(engineer, analyticbot):
    run = engine.start_run(engineer, book(FAILING_ACTION), analyticbot)
    queued = step(run, "read").job
    engine.abort(engineer, run, "wrong window")
    queued.refresh_from_db()
    assert queued.state == JobState.CANCELLED and step(run, "read").state == StepState.LOCKED
    assert jobs.run("run_step", queued.pk) is None
    event = AuditEvent.objects.get(action="run.aborted")
    assert event.details["jobs"] == [
        {"step": "read", "job": queued.pk, "attempt": 1, "state": "cancelled"}
    ]

    other = make_database(name="billing")
    checked(other, "0016")
    second = engine.start_run(engineer, book(FAILING_ACTION), other)
    running = step(second, "read").job
    assert running.claim("host-b:1")
    engine.abort(engineer, second, "stop it")
    running.refresh_from_db()
    assert running.state == JobState.RUNNING and running.cancel_requested_at is not None
    assert step(second, "read").state == StepState.STARTED  # it ends when its action stops


def test_cancel_step_stops_a_queued_step_which_can_be_retried(engineer, analyticbot):
    run = engine.start_run(engineer, book(FAILING_ACTION), analyticbot)
    engine.cancel_step(engineer, run, step(run, "read"))
    cancelled = step(run, "read")
    assert cancelled.state == StepState.FAILED and cancelled.summary == "Cancelled before it ran."
    assert cancelled.job.state == JobState.CANCELLED
    with pytest.raises(engine.RunError, match="no queued or running job"):
        engine.cancel_step(engineer, run, cancelled)
    engine.retry(engineer, run, cancelled)
    assert step(run, "read").job.attempt == 2


APPROVE_THEN_UPGRADE = """
id: guarded
title: Guarded
needs_target: true
phases:
  - id: review
    title: Review
    steps:
      - id: approve
        approval: A lead approves
        role: lead
  - id: run
    title: Run
    steps:
      - id: upgrade
        action: schema.upgrade
        title: Upgrade
"""


def test_an_approval_voids_itself_when_the_risk_report_changes_and_nothing_runs(
    engineer, lead, analyticbot
):
    from dashboard.schema.models import RiskAcceptance

    run = engine.start_run(engineer, book(APPROVE_THEN_UPGRADE), analyticbot, "0020")
    engine.decide(lead, run, step(run, "approve"), "approve", "read the report")
    # Approving records a decision; the upgrade waits for someone to press Deploy.
    assert step(run, "upgrade").status == StepState.WAITING
    engine.deploy(engineer, run)
    assert step(run, "upgrade").status == JobState.QUEUED
    # Someone accepts a finding after the approval: the report the lead saw is not this one.
    RiskAcceptance.objects.create(
        database=analyticbot,
        revision="0020",
        rule="create-index-blocking",
        comment="later",
        accepted_by=make_user("lena", "lead"),
    )
    perform(step(run, "upgrade"))
    upgrade = step(run, "upgrade")
    assert upgrade.state == StepState.FAILED
    assert "approval is void: the risk report changed since it was approved" in upgrade.summary
    assert "Nothing ran" in upgrade.summary
    run.refresh_from_db()
    assert run.phase_index == 0 and step(run, "approve").state == StepState.OPEN
    assert AuditEvent.objects.filter(action="run.approvals_void").exists()
    # The lead approves again, on the new report; the approval holds.
    engine.decide(lead, run, step(run, "approve"), "approve", "accepted finding is fine")
    assert step(run, "approve").state == StepState.DONE
