"""In Chromium: every page names its icon (static/favicon.svg), so no page load asks the server
for a /favicon.ico that is not there."""

from __future__ import annotations

import pytest
from django.core.signals import request_started
from helpers import log_in, make_database

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_no_page_load_asks_for_a_missing_favicon(page, live_server, viewer):
    """The browser's own favicon requests never reach Playwright's network events: the server
    side records every path it is asked for instead."""
    db = make_database()
    asked: list[str] = []

    def record(sender, environ, **kwargs):
        asked.append(environ.get("PATH_INFO", ""))

    failed: list[str] = []
    page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
    request_started.connect(record)
    try:
        log_in(page, live_server, "vera")
        for path in ("/", f"/databases/{db.name}/backups/", "/accounts/login/"):
            page.goto(f"{live_server.url}{path}")
            page.wait_for_load_state("networkidle")
        page.wait_for_timeout(500)
    finally:
        request_started.disconnect(record)
    assert failed == []
    assert "/favicon.ico" not in asked, asked
    assert "/static/favicon.svg" in asked, asked  # the icon the link names, served
    assert page.locator("link[rel=icon]").get_attribute("type") == "image/svg+xml"
