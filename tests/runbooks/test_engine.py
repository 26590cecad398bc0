"""The engine: phases open in order, checks are ticked with notes, approvals are four-eyes and
pinned to what was reviewed, a rejection stops the run, failures stop a phase and can be retried."""

from __future__ import annotations

import pytest
from helpers import CHECKS_THEN_APPROVAL, make_user
from helpers import runbook as book

from dashboard.audit.models import AuditEvent
from runbooks import engine
from runbooks.models import Approval, RunState, StepState

pytestmark = pytest.mark.django_db


def start(engineer, db, text=CHECKS_THEN_APPROVAL, target="0020"):
    return engine.start_run(engineer, book(text), db, target)


def step(run, step_id):
    return run.steps.get(step_id=step_id)


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
    run.backup = Backup.objects.create(database=analyticbot, state="completed")
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
    engine.perform_step(step(run, "read").pk)
    failed = step(run, "read")
    assert failed.state == StepState.FAILED and failed.verdict == "fail"
    assert "could not connect" in failed.summary.lower() or "refused" in failed.summary.lower()
    assert step(run, "after").state == StepState.WAITING  # the phase stopped there
    assert "an engineer to retry “Read the database” or abort" in engine.waiting_for(run)
    engine.retry(engineer, run, failed)
    assert step(run, "read").state == StepState.QUEUED
    with pytest.raises(engine.RunError, match="Only a failed automated step"):
        engine.retry(engineer, run, step(run, "read"))


def test_a_step_whose_worker_died_is_failed_by_the_reaper(engineer, analyticbot):
    from datetime import timedelta

    from django.utils import timezone

    run = engine.start_run(engineer, book(FAILING_ACTION), analyticbot)
    assert engine.claim(step(run, "read").pk)
    stale = timezone.now() - timedelta(hours=1)
    run.steps.filter(step_id="read").update(heartbeat_at=stale)
    reaped = engine.reap_stale_steps()
    assert [s.step_id for s in reaped] == ["read"]
    dead = step(run, "read")
    assert dead.state == StepState.FAILED and "worker died" in dead.summary
    assert engine.perform_step(dead.pk) is None  # a redelivered task does not run it again


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
    assert step(run, "upgrade").state == StepState.QUEUED
    # Someone accepts a finding after the approval: the report the lead saw is not this one.
    RiskAcceptance.objects.create(
        database=analyticbot,
        revision="0020",
        rule="create-index-blocking",
        comment="later",
        accepted_by=make_user("lena", "lead"),
    )
    engine.perform_step(step(run, "upgrade").pk)
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
