"""Delivery on real workers to real receivers: an email through a local SMTP server (aiosmtpd),
webhooks to a local HTTP receiver (JSON and Slack bodies), a retry after a 500 with both attempts
recorded, a 404 that is not retried, and a receiver that hangs while the run goes on."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.core.management import call_command
from django.db import transaction
from helpers import make_database, runbook, wait_until

from dashboard.audit.models import AuditEvent
from dashboard.notify import events
from dashboard.notify.models import Channel, DeliveryAttempt, Outbox
from dashboard.notify.outbox import emit
from runbooks import engine
from runbooks.models import StepState

pytestmark = pytest.mark.django_db(transaction=True)

APPROVAL_FIRST = """
id: approve-first
title: Approve first
phases:
  - id: only
    title: Only
    steps:
      - id: go
        approval: A lead approves the change
        role: lead
"""

CHECK_THEN_APPROVAL = """
id: check-then-approve
title: Check then approve
phases:
  - id: only
    title: Only
    steps:
      - id: check
        action: database.check
        title: Check the connection
      - id: go
        approval: A lead approves the change
        role: lead
"""


def hook_env(name: str) -> str:
    return f"RUNWAY_WEBHOOK_T_{name}"  # set by the notify_workers fixture


def webhook(db: Any, hook: str, kind: str = "webhook-json", **kwargs: Any) -> Channel:
    kwargs.setdefault("events", [events.APPROVAL_WAITING, events.STEP_FAILED])
    return Channel.objects.create(
        database=db, name=f"#{hook.lower()}", kind=kind, url_ref=f"env:{hook_env(hook)}", **kwargs
    )


def finished(row: Outbox, timeout: float = 60) -> Outbox:
    wait_until(
        lambda: Outbox.objects.get(pk=row.pk).state in ("succeeded", "failed"),
        f"notification #{row.pk} delivered or given up",
        timeout=timeout,
    )
    return Outbox.objects.get(pk=row.pk)


def test_an_approval_waiting_emails_the_leads_a_link_to_the_run(delivering, engineer, lead, viewer):
    db = make_database(name="billing", environment="staging")
    inbox = delivering.smtp.inbox
    before = len(inbox.messages)
    run = engine.start_run(engineer, runbook(APPROVAL_FIRST), db)
    (row,) = Outbox.objects.filter(event=events.APPROVAL_WAITING)
    assert row.address == lead.email  # the lead's default; not the engineer's, not the viewer's
    assert finished(row).state == "succeeded"
    wait_until(lambda: len(inbox.messages) > before, "the email at the SMTP server")
    mail = inbox.messages[-1]
    assert mail.to == [lead.email]
    link = f"http://runway.test/databases/billing/runs/{run.pk}/"
    assert link in mail.text
    assert "Subject: [Runway] Approval waiting: Approve first on billing" in mail.text
    assert "A lead approves the change" in mail.text
    (attempt,) = row.tries.all()
    assert attempt.ok and attempt.status_code is None and attempt.number == 1
    call_command("verify_audit")


def test_webhooks_get_a_generic_json_body_and_a_slack_body(delivering):
    receiver = delivering.receiver
    db = make_database(name="billing", environment="staging")
    receiver.plan("/json", 200)
    receiver.plan("/slack", 200)
    webhook(db, "JSON")
    webhook(db, "SLACK", kind="webhook-slack")
    with transaction.atomic():
        rows = emit(
            events.STEP_FAILED,
            db,
            "Step failed: Upgrade (run #7 on billing)",
            "The step <Upgrade> failed: lock timeout & more",
            "/databases/billing/runs/7/",
            {"run": 7, "step": "upgrade"},
        )
    assert len(rows) == 2
    assert all(finished(row).state == "succeeded" for row in rows)
    (generic,) = receiver.bodies("/json")
    assert generic["event"] == "step.failed"
    assert generic["title"] == "Step failed: Upgrade (run #7 on billing)"
    assert generic["url"] == "http://runway.test/databases/billing/runs/7/"
    assert generic["database"] == "billing" and generic["environment"] == "staging"
    assert generic["details"] == {"run": 7, "step": "upgrade"}
    (slack,) = receiver.bodies("/slack")
    assert slack["text"].startswith("Step failed: Upgrade (run #7 on billing)")
    section = slack["blocks"][0]["text"]
    assert section["type"] == "mrkdwn"
    assert "<http://runway.test/databases/billing/runs/7/|Step failed" in section["text"]
    assert "&lt;Upgrade&gt; failed: lock timeout &amp; more" in section["text"]
    assert "billing (staging)" in slack["blocks"][1]["elements"][0]["text"]


def test_a_500_is_retried_and_both_attempts_are_recorded(delivering):
    delivering.receiver.plan("/flaky", 500, 200)
    db = make_database(name="billing", environment="staging")
    webhook(db, "FLAKY")
    with transaction.atomic():
        (row,) = emit(events.STEP_FAILED, db, "Step failed", "It failed.", "/x/")
    row = finished(row)
    assert row.state == "succeeded" and row.attempts == 2
    first, second = DeliveryAttempt.objects.filter(outbox=row).order_by("number")
    assert (first.number, first.status_code, first.ok) == (1, 500, False)
    assert "answered 500" in first.error
    assert (second.number, second.status_code, second.ok) == (2, 200, True)
    assert second.started_at > first.started_at
    assert AuditEvent.objects.filter(action="notification.requeued", object_id=str(row.pk))


def test_a_404_is_not_retried(delivering):
    delivering.receiver.plan("/gone", 404)
    db = make_database(name="billing", environment="staging")
    webhook(db, "GONE")
    with transaction.atomic():
        (row,) = emit(events.STEP_FAILED, db, "Step failed", "It failed.", "/x/")
    row = finished(row)
    assert row.state == "failed" and row.attempts == 1
    assert "answered 404 (no_service)" in row.error
    (attempt,) = row.tries.all()
    assert attempt.status_code == 404 and not attempt.ok
    assert AuditEvent.objects.filter(action="notification.failed", object_id=str(row.pk))


def test_a_hanging_webhook_neither_delays_the_emitting_call_nor_the_run(
    delivering, make_target, engineer, lead
):
    receiver = delivering.receiver
    receiver.plan("/hang", "hang", 200)
    db = make_database(name="billing", environment="staging", dsn=make_target())
    webhook(db, "HANG")

    with transaction.atomic():
        started = time.monotonic()
        rows = emit(events.STEP_FAILED, db, "Step failed", "It failed.", "/x/")
        took = time.monotonic() - started
    (hanging,) = [row for row in rows if row.channel is not None]  # the others are emails
    assert took < 0.5, took  # writing the rows is all the caller waits for
    wait_until(lambda: "/hang" in receiver.in_flight, "the receiver holding the first POST")

    # The run goes on while the receiver holds the delivery: its step is done before the
    # delivery's first attempt has even ended.
    run = engine.start_run(engineer, runbook(CHECK_THEN_APPROVAL), db)
    check = run.steps.get(step_id="check")
    wait_until(
        lambda: run.steps.get(pk=check.pk).state in (StepState.DONE, StepState.FAILED),
        "the step",
        timeout=60,
    )
    assert run.steps.get(pk=check.pk).state == StepState.DONE
    assert "/hang" in receiver.in_flight
    assert not DeliveryAttempt.objects.filter(outbox=hanging).exists()
    # The approval the step led to waits, and its own notification is queued behind.
    assert run.steps.get(step_id="go").state == StepState.OPEN
    waiting = Outbox.objects.get(event=events.APPROVAL_WAITING, channel__isnull=False)

    # The attempt times out after RUNWAY_WEBHOOK_TIMEOUT (8 s in these workers) and is recorded;
    # the retry is answered.
    hanging = finished(hanging)
    first, second = hanging.tries.order_by("number")
    assert not first.ok and first.status_code is None
    assert "No answer within 8 s" in first.error and "timed out" in first.error
    assert 7_000 <= first.duration_ms < 16_000
    assert second.ok and second.status_code == 200
    assert finished(waiting).state == "succeeded"
    call_command("verify_audit")
