"""Refusals in the layout: a 403 names the role needed and the role held and keeps the
navigation; htmx gets a fragment; the 404 lists no URLs; the 500 renders without a database;
an expired form says to reload. Refusing is not an error: one log line, no traceback."""

from __future__ import annotations

import logging
import sys

import pytest
from django.core.exceptions import PermissionDenied
from django.test import Client, RequestFactory
from django.urls import path
from helpers import make_database
from test_roles import ACCESS, _url

import dashboard.urls as root
from dashboard.accounts.refusals import server_error

NAV = ('href="/runs/"', 'href="/audit/"', "Log out")


def _denied(request):
    raise PermissionDenied("Only the person who started this run may cancel it.")


def _boom(request):
    raise RuntimeError("a bug")


# A URL table with two test-only views in front of Runway's own (ROOT_URLCONF may be a module).
urlpatterns = [
    path("test-only/denied/", _denied),
    path("test-only/boom/", _boom),
    *root.urlpatterns,
]
handler400, handler403 = root.handler400, root.handler403
handler404, handler500 = root.handler404, root.handler500


@pytest.fixture
def test_urls(settings):
    settings.ROOT_URLCONF = sys.modules[__name__]


def _page(response) -> str:
    return response.content.decode()


REFUSED = [
    (name, needed, who)
    for name, (_, needed) in sorted(ACCESS.items())
    for who in ("viewer", "engineer")
    if (needed, who) in {("engineer", "viewer"), ("lead", "viewer"), ("lead", "engineer")}
]


@pytest.mark.parametrize(("name", "needed", "who"), REFUSED)
def test_a_refusal_names_the_role_needed_and_held_and_keeps_the_nav(
    client, request, name, needed, who
):
    client.force_login(request.getfixturevalue(who))
    method, _ = ACCESS[name]
    url = _url(name)
    response = client.get(url) if method == "GET" else client.post(url)
    assert response.status_code == 403
    article = "an" if who == "engineer" else "a"
    page = _page(response)
    assert f"This needs the {needed} role; you are {article} {who}." in page
    assert page.startswith("<!doctype html>") and all(link in page for link in NAV)
    assert "Back to the databases" in page


def test_someone_without_a_role_is_told_so(client, outsider):
    client.force_login(outsider)
    response = client.get("/runs/")
    assert response.status_code == 403
    assert "This needs the viewer role; you have no role yet" in _page(response)


def test_an_htmx_refusal_is_a_fragment_with_the_same_status(client, viewer):
    make_database()
    client.force_login(viewer)
    response = client.post(
        "/databases/analyticbot/test-connection/", headers={"HX-Request": "true"}
    )
    assert response.status_code == 403
    page = _page(response)
    assert "<html" not in page and "This needs the engineer role; you are a viewer." in page


def test_a_refusal_logs_one_line_without_a_traceback(client, viewer, caplog):
    client.force_login(viewer)
    with caplog.at_level(logging.INFO):
        assert client.get("/databases/new/").status_code == 403
    lines = [r for r in caplog.records if r.name in ("dashboard.refusals", "django.request")]
    assert [(r.name, r.levelname) for r in lines] == [("dashboard.refusals", "WARNING")]
    assert lines[0].exc_info is None
    assert lines[0].getMessage() == (
        "Refused GET /databases/new/ to vera: needs the engineer role, holds viewer"
    )


def test_a_permission_denied_raised_in_a_view_shows_its_message(client, lead, test_urls):
    client.force_login(lead)
    response = client.get("/test-only/denied/")
    assert response.status_code == 403
    page = _page(response)
    assert "Only the person who started this run may cancel it." in page
    assert all(link in page for link in NAV)
    fragment = client.get("/test-only/denied/", headers={"HX-Request": "true"})
    assert fragment.status_code == 403 and "<html" not in _page(fragment)


@pytest.mark.parametrize("who", ["anonymous", "viewer"])
def test_the_404_page_is_in_the_layout_and_lists_no_urls(client, request, who):
    if who != "anonymous":
        client.force_login(request.getfixturevalue(who))
    response = client.get("/databases/analyticbot/nothing-here/")
    assert response.status_code == 404
    page = _page(response)
    assert page.startswith("<!doctype html>") and "404 Not found" in page
    for leak in ("&lt;slug:name&gt;", "<slug:", "URLconf", "tried", "admin/", "runs/new/"):
        assert leak not in page
    assert all(link in page for link in NAV) == (who != "anonymous")


def test_a_views_own_404_message_is_shown(client, viewer):
    make_database()
    client.force_login(viewer)
    response = client.get("/databases/analyticbot/revisions/9999/")
    assert response.status_code == 404
    assert "No revision 9999 in analyticbot&#x27;s scripts." in _page(response)


def test_an_htmx_404_is_a_fragment(client, viewer):
    client.force_login(viewer)
    response = client.get("/databases/nowhere/backups/", headers={"HX-Request": "true"})
    assert response.status_code == 404 and "<html" not in _page(response)


def test_a_500_renders_the_500_page(client, viewer, test_urls):
    client.force_login(viewer)
    client.raise_request_exception = False  # here the 500 page itself is under test
    response = client.get("/test-only/boom/")
    assert response.status_code == 500
    page = _page(response)
    assert "Something went wrong on our side" in page and "500 Server error" in page
    assert "a bug" not in page and "Traceback" not in page


def test_the_500_page_needs_no_database_and_no_request_context():
    # No db fixture: any query would raise here.
    response = server_error(RequestFactory().get("/"))
    assert response.status_code == 500
    page = _page(response)
    assert page.startswith("<!doctype html>") and "Something went wrong on our side" in page
    assert "Log out" not in page


def test_an_expired_form_says_to_reload(viewer):
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(viewer)
    response = strict.post("/runs/new/", {"runbook": "x"})
    assert response.status_code == 403
    page = _page(response)
    assert "This form expired" in page and "Reload the page" in page
    assert all(link in page for link in NAV)
    fragment = strict.post("/runs/new/", headers={"HX-Request": "true"})
    assert fragment.status_code == 403 and "<html" not in _page(fragment)
