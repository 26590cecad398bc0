"""The rollback run's page in headless Chromium: what it rolls back, why, who asked, the grace
period and the lead's Cancel button; screenshots in test-artifacts/."""

from __future__ import annotations

import os

import pytest
from helpers import log_in

from runbooks.models import Run, RunState
from runbooks.rollback import start_rollback

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_lead_sees_the_grace_and_cancels_the_rollback_in_the_browser(
    browser, live_server, engineer, lead, analyticbot, artifacts, settings
):
    settings.RUNWAY_JOB_QUEUE = f"rollback-browser-nobody-{os.getpid()}"  # no worker takes it
    failed = Run.objects.create(
        runbook_id="production-deployment",
        runbook_title="Production deployment",
        runbook={"phases": []},
        database=analyticbot,
        target_revision="0017",
        from_revisions=["0016"],
        revisions=["0017"],
        started_by=engineer,
        state=RunState.COMPLETED,
    )
    rb = start_rollback(
        failed,
        "health checks failing: 62% over 5 min",
        source="trigger:4 health",
        grace_seconds=300,
    )
    page = browser.new_context().new_page()
    log_in(page, live_server, "leo")
    page.goto(f"{live_server.url}{rb.get_absolute_url()}")
    page.wait_for_selector("#rollback-grace")
    assert page.locator("#rollback-of").inner_text() == f"run #{failed.pk}"
    assert page.locator("#rollback-source").inner_text() == "trigger:4 health"
    assert page.locator("#cancel-rollback button").is_visible()
    page.screenshot(path=artifacts / "rollback-grace.png", full_page=True)

    page.fill("#cancel-rollback input[name=reason]", "a known spike from the batch job")
    page.click("#cancel-rollback button")
    page.wait_for_selector("#run-state:has-text('Aborted')")
    text = page.inner_text("body")
    assert "Rollback cancelled: nothing was changed on the database." in text
    assert "Cancelled by leo within the grace period: a known spike from the batch job" in text
    page.screenshot(path=artifacts / "rollback-cancelled.png", full_page=True)

    page.goto(f"{live_server.url}{failed.get_absolute_url()}")
    assert f"Rolled back by run #{rb.pk}" in page.inner_text("#rolled-back-by")
    rb.refresh_from_db()
    assert rb.state == RunState.ABORTED and rb.cancelled_by == lead
