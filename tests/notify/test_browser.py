"""In Chromium: a lead adds a Slack webhook by reference on a database's Notifications page and
sends a test; a user chooses their own notifications from the menu beside their name."""

from __future__ import annotations

import pytest
from helpers import log_in, make_database

from dashboard.notify import events
from dashboard.notify.models import Channel, DeliveryAttempt, Outbox, Preference

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SECRET_PATH = "/services/T000/B000/browser-secret"


def test_a_lead_adds_a_slack_webhook_and_reads_its_deliveries(
    page, live_server, lead, engineer, settings, monkeypatch, artifacts
):
    settings.RUNWAY_WEBHOOK_ALLOW_PRIVATE = True
    settings.EMAIL_HOST = "smtp.example.com"
    monkeypatch.setenv("RUNWAY_WEBHOOK_OPS_SLACK", f"http://127.0.0.1:9{SECRET_PATH}")
    db = make_database(name="analyticbot", environment="production")
    log_in(page, live_server, "leo")
    page.goto(f"{live_server.url}/databases/analyticbot/")
    page.locator("main").get_by_role("link", name="Notifications").click()
    page.wait_for_url(f"{live_server.url}/databases/analyticbot/notifications/")

    page.fill("#id_name", "#db-ops")
    page.select_option("#id_kind", "webhook-slack")
    page.fill("#id_url_ref", f"https://hooks.slack.com{SECRET_PATH}")
    page.get_by_label("An approval is waiting").check()
    page.get_by_role("button", name="Add channel").click()
    assert page.get_by_text("Give a reference, not the URL").is_visible()
    assert page.input_value("#id_url_ref") == ""
    page.screenshot(path=artifacts / "notify-channel-refused.png", full_page=True)

    page.fill("#id_url_ref", "env:RUNWAY_WEBHOOK_OPS_SLACK")
    page.get_by_label("A run's step failed").check()
    page.get_by_role("button", name="Add channel").click()
    assert page.get_by_text("Added the channel #db-ops.").is_visible()
    channel = Channel.objects.get()
    # A delivery that was tried twice, as the page shows it.
    row = Outbox.objects.create(
        event=events.STEP_FAILED,
        database=db,
        channel=channel,
        target=str(channel),
        subject="Step failed: Upgrade to 0020 (run #12 on analyticbot)",
        state="succeeded",
        attempts=2,
    )
    from django.utils import timezone

    now = timezone.now()
    DeliveryAttempt.objects.create(
        outbox=row, number=1, started_at=now, duration_ms=5003, error="No answer within 5 s."
    )
    DeliveryAttempt.objects.create(
        outbox=row, number=2, started_at=now, duration_ms=41, status_code=200, ok=True
    )
    page.reload()
    body = page.locator("main").inner_text()
    assert "env:RUNWAY_WEBHOOK_OPS_SLACK" in body and SECRET_PATH not in page.content()
    assert "No answer within 5 s." in body and "HTTP 200" in body
    page.screenshot(path=artifacts / "notify-channels.png", full_page=True)


def test_a_user_chooses_their_own_notifications_from_the_menu(
    page, live_server, engineer, settings, artifacts
):
    settings.EMAIL_HOST = "smtp.example.com"
    make_database(name="analyticbot", environment="production")
    make_database(name="billing", environment="staging")
    log_in(page, live_server, "erin")
    page.locator("header .who").get_by_role("link", name="Notifications").click()
    page.wait_for_url(f"{live_server.url}/notifications/")
    assert page.get_by_label("A run's step failed").is_checked()  # an engineer's default
    assert not page.get_by_label("An approval is waiting").is_checked()
    page.screenshot(path=artifacts / "notify-preferences.png", full_page=True)
    page.get_by_label("An approval is waiting").check()
    page.get_by_label("billing").check()
    page.get_by_role("button", name="Save preferences").click()
    assert page.get_by_text("Saved your notification preferences.").is_visible()
    saved = Preference.objects.get(user=engineer)
    assert events.APPROVAL_WAITING in saved.events
    assert [d.name for d in saved.muted.all()] == ["billing"]
