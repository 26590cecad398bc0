"""In Chromium: the history page of a project registered as its alembic.ini, whose revisions
live in two version locations, with branch labels and a depends_on between the branches."""

from __future__ import annotations

import pytest
from helpers import checked, log_in, make_database, two_location_project

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_lead_reads_branch_labels_and_dependencies_across_version_locations(
    page, live_server, lead, tmp_path, artifacts
):
    db = make_database(script_location=str(two_location_project(tmp_path)))
    checked(db, "b100")  # what Alembic leaves: b100 stands for 2b1d, which it depends on
    log_in(page, live_server, "leo")
    page.goto(f"{live_server.url}/databases/analyticbot/history/")

    assert page.locator(".pagehead .locations").inner_text() == (
        "Versions from app/migrations/versions/ and billing/versions/ "
        "(version_locations in alembic.ini)"
    )
    assert page.locator("tr[data-rev='b100'] [data-label='billing']").is_visible()
    assert page.locator("tr[data-rev='1a0c'] [data-label='core']").is_visible()
    depends = page.locator("tr[data-rev='b100'] a[data-depends='2b1d']")
    assert depends.inner_text() == "depends on 2b1d"
    assert page.locator("tr[data-rev='b100'] td.file").inner_text() == (
        "b100_create_invoices.py\nin billing/versions/"
    )
    # Rows keep the graph's height, so its lines still join.
    heights = page.locator("table.history tbody tr").evaluate_all(
        "rows => rows.map(r => r.getBoundingClientRect().height)"
    )
    assert max(heights) - min(heights) < 1, heights
    page.screenshot(path=artifacts / "history-branch-labels.png", full_page=True)

    depends.click()
    page.wait_for_url("**#rev-2b1d")
    assert page.locator("tr#rev-2b1d").evaluate("r => r.matches(':target')")
