import pytest
from django.urls import reverse

from dashboard.audit.chain import record

URL = reverse("audit-events")


def test_it_lists_events_for_a_viewer(client, viewer, lead):
    record(lead, "database.registered", lead, details={"name": "x"})
    client.force_login(viewer)
    response = client.get(URL)
    assert response.status_code == 200
    assert b"database.registered" in response.content


@pytest.mark.parametrize("who", ["viewer", "engineer", "lead", "admin_user"])
def test_every_role_can_read_it(client, request, who):
    client.force_login(request.getfixturevalue(who))
    assert client.get(URL).status_code == 200


def test_it_forbids_a_user_without_a_role(client, outsider):
    client.force_login(outsider)
    assert client.get(URL).status_code == 403


def test_it_sends_anonymous_users_to_log_in(client, db):
    response = client.get(URL)
    assert response.status_code == 302 and reverse("login") in response["Location"]


def test_it_rejects_post(client, viewer):
    client.force_login(viewer)
    assert client.post(URL).status_code == 405


def test_it_filters_by_actor_and_action(client, viewer, lead, engineer):
    record(lead, "run.approved", lead)
    record(engineer, "run.started", engineer)
    client.force_login(viewer)
    body = client.get(URL, {"actor": "erin", "action": "run."}).content.decode()
    assert "run.started" in body and "run.approved" not in body


def test_it_explains_a_reversed_date_range(client, viewer):
    client.force_login(viewer)
    response = client.get(URL, {"since": "2026-02-01", "until": "2026-01-01"})
    assert response.status_code == 200
    assert "must not be after" in response.content.decode()


def test_it_explains_a_malformed_date(client, viewer):
    client.force_login(viewer)
    response = client.get(URL, {"since": "yesterday"})
    assert "Enter a valid date" in response.content.decode()


def test_an_htmx_request_gets_only_the_table(client, viewer):
    client.force_login(viewer)
    response = client.get(URL, headers={"HX-Request": "true"})
    assert b"<table" in response.content and b"<html" not in response.content


def test_the_page_escapes_user_text(client, viewer, lead):
    record(lead, "note", lead, details={"text": "<script>alert(1)</script>"})
    client.force_login(viewer)
    assert b"<script>alert(1)</script>" not in client.get(URL).content


def test_its_query_count_does_not_grow_with_events(
    client, viewer, lead, django_assert_max_num_queries
):
    for i in range(30):
        record(lead, f"e{i}", lead)
    client.force_login(viewer)
    with django_assert_max_num_queries(8):
        client.get(URL)
