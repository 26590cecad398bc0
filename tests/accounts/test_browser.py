"""In Chromium: a viewer who opens a page that needs the engineer role reads why, in the layout."""

import pytest
from helpers import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_viewer_sees_which_role_the_register_page_needs(page, live_server, viewer, artifacts):
    log_in(page, live_server, "vera")
    response = page.goto(f"{live_server.url}/databases/new/")
    assert response is not None and response.status == 403
    assert page.title() == "Not allowed with your role · Runway"
    assert page.get_by_role("heading", name="Not allowed with your role").is_visible()
    reason = page.get_by_text("This needs the engineer role; you are a viewer.")
    assert reason.is_visible()
    assert page.get_by_text("ask an admin for the engineer role").is_visible()
    assert page.get_by_role("navigation").get_by_role("link", name="Databases").is_visible()
    assert page.get_by_text("vera · viewer").is_visible()
    page.screenshot(path=artifacts / "refused-403.png", full_page=True)
    page.get_by_role("link", name="Back to the databases").click()
    page.wait_for_url(f"{live_server.url}/")
