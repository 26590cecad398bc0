"""In Chromium at 1280 px: the history page lets the message and risk columns use the width
(the message wraps, each finding's label whole), rows keep the graph's height, and no page
scrolls sideways; screenshots of the history, revision and preflight pages."""

from __future__ import annotations

import pytest
from django.utils import timezone
from helpers import checked, log_in, make_database

from dashboard.schema.models import GateRun, Rehearsal

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PENDING = ["0017", "0018", "0019", "0020"]


def no_sideways_scroll(page):
    width = page.evaluate("document.documentElement.scrollWidth")
    viewport = page.evaluate("document.documentElement.clientWidth")
    assert width <= viewport, f"the page scrolls sideways: {width} > {viewport}"


@pytest.fixture
def analyticbot():
    db = make_database()
    checked(db, "0016")
    return db


def test_the_history_columns_use_the_width(page, live_server, viewer, analyticbot, artifacts):
    page.set_viewport_size({"width": 1280, "height": 1000})
    log_in(page, live_server, "vera")
    page.goto(f"{live_server.url}/databases/{analyticbot.name}/history/")
    page.screenshot(path=artifacts / "history-1280.png", full_page=True)
    no_sideways_scroll(page)
    clipped = page.locator("table.history .msg-text, table.history .risk-line").evaluate_all(
        """cells => cells.filter(c => c.scrollWidth > c.clientWidth + 1
                                   || c.scrollHeight > c.clientHeight + 1)
                         .map(c => c.innerText)"""
    )
    assert clipped == []
    heights = page.locator("table.history tbody tr").evaluate_all(
        "rows => rows.map(r => r.getBoundingClientRect().height)"
    )
    assert max(heights) - min(heights) < 1, heights


def test_the_revision_and_preflight_pages(page, live_server, viewer, analyticbot, artifacts):
    now = timezone.now()
    GateRun.objects.create(
        database=analyticbot,
        revisions=PENDING,
        state="succeeded",
        verdict="fail",
        requested_at=now - timezone.timedelta(minutes=30),
        finished_at=now - timezone.timedelta(minutes=29),
        results=[
            {
                "name": "rehearsal",
                "title": "Rehearsal of the pending revisions",
                "verdict": "fail",
                "summary": "No rehearsal of 0017, 0018, 0019, 0020 yet.",
                "evidence": {},
            }
        ],
    )
    Rehearsal.objects.create(
        database=analyticbot,
        revisions=PENDING,
        from_revisions=["0016"],
        to_revision="0020",
        state="succeeded",
        requested_at=now - timezone.timedelta(minutes=10),
        finished_at=now - timezone.timedelta(minutes=9),
        total_seconds=1.2,
        timings=[{"revision": r, "seconds": 0.3, "lock_wait_ms": 2, "ok": True} for r in PENDING],
    )
    GateRun.objects.create(
        database=analyticbot,
        revisions=["0017"],
        state="succeeded",
        verdict="pass",
        requested_at=now - timezone.timedelta(days=2),
        finished_at=now - timezone.timedelta(days=2),
    )
    page.set_viewport_size({"width": 1280, "height": 1000})
    log_in(page, live_server, "vera")
    page.goto(f"{live_server.url}/databases/{analyticbot.name}/revisions/0020/")
    no_sideways_scroll(page)
    assert page.locator(".safe code").count() > 0
    page.screenshot(path=artifacts / "revision-0020-1280.png", full_page=True)
    page.goto(f"{live_server.url}/databases/{analyticbot.name}/preflight/")
    no_sideways_scroll(page)
    assert page.locator("#gates-verdict + [data-freshness='out-of-date']").is_visible()
    assert page.locator("#recent-gate-runs tr[data-freshness='out-of-date']").count() == 2
    page.screenshot(path=artifacts / "preflight-1280.png", full_page=True)
