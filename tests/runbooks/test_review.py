"""Approval apart from rollout: Deploy inside the window, approvals that expire or go stale,
request changes / amend / ask again, reject, risk-scaled approval policies (two leads for a
high-risk production change, staging first), comments, the inbox, due dates and reminders."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from helpers import make_database, make_user
from helpers import runbook as book

from dashboard.audit.models import AuditEvent
from dashboard.jobs.models import JobState
from dashboard.notify.models import Outbox
from runbooks import engine, inbox, policy, schedule
from runbooks.models import Approval, ApprovalPolicy, Comment, Run, RunState, StepState

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def email_on(settings):
    settings.EMAIL_HOST = "127.0.0.1"
    settings.RUNWAY_PUBLIC_URL = "https://runway.example.com"


APPROVE_THEN_UPGRADE = """
id: guarded
title: Guarded
needs_target: true
phases:
  - id: review
    title: Review
    due: "-4h"
    steps:
      - id: look
        check: Look at the revisions
        required: false
      - id: approve
        approval: A lead approves
        role: lead
  - id: run
    title: Run
    due: "0"
    steps:
      - id: upgrade
        action: schema.upgrade
        title: Upgrade
"""


def start(engineer, db, target="0020", **schedule_):
    return engine.start_run(engineer, book(APPROVE_THEN_UPGRADE), db, target, **schedule_)


def step(run, step_id):
    return run.steps.get(step_id=step_id)


def approve(lead, run, comment="read it"):
    return engine.decide(lead, run, step(run, "approve"), "approve", comment)


def events(run, action):
    return AuditEvent.objects.filter(action=action, object_id=str(run.pk))


def test_approving_starts_nothing_deploy_does(engineer, lead, analyticbot):
    run = start(engineer, analyticbot)
    approve(lead, run)
    upgrade = step(run, "upgrade")
    assert upgrade.state == StepState.WAITING and upgrade.job is None
    assert any("press Deploy" in w for w in engine.waiting_for(Run.objects.get(pk=run.pk)))
    viewer = make_user("vic", "viewer")
    with pytest.raises(engine.RunError, match="Only an engineer"):
        engine.deploy(viewer, run)
    engine.deploy(engineer, run)
    run.refresh_from_db()
    assert run.deployed_by == engineer and run.deployed_at is not None
    assert step(run, "upgrade").job.state == JobState.QUEUED
    assert events(run, "run.deployed").count() == 1
    with pytest.raises(engine.RunError, match="deployed by erin already"):
        engine.deploy(engineer, run)


def test_deploy_before_approval_is_refused(engineer, analyticbot):
    run = start(engineer, analyticbot)
    with pytest.raises(engine.RunError, match="Not approved yet"):
        engine.deploy(engineer, run)


def test_deploy_only_inside_the_window(engineer, lead, analyticbot):
    now = timezone.now()
    run = start(
        engineer,
        analyticbot,
        window_start=now + timedelta(hours=1),
        window_end=now + timedelta(hours=3),
    )
    approve(lead, run)
    with pytest.raises(engine.RunError, match="window opens at"):
        engine.deploy(engineer, run)
    assert step(run, "upgrade").job is None
    Run.objects.filter(pk=run.pk).update(window_start=now - timedelta(minutes=5))
    # The window the approval was given for is the same end: it still holds.
    engine.deploy(engineer, Run.objects.get(pk=run.pk))
    assert step(run, "upgrade").job.state == JobState.QUEUED


def test_a_window_that_passes_expires_the_approval_for_good(engineer, lead, analyticbot):
    now = timezone.now()
    run = start(engineer, analyticbot, window_start=now, window_end=now + timedelta(hours=1))
    approve(lead, run)
    # An hour later (the window moved into the past, as time would have moved it):
    passed = timezone.now() - timedelta(seconds=1)
    Run.objects.filter(pk=run.pk).update(
        window_start=passed - timedelta(hours=1), window_end=passed
    )
    Approval.objects.update(window_end_seen=passed)
    reasons = schedule.tick()
    assert any("deployment window ended" in r for r in reasons), reasons
    run.refresh_from_db()
    assert step(run, "approve").state == StepState.OPEN and run.phase_index == 0
    approval = Approval.objects.get()
    assert approval.voided_at is not None and "window ended" in approval.void_reason
    # A new window does not revive it: the lead approves again.
    engine.amend(
        engineer,
        run,
        "0020",
        window_start=timezone.now(),
        window_end=timezone.now() + timedelta(hours=1),
    )
    run.refresh_from_db()
    assert step(run, "approve").state == StepState.OPEN
    assert Outbox.objects.filter(event="approval.waiting").exists()


def test_a_stale_approval_refuses_deploy_and_goes_back_to_review(engineer, lead, analyticbot):
    run = start(engineer, analyticbot)
    approve(lead, run)
    Approval.objects.update(created_at=timezone.now() - timedelta(hours=25))
    with pytest.raises(engine.RunError, match="stale: given 25 h ago.*24 h"):
        engine.deploy(engineer, run)
    run.refresh_from_db()
    assert run.deployed_at is None and step(run, "approve").state == StepState.OPEN
    assert step(run, "upgrade").job is None
    assert "stale" in Approval.objects.get().void_reason
    assert events(run, "run.approvals_void").exists()


def test_request_changes_then_amend_then_approve(engineer, lead, analyticbot):
    run = start(engineer, analyticbot)
    engine.tick(engineer, run, step(run, "look"), "read")
    engine.decide(lead, run, step(run, "approve"), "changes", "0020 locks users: split it")
    run.refresh_from_db()
    assert run.changes_requested and run.state == RunState.ACTIVE
    with pytest.raises(engine.RunError, match="Changes were requested"):
        approve(lead, run)
    assert Outbox.objects.filter(event="review.decided").exists()
    assert [i.what for i in inbox.waiting_for(engineer)] == ["changes"]
    assert inbox.waiting_for(lead) == []
    engine.amend(engineer, run, "0019")
    run.refresh_from_db()
    assert run.target_revision == "0019" and run.revisions == ["0017", "0018", "0019"]
    assert not run.changes_requested and run.phase_index == 0
    # A new target starts the run over: the check is ticked again.
    assert step(run, "look").state == StepState.OPEN and step(run, "look").done_by is None
    assert events(run, "run.amended").get().details["before"]["target"] == "0020"
    engine.tick(engineer, run, step(run, "look"), "read again")
    approve(lead, run, "0019 is fine")
    assert step(run, "approve").state == StepState.DONE


def test_ask_again_after_changes(engineer, lead, analyticbot):
    run = start(engineer, analyticbot)
    engine.decide(lead, run, step(run, "approve"), "changes", "accept or fix the index finding")
    with pytest.raises(engine.RunError, match="Say what you changed"):
        engine.request_review(engineer, run, "  ")
    engine.request_review(engineer, run, "accepted the finding with the DBA")
    run.refresh_from_db()
    assert not run.changes_requested
    assert Comment.objects.get(run=run).body.startswith("Review requested again")
    with pytest.raises(engine.RunError, match="already open"):
        engine.request_review(engineer, run, "again")
    approve(lead, run)
    assert step(run, "approve").state == StepState.DONE


def test_reject_is_final(engineer, lead, analyticbot):
    run = start(engineer, analyticbot)
    engine.decide(lead, run, step(run, "approve"), "reject", "not this quarter")
    run.refresh_from_db()
    assert run.state == RunState.REJECTED
    with pytest.raises(engine.RunError, match="rejected"):
        engine.amend(engineer, run, "0019")


def test_bad_amendments_change_nothing(engineer, lead, analyticbot):
    run = start(engineer, analyticbot)
    now = timezone.now()
    for target, kwargs, message in [
        ("9999", {}, "not a revision"),
        ("0016", {}, "already at 0016"),
        ("0020", {}, "Nothing changed"),
        ("0020", {"window_start": now, "window_end": now - timedelta(hours=1)}, "end after"),
        ("0020", {"window_start": now}, "both its start and its end"),
        (
            "0020",
            {"window_start": now - timedelta(hours=3), "window_end": now - timedelta(hours=1)},
            "future",
        ),
        (
            "0020",
            {
                "planned_at": now + timedelta(days=3),
                "window_start": now,
                "window_end": now + timedelta(hours=2),
            },
            "inside the window",
        ),
    ]:
        with pytest.raises(engine.RunError, match=message):
            engine.amend(engineer, run, target, **kwargs)
    run.refresh_from_db()
    assert run.target_revision == "0020" and run.window_end is None
    assert not events(run, "run.amended").exists()


def test_two_leads_for_a_high_risk_production_change(engineer, lead, analyticbot, seeded_policy):
    assert (seeded_policy.environment, seeded_policy.grade, seeded_policy.approvals) == (
        "production",
        "high",
        2,
    )
    run = start(engineer, analyticbot)
    assert run.max_grade == "high" and step(run, "approve").count == 2
    approval = step(run, "approve")
    # One lead only (leo): the policy cannot be met, and the run says what to do.
    message = policy.cannot_be_met(run, approval)
    assert "needs 2 approvals" in message and "only 1 exist (leo)" in message
    assert "Admin → Approval policies" in message
    approve(lead, run)
    assert step(run, "approve").state == StepState.OPEN
    assert "(1/2)" in " ".join(engine.waiting_for(Run.objects.get(pk=run.pk)))
    second = make_user("lena", "lead")
    assert policy.cannot_be_met(run, step(run, "approve")) == ""
    with pytest.raises(engine.RunError, match="already approved"):
        approve(lead, run)
    approve(second, run, "second pair of eyes")
    assert step(run, "approve").state == StepState.DONE


def test_the_policy_scales_with_the_grade_and_the_environment(analyticbot, seeded_policy):
    staging = make_database(name="analyticbot-staging", environment="staging")
    assert policy.requirement(analyticbot, "low").approvals == 1  # RUNWAY_PRODUCTION_APPROVALS
    assert policy.requirement(analyticbot, "medium").approvals == 1
    assert policy.requirement(analyticbot, "high").approvals == 2
    assert policy.requirement(staging, "high").approvals == 0  # the runbook's own count
    assert policy.requirement(staging, "high", 1).approvals == 1


def test_staging_first(engineer, lead, analyticbot, seeded_policy):
    ApprovalPolicy.objects.update(staging_first=True)
    run = start(engineer, analyticbot)
    with pytest.raises(engine.RunError, match="no staging partner"):
        approve(lead, run)
    staging = make_database(name="analyticbot-staging", environment="staging")
    analyticbot.staging_partner = staging
    analyticbot.save()
    run.refresh_from_db()
    with pytest.raises(engine.RunError, match="No completed run on the staging partner"):
        approve(lead, run)
    assert "0017, 0018, 0019, 0020" in policy.staging_missing(run)
    Run.objects.create(
        runbook_id="x",
        runbook_title="X",
        runbook={"phases": []},
        database=staging,
        revisions=["0017", "0018", "0019", "0020"],
        started_by=engineer,
        state=RunState.COMPLETED,
    )
    assert policy.staging_missing(run) == ""
    approve(lead, run)
    assert Approval.objects.filter(run=run).count() == 1


def test_comments_on_a_statement_and_on_the_run_are_audited(engineer, lead, analyticbot):
    run = start(engineer, analyticbot)
    viewer = make_user("vic", "viewer")
    engine.comment(lead, run, "why not concurrently?", "0020", 0)
    engine.comment(engineer, run, "it is a tiny table")
    for actor, args, message in [
        (viewer, ("x",), "Only an engineer"),
        (lead, ("  ",), "Write the comment"),
        (lead, ("x" * 2001,), "under 2000"),
        (lead, ("x", "0016"), "not one of this run's revisions"),
        (lead, ("x", "../etc"), "not one of this run's revisions"),
        (lead, ("x", "", 3), "names its revision"),
    ]:
        with pytest.raises(engine.RunError, match=message):
            engine.comment(actor, run, *args)
    assert Comment.objects.filter(run=run).count() == 2
    assert events(run, "run.commented").count() == 2


def test_the_inbox(engineer, lead, analyticbot):
    run = start(engineer, analyticbot)
    assert [i.what for i in inbox.waiting_for(lead)] == ["review"]
    assert inbox.waiting_for(engineer) == []
    assert inbox.waiting_for(make_user("vic", "viewer")) == []
    approve(lead, run)
    assert [i.what for i in inbox.waiting_for(engineer)] == ["deploy"]
    assert [i.what for i in inbox.waiting_for(lead)] == ["deploy"]  # the approver may deploy
    engine.deploy(engineer, run)
    assert inbox.waiting_for(engineer) == []


def test_due_dates_remind_once(engineer, analyticbot):
    planned = timezone.now() + timedelta(hours=30)
    run = start(engineer, analyticbot, planned_at=planned)
    assert run.due_of(0) == planned - timedelta(hours=4)
    assert schedule.tick(planned - timedelta(hours=10)) == []
    sent = schedule.tick(planned - timedelta(hours=4, minutes=30))
    due = timezone.localtime(planned - timedelta(hours=4))
    assert sent == [f"run #{run.pk}: review due at {due:%Y-%m-%d %H:%M}"]
    assert schedule.tick(planned - timedelta(hours=4, minutes=20)) == []  # once
    assert Outbox.objects.filter(event="run.due").exists()
    assert events(run, "run.reminded").count() == 1


def test_the_review_page_for_each_role(client, engineer, lead, analyticbot):
    run = start(engineer, analyticbot)
    engine.comment(lead, run, "why <script>alert(1)</script>?", "0020", 0)
    url = reverse("run-review", args=[analyticbot.name, run.pk])
    for user, decides in [(make_user("vic", "viewer"), False), (engineer, False), (lead, True)]:
        client.force_login(user)
        html = client.get(url).content.decode()
        assert "Your approval is pinned to" in html and "0020" in html
        assert ('value="approve"' in html) is decides
        assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    client.force_login(engineer)
    response = client.post(
        reverse("run-comment", args=[analyticbot.name, run.pk]),
        {"body": "x", "revision": "0020", "statement": "-1"},
        follow=True,
    )
    assert "The comment was not saved" in response.content.decode()
    response = client.post(
        reverse("run-amend", args=[analyticbot.name, run.pk]),
        {"target": "0020", "window_start": "tomorrow", "window_end": ""},
        follow=True,
    )
    assert "Nothing was changed" in response.content.decode()


def test_an_admin_edits_the_policies_audited_and_validated(client, admin_user, lead, seeded_policy):
    change = reverse("admin:runbooks_approvalpolicy_change", args=[seeded_policy.pk])
    client.force_login(lead)
    assert client.get(change).status_code == 302  # admins only
    client.force_login(admin_user)
    data = {"environment": "production", "grade": "high", "approvals": "9"}
    response = client.post(change, data)
    assert b"less than or equal to 5" in response.content
    client.post(change, data | {"approvals": "3", "staging_first": "on"})
    seeded_policy.refresh_from_db()
    assert (seeded_policy.approvals, seeded_policy.staging_first) == (3, True)
    event = AuditEvent.objects.get(action="approval_policy.changed")
    assert event.details["approvals"] == 3 and event.actor_name == admin_user.username


def test_the_runs_filter_waiting_for_me(client, engineer, lead, analyticbot):
    run = start(engineer, analyticbot)
    other = make_database(name="billing")
    from helpers import checked

    checked(other, "0016")
    done = start(engineer, other)
    engine.abort(engineer, done, "not now")
    client.force_login(lead)
    html = client.get(reverse("runs") + "?mine=on").content.decode()
    assert f'data-run="{run.pk}"' in html and f'data-run="{done.pk}"' not in html
    assert 'id="inbox-count"' in html
    client.force_login(engineer)
    html = client.get(reverse("runs") + "?mine=on").content.decode()
    assert "No run matches" in html and 'id="inbox-count"' not in html
