"""The audit page's action filter (families and actions from the trail), its links to the objects
of the events, and its details as label: value lines."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from helpers import make_database

from dashboard.audit import actions
from dashboard.audit.chain import record
from dashboard.backups.models import Backup
from runbooks.models import Run

URL = reverse("audit-events")
CSV_URL = reverse("audit-export-csv")
EXPORTS = [CSV_URL, reverse("audit-export-json"), reverse("audit-export-pdf")]


def listed(body: str) -> list[str]:
    """The actions of the events in the table, top down."""
    table = body[body.index("<tbody>") : body.index("</tbody>")]
    actions = re.findall(r"<td class=\"wrap\"><code>(.*?)</code>", table)
    return [action.replace("<wbr>", "") for action in actions]


def select_of(body: str) -> str:
    start = body.index('<select name="action"')
    return body[start : body.index("</select>", start)]


def groups(body: str) -> dict[str, list[tuple[str, str]]]:
    """The action select's optgroups: label -> [(value, text), ...]."""
    found = {}
    for label, inner in re.findall(
        r'<optgroup label="([^"]*)">(.*?)</optgroup>', select_of(body), re.S
    ):
        found[label] = re.findall(r'<option value="([^"]*)"[^>]*>([^<]*)</option>', inner)
    return found


def selected(body: str) -> list[str]:
    return re.findall(r'<option value="([^"]*)"[^>]*selected', select_of(body))


def csv_actions(response: Any) -> list[str]:
    text = b"".join(response.streaming_content).decode()
    return [row["action"] for row in csv.DictReader(io.StringIO(text))]


@pytest.fixture
def trail(client, viewer, lead, engineer) -> None:
    client.force_login(viewer)  # user.logged_in
    record(lead, "run.approved", lead)
    record(engineer, "run.started", engineer)
    record(engineer, "run.approved_late", engineer)  # "run.approved" is not its prefix filter
    record(None, "runbook.rollback_started", lead)  # not a "run" event
    record(lead, "backup.completed", lead)
    record(None, "run_step.interrupted", lead)


def test_the_select_lists_the_families_and_their_actions(client, trail):
    body = client.get(URL).content.decode()
    assert '<option value="" selected>Any action</option>' in select_of(body)
    assert groups(body) == {
        "Backups": [("backup.", "Backups (backup.*)"), ("backup.completed", "backup.completed")],
        "Runs": [
            ("run.", "Runs (run.*)"),
            ("run.approved", "run.approved"),
            ("run.approved_late", "run.approved_late"),
            ("run.started", "run.started"),
        ],
        "Run step jobs": [
            ("run_step.", "Run step jobs (run_step.*)"),
            ("run_step.interrupted", "run_step.interrupted"),
        ],
        "Runbook rollbacks": [
            ("runbook.", "Runbook rollbacks (runbook.*)"),
            ("runbook.rollback_started", "runbook.rollback_started"),
        ],
        "Users": [("user.", "Users (user.*)"), ("user.logged_in", "user.logged_in")],
    }


def test_the_actions_come_from_one_walk_of_the_action_index(trail):
    """A loose index scan: the same as SELECT DISTINCT, without reading every index entry."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT action FROM audit_auditevent")
        distinct = sorted(row[0] for row in cursor.fetchall())
    with CaptureQueriesContext(connection) as queries:
        assert actions.known() == distinct
    assert len(queries) == 1 and "WITH RECURSIVE" in queries[0]["sql"]


@pytest.mark.parametrize("value", ["run.", "run", "run.*"])
def test_a_family_selects_its_events_only_on_the_page_and_in_the_csv(client, trail, value):
    body = client.get(URL, {"action": value}).content.decode()
    assert listed(body) == ["run.approved_late", "run.started", "run.approved"]
    assert selected(body) == ["run."]  # older links (run, run.*) show as the family
    assert csv_actions(client.get(CSV_URL, {"action": value})) == [
        "run.approved",
        "run.started",
        "run.approved_late",
    ]


def test_an_action_selects_exactly_that_action(client, trail):
    body = client.get(URL, {"action": "run.approved"}).content.decode()
    assert listed(body) == ["run.approved"] and selected(body) == ["run.approved"]
    assert csv_actions(client.get(CSV_URL, {"action": "run.approved"})) == ["run.approved"]


@pytest.mark.parametrize("value", ["run.appr", "nothing.here", "<script>x</script>", "run.%"])
def test_an_action_not_in_the_list_is_refused_and_the_filters_are_kept(client, trail, value):
    response = client.get(URL, {"action": value, "actor": "erin", "since": "2020-01-01"})
    body = response.content.decode()
    assert response.status_code == 200
    assert "No event has the action" in body and "choose an action or a family" in body
    assert "<script>x</script>" not in body
    assert CSV_URL not in body  # no export of a filter that does not hold
    assert 'value="erin"' in body and 'value="2020-01-01"' in body
    assert len(selected(body)) == 1 and "(not in the trail)" in select_of(body)
    for url in EXPORTS:
        refused = client.get(url, {"action": value, "actor": "erin"})
        assert refused.status_code == 400
        assert refused["Content-Type"].startswith("text/plain")
        assert refused.content.decode().startswith("Bad audit filter. action: No event has the")


def type_select_of(body: str) -> str:
    start = body.index('<select name="object_type"')
    return body[start : body.index("</select>", start)]


def test_the_object_type_is_chosen_from_the_types_in_the_trail(client, viewer, lead):
    made = objects(lead)
    record(lead, "database.registered", made["db"])
    record(lead, "backup.requested", made["backup"])
    record(None, "run", None)  # about no object: not a type to choose
    client.force_login(viewer)
    options = re.findall(
        r'<option value="([^"]*)"[^>]*>([^<]*)</option>', type_select_of(client.get(URL).text)
    )
    assert options == [
        ("", "Any type"),
        ("backup", "backup"),
        ("manageddatabase", "manageddatabase"),
        ("user", "user"),  # the viewer's log-in
    ]
    with CaptureQueriesContext(connection) as queries:
        assert actions.object_types() == ["backup", "manageddatabase", "user"]
    assert len(queries) == 1 and "WITH RECURSIVE" in queries[0]["sql"]
    body = client.get(URL, {"object_type": "backup"}).text
    assert listed(body) == ["backup.requested"]
    assert re.findall(r'<option value="([^"]*)"[^>]*selected', type_select_of(body)) == ["backup"]
    assert csv_actions(client.get(CSV_URL, {"object_type": "backup"})) == ["backup.requested"]


@pytest.mark.parametrize("value", ["backu", "<b>run</b>", "%", "user' OR '1'='1"])
def test_an_object_type_not_in_the_trail_is_refused_and_the_filters_are_kept(client, trail, value):
    body = client.get(URL, {"object_type": value, "actor": "erin"}).text
    assert "No event is about an object of type" in body and "choose a type from the list" in body
    assert "<b>run</b>" not in body and CSV_URL not in body
    assert 'value="erin"' in body and "(not in the trail)" in type_select_of(body)
    for url in EXPORTS:
        refused = client.get(url, {"object_type": value})
        assert refused.status_code == 400
        assert "object_type: No event is about an object of type" in refused.content.decode()


def test_the_actor_field_suggests_the_users(client, trail):
    body = client.get(URL).content.decode()
    assert 'list="audit-actors"' in body
    for name in ("system", "erin", "leo", "vera"):
        assert f'<option value="{name}">' in body


def objects(lead: Any) -> dict[str, Any]:
    db = make_database()
    backup = Backup.objects.create(database=db, requested_by=lead)
    run = Run.objects.create(
        runbook_id="upgrade", runbook_title="Upgrade", runbook={}, database=db, started_by=lead
    )
    return {"db": db, "backup": backup, "run": run}


def test_objects_link_to_their_pages(client, viewer, lead):
    made = objects(lead)
    record(lead, "database.registered", made["db"])
    record(lead, "backup.requested", made["backup"])
    record(lead, "run.started", made["run"])
    client.force_login(viewer)
    body = client.get(URL).content.decode()
    name, backup, run = made["db"].name, made["backup"].pk, made["run"].pk
    assert f'<a href="{reverse("database-detail", args=[name])}">{name}</a>' in body
    assert f'<a href="{reverse("backup-detail", args=[name, backup])}">backup #{backup}' in body
    assert f'<a href="{reverse("run-detail", args=[name, run])}">' in body


def test_a_deleted_object_is_plain_text(client, viewer, lead):
    gone = make_database(name="gonebot")
    record(lead, "database.registered", gone)
    gone.delete()
    client.force_login(viewer)
    body = client.get(URL).content.decode()
    assert "gonebot" in body and reverse("database-detail", args=["gonebot"]) not in body


def test_links_cost_one_query_per_object_type(client, viewer, lead, django_assert_max_num_queries):
    client.force_login(viewer)
    made = objects(lead)
    record(lead, "run.started", made["run"])

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(URL).status_code == 200
        return len(captured)

    few = queries()
    for i in range(16):
        db = make_database(name=f"db{i}")
        backup = Backup.objects.create(database=db, requested_by=lead)
        run = Run.objects.create(runbook_id="u", runbook_title="U", runbook={}, database=db,
                                 started_by=lead)  # fmt: skip
        record(lead, "database.registered", db)
        record(lead, "backup.requested", backup)
        record(lead, "run.started", run)
    with django_assert_max_num_queries(few + 2):  # a query for databases', one for backups'
        body = client.get(URL).content.decode()
    assert body.count('href="/databases/db') == 48  # 16 databases, their backups and runs
    assert f'href="{reverse("run-detail", args=["analyticbot", made["run"].pk])}"' in body


def test_details_read_as_label_value_lines(client, viewer, lead):
    client.force_login(viewer)  # (an event of its own: before the one looked at)
    record(lead, "run.step_finished", lead, details={"step": "upgrade", "job_state": "succeeded",
           "window": {"start": "09:00", "end": "10:00"}, "gates": ["lint", "lock"]})  # fmt: skip
    body = client.get(URL).content.decode()
    cell = body[body.index('<td class="small details-cell">') :]
    cell = cell[: cell.index("</td>")]
    for line in ("step:</span> upgrade", "job state:</span> succeeded",
                 "window start:</span> 09:00", "gates:</span> lint, lock"):  # fmt: skip
        assert f'<span class="k">{line}</div>' in cell
    assert "{" not in cell and "<details>" not in cell  # all shown: no JSON needed


def test_long_details_are_cut_with_the_whole_json_behind_a_disclosure(client, viewer, lead):
    client.force_login(viewer)  # (an event of its own: before the one looked at)
    details = {f"key_{i}": f"value {i}" for i in range(9)} | {"reason": "x" * 500}
    record(lead, "backup.failed", lead, details=details)
    body = client.get(URL).content.decode()
    cell = body[body.index('<td class="small details-cell">') :]
    cell = cell[: cell.index("</td>")]
    assert cell.count('<div class="dl">') == 6
    assert "4 more lines: all details (JSON)</summary>" in cell
    assert "&quot;reason&quot;: &quot;" + "x" * 500 in cell  # the JSON, whole and escaped
