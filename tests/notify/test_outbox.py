"""The outbox: one row per recipient, written in the event's transaction (and rolled back with
it), chosen by each user's preferences (their role's defaults until they choose) and by the
channels' events; the engine's events; delivery in-process for the rules of one attempt."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction
from helpers import make_database, make_user, runbook

from dashboard.audit.models import AuditEvent
from dashboard.jobs import lifecycle as jobs
from dashboard.notify import delivery, events
from dashboard.notify.models import Channel, Outbox, Preference
from dashboard.notify.outbox import emit
from runbooks import engine

pytestmark = pytest.mark.django_db


@pytest.fixture
def email_on(settings: Any) -> None:
    settings.EMAIL_HOST = "127.0.0.1"
    settings.RUNWAY_PUBLIC_URL = "https://runway.example.com"


@pytest.fixture
def db_() -> Any:
    return make_database(name="billing", environment="staging")


def targets(rows: list[Outbox]) -> list[str]:
    return sorted(r.target for r in rows)


def test_each_role_gets_its_default_events_by_email(email_on, db_, viewer, engineer, lead):
    rows = emit(events.APPROVAL_WAITING, db_, "Approval waiting", "Body", "/r/")
    assert targets(rows) == ["leo <leo@example.com>"]
    rows = emit(events.STEP_FAILED, db_, "Step failed", "Body", "/r/")
    assert targets(rows) == ["erin <erin@example.com>", "leo <leo@example.com>"]
    assert rows[0].url == "https://runway.example.com/r/"


def test_a_users_choice_and_muted_databases_win_over_the_defaults(email_on, db_, engineer, lead):
    other = make_database(name="ledger", environment="production")
    choice = Preference.objects.create(user=engineer, events=[events.APPROVAL_WAITING])
    Preference.objects.create(user=lead, events=[events.APPROVAL_WAITING]).muted.add(db_)
    assert targets(emit(events.APPROVAL_WAITING, db_, "s", "b")) == ["erin <erin@example.com>"]
    assert len(emit(events.APPROVAL_WAITING, other, "s", "b")) == 2
    assert emit(events.STEP_FAILED, db_, "s", "b") == []
    choice.events = []
    choice.save()
    assert targets(emit(events.APPROVAL_WAITING, db_, "s", "b")) == []


def test_nobody_without_a_role_or_an_address_is_emailed(email_on, db_, outsider):
    nomail = make_user("nomail", "lead")
    nomail.email = ""
    nomail.save()
    assert emit(events.APPROVAL_WAITING, db_, "s", "b") == []


def test_without_an_smtp_host_nobody_is_emailed_but_channels_still_get_it(db_, lead):
    Channel.objects.create(
        database=db_, name="ops", kind="email", addresses=["ops@example.com"],
        events=[events.APPROVAL_WAITING],
    )  # fmt: skip
    (row,) = emit(events.APPROVAL_WAITING, db_, "s", "b")
    assert row.channel is not None and row.target.startswith("ops (Email, billing)")


def test_channels_of_the_database_and_global_ones_get_the_events_they_chose(db_):
    other = make_database(name="ledger", environment="production")

    def channel(name: str, database: Any, chosen: list[str], **kw: Any) -> Channel:
        return Channel.objects.create(
            database=database, name=name, kind="webhook-json", url_ref="env:RUNWAY_WEBHOOK_X",
            events=chosen, **kw,
        )  # fmt: skip

    channel("own", db_, [events.STEP_FAILED])
    channel("everywhere", None, [events.STEP_FAILED, events.TRIGGER_FIRED])
    channel("other", other, [events.STEP_FAILED])
    channel("approvals", db_, [events.APPROVAL_WAITING])
    channel("off", db_, [events.STEP_FAILED], enabled=False)
    rows = emit(events.STEP_FAILED, db_, "s", "b")
    assert sorted(r.channel.name for r in rows) == ["everywhere", "own"]
    assert len({r.event_id for r in rows}) == 1
    queued = AuditEvent.objects.get(action="notification.queued")
    assert queued.details["event"] == "step.failed" and len(queued.details["to"]) == 2


def test_the_outbox_row_is_rolled_back_with_the_events_transaction(email_on, db_, lead):
    class EventFailed(Exception):
        pass

    with pytest.raises(EventFailed), transaction.atomic():
        assert len(emit(events.APPROVAL_WAITING, db_, "s", "b")) == 1
        raise EventFailed
    assert not Outbox.objects.exists()
    assert not AuditEvent.objects.filter(action="notification.queued").exists()


def test_emit_never_breaks_the_callers_transaction(email_on, db_, lead, monkeypatch):
    from dashboard.notify import outbox

    def broken(*args: Any) -> list[Any]:
        raise RuntimeError("the preferences table is gone")

    monkeypatch.setattr(outbox, "email_recipients", broken)
    with transaction.atomic():
        assert emit(events.APPROVAL_WAITING, db_, "s", "b") == []
        AuditEvent.objects.count()  # the transaction is still usable
    assert not Outbox.objects.exists()


def test_a_subject_is_one_line_so_no_header_can_be_smuggled(email_on, db_, lead):
    (row,) = emit(events.APPROVAL_WAITING, db_, "Approve\r\nBcc: evil@example.com", "b")
    assert row.subject == "Approve Bcc: evil@example.com"


# --- The engine's events ---

APPROVAL_THEN_ACTION = """
id: approve-then-act
title: Approve then act
phases:
  - id: only
    title: Only
    steps:
      - id: go
        approval: A lead approves
        role: lead
      - id: act
        action: database.check
        title: Check the connection
"""


def test_the_engine_emits_an_approval_waiting_once_and_a_failed_step(email_on, engineer, lead):
    db = make_database(name="billing", environment="staging")  # unreachable: the check fails
    run = engine.start_run(engineer, runbook(APPROVAL_THEN_ACTION), db)
    (waiting,) = Outbox.objects.filter(event=events.APPROVAL_WAITING)
    assert waiting.url == f"https://runway.example.com/databases/billing/runs/{run.pk}/"
    assert waiting.payload["step"] == "go" and waiting.payload["run"] == run.pk
    engine.advance(run.pk)  # advancing again while it waits tells nobody twice
    assert Outbox.objects.filter(event=events.APPROVAL_WAITING).count() == 1
    engine.decide(lead, run, run.steps.get(step_id="go"), "approve", "looks fine")
    job = run.steps.get(step_id="act").job
    jobs.run("run_step", job.pk)
    failed = Outbox.objects.filter(event=events.STEP_FAILED).order_by("target")
    assert [r.target for r in failed] == ["erin <erin@example.com>", "leo <leo@example.com>"]
    assert "Check the connection" in failed[0].subject
    assert failed[0].payload["action"] == "database.check"


def test_a_step_interrupted_by_the_reaper_is_a_failed_step(email_on, engineer, lead):
    from datetime import timedelta

    from django.utils import timezone

    db = make_database(name="billing", environment="staging")
    run = engine.start_run(engineer, runbook(APPROVAL_THEN_ACTION), db)
    engine.decide(lead, run, run.steps.get(step_id="go"), "approve", "looks fine")
    job = run.steps.get(step_id="act").job
    jobs.reap(now=timezone.now() + timedelta(hours=2), kinds=["run_step"])  # nobody took it
    job.refresh_from_db()
    assert job.state == "interrupted"
    (failed,) = Outbox.objects.filter(event=events.STEP_FAILED, user=engineer)
    assert "No worker took this step" in failed.body


# --- One attempt, in-process ---


def test_a_webhook_reference_that_no_longer_resolves_fails_at_once(db_, monkeypatch):
    monkeypatch.delenv("RUNWAY_WEBHOOK_GONE_AWAY", raising=False)
    Channel.objects.create(
        database=db_, name="gone", kind="webhook-json", url_ref="env:RUNWAY_WEBHOOK_GONE_AWAY",
        events=[events.STEP_FAILED],
    )  # fmt: skip
    (row,) = emit(events.STEP_FAILED, db_, "s", "b")
    jobs.run("notification", row.pk)
    row.refresh_from_db()
    assert row.state == "failed" and row.attempts == 1
    assert "RUNWAY_WEBHOOK_GONE_AWAY is not set on this host" in row.error
    assert row.tries.get().error == row.error


def test_a_channel_removed_before_delivery_fails_its_row_saying_so(db_):
    channel = Channel.objects.create(
        database=db_, name="gone", kind="email", addresses=["a@example.com"],
        events=[events.STEP_FAILED],
    )  # fmt: skip
    (row,) = emit(events.STEP_FAILED, db_, "s", "b")
    channel.delete()
    jobs.run("notification", row.pk)
    row.refresh_from_db()
    assert row.state == "failed" and "channel was removed" in row.error


def test_the_retry_delays_come_from_the_setting_and_the_last_repeats(settings):
    settings.RUNWAY_NOTIFY_RETRY_DELAYS = [10.0, 60.0, 300.0]
    kind = jobs.KINDS["notification"]
    assert [kind.retry_countdown(n) for n in (1, 2, 3, 4)] == [10, 60, 300, 300]
    assert kind.max_attempts == delivery.MAX_ATTEMPTS == 5
    settings.RUNWAY_NOTIFY_QUEUE = "notify"
    assert kind.queue_name() == "notify"
    settings.RUNWAY_NOTIFY_QUEUE = ""
    assert kind.queue_name() == jobs.queue()
