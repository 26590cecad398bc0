"""The CSV export written by PostgreSQL (COPY) against the Python writer it replaced
(``reports.stream_csv``): the same rows and cells, the same filters, the same chain head bound."""

from __future__ import annotations

import csv
import io
import json
from datetime import date
from typing import Any

import pytest
from django.db import connection
from django.http import StreamingHttpResponse
from django.urls import reverse
from helpers import Thing, record_at

from dashboard.audit import csv_export, reports
from dashboard.audit.chain import record
from dashboard.audit.models import AuditEvent

CSV_URL = reverse("audit-export-csv")
PAGE_URL = reverse("audit-events")


class Actor:
    """Anyone record() can name: a pk and a user name."""

    def __init__(self, pk: int, name: str) -> None:
        self.pk, self.name = pk, name

    def get_username(self) -> str:
        return self.name


def parsed(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode())))


def old_csv(filters: dict[str, Any], head: tuple[int, str] | None) -> bytes:
    return b"".join(reports.stream_csv(reports.export_events(filters, head)))


def new_csv(filters: dict[str, Any], head: tuple[int, str] | None) -> bytes:
    return b"".join(csv_export.stream_csv(filters, head))


def body(response: Any) -> bytes:
    assert isinstance(response, StreamingHttpResponse)
    return b"".join(response.streaming_content)


DETAILS = reports.CSV_HEADER.index("details")


@pytest.fixture
def varied(monkeypatch, lead, engineer) -> list[AuditEvent]:
    """Events whose cells need quoting, escaping or defusing, over three days of 2021."""
    formula_actor = Actor(9001, "=cmd|' /C calc'!A0")
    return [
        record_at(monkeypatch, "2021-03-01T08:00:00", lead, "run.started", Thing(1, "plain"),
                  object_type="run", details={"b": 1, "aa": [1, 2.5, None, True], "ccc": {}}),
        record_at(monkeypatch, "2021-03-01T23:59:59.999999", engineer, "run.approved",
                  Thing(2, 'billing, "prod"\nsecond line'), object_type="run",
                  details={"comment": 'says "ok", then\nleaves\r\n\ttab', "n": -1.25,
                           "nested": {"zz": "ünïcødé ✓ 日本", "a": {"y": 1, "x": [{"k": "v"}]}}}),
        record_at(monkeypatch, "2021-03-02T00:00:00", formula_actor, "backup.requested",
                  Thing("-5", "+SUM(A1:A9)"), object_type="@type", details={"text": "=1+1"}),
        record_at(monkeypatch, "2021-03-02T12:00:00", None, "runbook.rollback_started",
                  Thing(3, "\tindented"), object_type="runbook",
                  details={"emoji": "🙂", "ctrl": "\x01\x1f", "slash": "a/b\\c", "big": 10**15}),
        record_at(monkeypatch, "2021-03-03T00:00:00", None, "run", None, details={}),
        record_at(monkeypatch, "2021-03-03T06:00:00", lead, "run_step.interrupted",
                  Thing(4, "@carriage"), object_type="step", details={"": "empty key"}),
    ]  # fmt: skip


def test_the_copy_csv_holds_what_the_python_writer_wrote(varied):
    head = reports.chain_head()
    old, new = parsed(old_csv({}, head)), parsed(new_csv({}, head))
    assert new[0] == list(reports.CSV_HEADER) and len(new) == len(old) == 1 + len(varied)
    for old_row, new_row in zip(old, new, strict=True):
        assert (
            new_row[:DETAILS] + new_row[DETAILS + 1 :] == old_row[:DETAILS] + old_row[DETAILS + 1 :]
        )
        if old_row is not old[0]:
            # The same JSON value; the text is PostgreSQL's jsonb text (its key order).
            assert json.loads(new_row[DETAILS]) == json.loads(old_row[DETAILS])
    by_id = {int(row[0]): row for row in new[1:]}
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, details::text FROM audit_auditevent")
        assert all(by_id[pk][DETAILS] == text for pk, text in cursor.fetchall())
    formula = by_id[varied[2].pk]
    assert formula[3] == "'=cmd|' /C calc'!A0" and formula[2] == "9001"
    assert formula[5:8] == ["'@type", "'-5", "'+SUM(A1:A9)"]
    assert by_id[varied[3].pk][2] == "" and by_id[varied[3].pk][3] == "system"  # null actor_id
    assert by_id[varied[3].pk][7] == "'\tindented" and by_id[varied[5].pk][7] == "'@carriage"
    assert by_id[varied[1].pk][7] == 'billing, "prod"\nsecond line'
    assert by_id[varied[1].pk][1] == "2021-03-01T23:59:59.999999+00:00"


def test_the_copy_csv_differs_from_the_python_writer_in_the_details_key_order_only(varied):
    """Byte for byte, once the details are written the old way (empty cells unquoted, too)."""
    head = reports.chain_head()
    new = parsed(new_csv({}, head))
    for row in new[1:]:
        row[DETAILS] = json.dumps(json.loads(row[DETAILS]), sort_keys=True, ensure_ascii=False)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(new)
    old = old_csv({}, head)
    assert buffer.getvalue().encode() == old
    raw = new_csv({}, head)
    assert raw.startswith(b"id,time,actor_id,actor,action,") and b',"",' not in raw


@pytest.mark.parametrize(
    "filters",
    [
        {"actor": "erin"},
        {"action": "run."},
        {"action": "run.approved"},
        {"since": "2021-03-02"},
        {"until": "2021-03-01"},
        {"since": "2021-03-02", "until": "2021-03-02"},
        {"actor": "leo", "action": "run.", "since": "2021-03-01", "until": "2021-03-03"},
        {"object_type": "run", "object_id": "2"},
    ],
)
def test_the_filters_select_what_the_page_and_the_python_writer_select(
    client, viewer, varied, filters
):
    client.force_login(viewer)  # an event of today: outside every period above
    head = reports.chain_head()
    response = client.get(CSV_URL, filters)
    assert response.status_code == 200
    ids = [int(row[0]) for row in parsed(body(response))[1:]]
    assert ids == [int(row[0]) for row in parsed(old_csv(_cleaned(filters), head))[1:]]
    cleaned = _cleaned(filters)
    page = reports.filtered_events(cleaned).filter(id__lte=head[0]).order_by("id")
    assert ids == list(page.values_list("id", flat=True)) and ids
    listed = client.get(PAGE_URL, filters).content.decode()
    assert all(f"#{pk}" in listed or f">{pk}<" in listed for pk in ids)


def _cleaned(filters: dict[str, str]) -> dict[str, Any]:
    return {k: date.fromisoformat(v) if k in ("since", "until") else v for k, v in filters.items()}


def test_an_event_appended_after_the_head_is_left_out(client, viewer, varied, lead):
    client.force_login(viewer)
    response = client.get(CSV_URL)
    head = AuditEvent.objects.order_by("-id").first()
    late = record(lead, "run.finished", None)  # appended before the body is read
    ids = [int(row[0]) for row in parsed(body(response))[1:]]
    assert ids[-1] == head.pk and late.pk not in ids
    assert ids == list(
        AuditEvent.objects.filter(id__lte=head.pk).order_by("id").values_list("id", flat=True)
    )


def test_a_carriage_return_is_quoted(lead):
    """The Python writer (line terminator "\\n") left a bare CR unquoted, which breaks the row for
    a CSV reader; PostgreSQL quotes it."""
    record(lead, "note", Thing(1, "\rstarts"), object_type="db", details={"x": "a\rb"})
    record(lead, "note", Thing(2, "in\rside"), object_type="db")
    rows = parsed(new_csv({}, reports.chain_head()))
    assert [row[7] for row in rows[1:]] == ["'\rstarts", "in\rside"]
    assert json.loads(rows[1][DETAILS]) == {"x": "a\rb"}


def test_an_empty_trail_is_the_header_alone():
    assert (
        new_csv({}, None)
        == b"id,time,actor_id,actor,action,object_type,object_id,object,details,prev_hash,hash\n"
    )


def test_the_cells_are_selected_in_the_header_order(varied):
    sql, params = csv_export.select({}, reports.chain_head())
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        names = [column.name for column in cursor.description]
    assert len(names) == len(reports.CSV_HEADER)
    assert names[0] == "id" and names[-2:] == ["prev_hash", "hash"]
    assert names[1:-2] == [
        "csv_time", "actor_id", "csv_actor_name", "csv_action", "csv_object_type",
        "csv_object_id", "csv_object_repr", "csv_details",
    ]  # fmt: skip


def test_a_client_that_goes_away_leaves_the_connection_usable(varied, monkeypatch):
    monkeypatch.setattr(reports, "CHUNK", 1)
    chunks = csv_export.stream_csv({}, reports.chain_head())
    assert next(chunks).startswith(b"id,") and next(chunks)
    chunks.close()  # mid-COPY
    assert AuditEvent.objects.count() == len(varied)
