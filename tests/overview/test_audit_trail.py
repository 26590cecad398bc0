import re

import pytest
from django.urls import reverse

from dashboard.audit.chain import record

URL = reverse("audit-events")


def listed(body: str) -> list[str]:
    """The actions of the events the table lists, top down (the filter's select names actions
    too: this reads the table only)."""
    table = body[body.index("<tbody>") : body.index("</tbody>")]
    actions = re.findall(r"<td class=\"wrap\"><code>(.*?)</code>", table)
    return [action.replace("<wbr>", "") for action in actions]


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
    assert listed(body) == ["run.started"]


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


def test_it_pages_by_id_newest_first(client, viewer, lead):
    client.force_login(viewer)  # the log-in is an event too: 61 in all
    events = [record(lead, f"e{i}", lead) for i in range(60)]
    first = client.get(URL).content.decode()
    assert listed(first) == [f"e{i}" for i in range(59, 9, -1)]
    assert f"before={events[10].pk}" in first and "after=" not in first
    second = client.get(URL, {"before": events[10].pk}).content.decode()
    assert listed(second) == [f"e{i}" for i in range(9, -1, -1)] + ["user.logged_in"]
    assert "older" not in second and f"after={events[9].pk}" in second
    back = client.get(URL, {"after": events[9].pk}).content.decode()
    assert listed(back) == [f"e{i}" for i in range(59, 9, -1)]


@pytest.mark.parametrize(
    "cursor", ["\u00b2", "\u0663", "9" * 19, "-1", "1e3", "99999999999999999999999"]
)
def test_a_cursor_that_is_no_event_id_shows_the_first_page(client, viewer, lead, cursor):
    record(lead, "e0", lead)
    client.force_login(viewer)
    for name in ("before", "after"):
        response = client.get(URL, {name: cursor})  # "²" is a digit to str.isdigit, not to int
        assert response.status_code == 200 and "e0" in listed(response.content.decode())


def test_pages_keep_the_filters(client, viewer, lead):
    client.force_login(viewer)
    events = [record(lead, f"run.e{i}", lead) for i in range(55)]
    body = client.get(URL, {"action": "run."}).content.decode()
    assert f"?action=run.&amp;before={events[5].pk}" in body


def test_its_export_links_keep_the_filters(client, viewer):
    client.force_login(viewer)
    body = client.get(URL, {"actor": "erin", "since": "2026-01-01", "before": "9"}).content
    for name in ("csv", "json", "pdf"):
        url = reverse(f"audit-export-{name}")
        assert f'href="{url}?actor=erin&amp;since=2026-01-01"'.encode() in body
        assert f'href="{url}?actor=erin&amp;since=2026-01-01&amp;before'.encode() not in body


def test_it_offers_no_export_of_a_bad_filter(client, viewer):
    client.force_login(viewer)
    body = client.get(URL, {"since": "yesterday"}).content
    assert b"Enter a valid date" in body and reverse("audit-export-csv").encode() not in body


def test_it_escapes_object_names(client, viewer, lead):
    lead.username = "<script>alert(1)</script>"
    record(lead, "note", lead)
    client.force_login(viewer)
    body = client.get(URL).content
    assert b"<script>alert(1)</script>" not in body and b"&lt;script&gt;" in body
