"""The NUL net: a NUL in the path, the query string or a form field is a 400 in the layout,
before any view; without the net the views refuse it themselves (404 or 400, never 500)."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import Client, override_settings
from helpers import make_database

from runbooks.models import Run

NET = "dashboard.accounts.middleware.refuse_nul_characters"


@pytest.fixture
def run(db, engineer):
    db_ = make_database()
    return Run.objects.create(
        runbook_id="x", runbook_title="X", runbook={"phases": []}, database=db_, started_by=engineer
    )


def _bad_request(response) -> str:
    assert response.status_code == 400
    return response.content.decode()


def test_a_nul_in_a_query_parameter_is_a_400_in_the_layout(client, viewer, run):
    client.force_login(viewer)
    page = _bad_request(client.get(f"/databases/analyticbot/runs/{run.pk}/?page=%00"))
    assert page.startswith("<!doctype html>") and "NUL character" in page
    assert 'href="/runs/"' in page and "Log out" in page


def test_the_reviews_request_is_a_400_fragment(client, viewer, run):
    client.force_login(viewer)
    response = client.get(
        f"/databases/analyticbot/runs/{run.pk}/?step=%00", headers={"HX-Request": "true"}
    )
    page = _bad_request(response)
    assert "<html" not in page and "NUL character" in page


@pytest.mark.parametrize(
    "url",
    [
        "/audit/?actor=a%00b",
        "/audit/?%00=1",
        "/databases/analyticbot/revisions/00%0017/",
        "/runs/%00/",
    ],
)
def test_a_nul_anywhere_in_the_address_is_a_400(client, viewer, url):
    client.force_login(viewer)
    _bad_request(client.get(url))


def test_a_nul_in_a_form_field_is_a_400(client, engineer, run):
    client.force_login(engineer)
    url = f"/databases/analyticbot/runs/{run.pk}/abort/"
    _bad_request(client.post(url, {"reason": "because\x00"}))
    _bad_request(client.post(url, {"reason": "x"}, QUERY_STRING="from=%00"))
    assert Run.objects.get().state == run.state  # nothing happened


def test_a_nul_in_a_multipart_form_is_a_400(client, engineer):
    client.force_login(engineer)
    _bad_request(client.post("/databases/new/", {"name": "a\x00"}))  # multipart by default


def test_anonymous_requests_meet_the_net_too(client, db):
    page = _bad_request(client.get("/accounts/login/?next=%00"))
    assert "Log out" not in page


def test_ordinary_requests_pass(client, viewer, run):
    client.force_login(viewer)
    assert client.get(f"/databases/analyticbot/runs/{run.pk}/?page=2").status_code == 200
    assert (
        client.post("/accounts/logout/", "a=%2500", content_type="application/json").status_code
        == 302
    )


@override_settings(MIDDLEWARE=[m for m in settings.MIDDLEWARE if m != NET])
def test_without_the_net_the_run_page_refuses_a_nul_step_itself(viewer, run):
    client = Client()
    client.force_login(viewer)
    response = client.get(
        f"/databases/analyticbot/runs/{run.pk}/?step=%00", headers={"HX-Request": "true"}
    )
    assert response.status_code == 404 and "<html" not in response.content.decode()
