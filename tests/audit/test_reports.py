"""Audit exports for a period: CSV, JSON with the hash chain (checked outside Runway), PDF."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.http import StreamingHttpResponse
from django.template.loader import render_to_string
from django.urls import reverse
from helpers import ROOT, Thing, record_at

from dashboard.audit import chain, reports
from dashboard.audit.chain import compute_hash, record
from dashboard.audit.models import AuditEvent

CSV_URL = reverse("audit-export-csv")
JSON_URL = reverse("audit-export-json")
PDF_URL = reverse("audit-export-pdf")
EXPORTS = [CSV_URL, JSON_URL, PDF_URL]
VERIFIER = ROOT / "tools" / "verify_audit_export.py"
JANUARY = {"since": "2020-01-01", "until": "2020-01-31"}


@pytest.fixture
def viewing(client: Any, viewer: Any) -> Any:
    """The client, logged in as the viewer (logging in is an audit event of its own, today)."""
    client.force_login(viewer)
    return client


@pytest.fixture
def trail(viewing, monkeypatch, lead, engineer) -> list[AuditEvent]:
    """After the viewer's log-in, five events of 2020: one in the December before, three in
    January (two by the engineer), one in February."""
    db1, db2 = Thing(1, "analyticbot"), Thing(2, "billing – prod")
    return [
        record_at(monkeypatch, "2019-12-31T23:59:59", lead, "database.registered", db1,
                  object_type="database", details={"environment": "production"}),
        record_at(monkeypatch, "2020-01-01T00:00:00", engineer, "backup.requested", db1,
                  object_type="database", details={"reason": "before 0017"}),
        record_at(monkeypatch, "2020-01-15T12:30:00", lead, "run.approved", db2,
                  object_type="database", details={"comment": "ok ✓", "n": 1.5}),
        record_at(monkeypatch, "2020-01-31T23:59:59.999999", engineer, "backup.validated", db2,
                  object_type="database", details={}),
        record_at(monkeypatch, "2020-02-01T00:00:00", lead, "run.started", db1,
                  object_type="database"),
    ]  # fmt: skip


def body(response: Any) -> bytes:
    assert isinstance(response, StreamingHttpResponse)
    return b"".join(response.streaming_content)


def export_json(client: Any, tmp_path: Path, **filters: str) -> Path:
    response = client.get(JSON_URL, filters)
    assert response.status_code == 200, response.content
    path = tmp_path / "export.json"
    path.write_bytes(body(response))
    return path


def verify_file(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(VERIFIER), str(path)], capture_output=True, text=True, timeout=60
    )


def tamper(sql: str) -> None:
    """What the database owner could do behind Runway's back: bypass the append-only trigger."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_append_only")
        cursor.execute(sql)
        cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_append_only")


# --- CSV ---


def test_the_csv_holds_the_period_oldest_first(viewing, trail):
    response = viewing.get(CSV_URL, JANUARY)
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == (
        'attachment; filename="runway-audit-2020-01-01_2020-01-31.csv"'
    )
    rows = list(csv.DictReader(io.StringIO(body(response).decode())))
    assert [int(r["id"]) for r in rows] == [e.pk for e in trail[1:4]]
    first = rows[0]
    assert first["time"] == "2020-01-01T00:00:00.000000+00:00"
    assert first["actor"] == "erin" and first["action"] == "backup.requested"
    assert first["object"] == "analyticbot" and first["object_id"] == "1"
    assert json.loads(first["details"]) == {"reason": "before 0017"}
    assert first["prev_hash"] == trail[0].hash and first["hash"] == trail[1].hash
    assert json.loads(rows[1]["details"]) == {"comment": "ok ✓", "n": 1.5}


def test_the_csv_filters_like_the_page(viewing, trail):
    rows = list(
        csv.DictReader(
            io.StringIO(body(viewing.get(CSV_URL, {"actor": "erin", "action": "backup."})).decode())
        )
    )
    assert [r["action"] for r in rows] == ["backup.requested", "backup.validated"]


def test_the_csv_names_a_period_without_bounds_after_today(viewing, trail):
    response = viewing.get(CSV_URL)
    today = datetime.now(UTC).date().isoformat()
    assert f'filename="runway-audit-start_{today}.csv"' in response["Content-Disposition"]
    assert len(body(response).decode().splitlines()) == 1 + AuditEvent.objects.count()


def test_the_csv_defuses_spreadsheet_formulas(viewing, lead):
    record(lead, "database.registered", Thing(7, '=HYPERLINK("http://evil","x")'), object_type="db")
    record(lead, "note", Thing(8, "-2+3"), object_type="db", details={"text": "=1+1"})
    *_, formula, sum_ = csv.DictReader(io.StringIO(body(viewing.get(CSV_URL)).decode()))
    assert formula["object"] == '\'=HYPERLINK("http://evil","x")'
    assert sum_["object"] == "'-2+3" and json.loads(sum_["details"]) == {"text": "=1+1"}


def test_exports_stream_a_chunk_at_a_time(viewing, trail, monkeypatch):
    monkeypatch.setattr(reports, "CHUNK", 2)
    for url in (CSV_URL, JSON_URL):
        response = viewing.get(url)
        assert isinstance(response, StreamingHttpResponse)
        assert len(list(response.streaming_content)) >= 3


def test_an_export_stops_at_the_chain_head_it_started_with(viewing, lead, trail):
    response = viewing.get(JSON_URL)
    late = record(lead, "run.finished", None)  # appended before the body is read
    document = json.loads(body(response))
    assert document["meta"]["chain_head"] == {"id": trail[-1].pk, "hash": trail[-1].hash}
    assert late.pk not in [e["id"] for e in document["events"]]


# --- JSON and the outside verifier ---


def test_the_json_carries_every_hashed_field_and_the_chain(viewing, trail):
    response = viewing.get(JSON_URL, JANUARY)
    assert response["Content-Type"] == "application/json"
    assert 'filename="runway-audit-2020-01-01_2020-01-31.json"' in response["Content-Disposition"]
    document = json.loads(body(response))
    meta = document["meta"]
    assert meta["filters"] == {
        "actor": None,
        "action": None,
        "object_type": None,
        "object_id": None,
        "since": "2020-01-01",
        "until": "2020-01-31",
    }
    assert meta["generated_by"] == "vera" and meta["complete"] is False
    assert meta["algorithm"]["genesis"] == chain.GENESIS and "sorted" in meta["algorithm"]["hashed"]
    assert document["count"] == 3
    for exported, event in zip(document["events"], trail[1:4], strict=True):
        assert json.loads(chain.canonical(event)) | {"hash": event.hash} == exported
        assert exported["hash"] == compute_hash(AuditEvent.objects.get(pk=event.pk))


def test_each_exported_event_is_byte_for_byte_what_was_hashed(viewing, lead):
    """PostgreSQL writes the fields around the details: its escaping must be Python's, for
    quotes, backslashes, control characters, non-ASCII text and a null actor."""
    hostile = 'quote " backslash \\ tab \t newline \n cr \r bell \x07 unit \x1f del \x7f é ☃ 🚀'
    record(lead, "run.approved", Thing(1, hostile), object_type="run", details={
        "z": hostile, "a": {"y": [1, 2.5, None, True], "b": hostile}, "ünï": "", "n": 10**30,
    })  # fmt: skip
    record(None, hostile[:80], Thing(hostile[:64], "\u2028 line separator \u2029"),
           object_type="o\x01", details={})  # fmt: skip
    # Flat details, numbers jsonb writes unlike Python, an array.
    record(lead, "backup.completed", Thing(2, "b"), object_type="backup", details={
        "b": hostile, "A": 1, "é": True, "Z": None, "big": -(10**30), "ключ": "значение",
        "emoji🚀": "☃", "aa": "", "a": "0",
    })  # fmt: skip
    record(lead, "backup.completed", Thing(3, "c"), object_type="backup",
           details={"f": 2.5, "e": 1e-7, "i": 3})  # fmt: skip
    record(lead, "backup.completed", Thing(4, "d"), object_type="backup", details=[1, "x"])
    # An event written without its details' stored text (by hand): Python writes the details.
    by_hand = record(lead, "backup.completed", Thing(5, "e"), object_type="backup",
                     details={"b": 2.5, "a": {"d": hostile, "c": 1e20}})  # fmt: skip
    tamper(f"UPDATE audit_auditevent SET details_json = '' WHERE id = {by_hand.pk}")
    text = body(viewing.get(JSON_URL)).decode()
    lines = [line.rstrip(",") for line in text.split("\n") if line.startswith('{"action"')]
    events = list(AuditEvent.objects.order_by("id"))
    assert len(lines) == len(events) >= 7  # the viewer's log-in too
    for line, event in zip(lines, events, strict=True):
        hashed, marker, digest = line.rpartition(',"hash":')
        assert marker and hashed + "}" == chain.canonical(event).decode()
        assert json.loads(digest[:-1]) == event.hash == compute_hash(event)


def test_a_complete_export_verifies_outside_runway(viewing, trail, tmp_path):
    done = verify_file(export_json(viewing, tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: 6 events (the complete trail), 5 links checked, 0 gaps" in done.stdout
    assert f"#{trail[-1].pk} {trail[-1].hash}" in done.stdout


def test_a_filtered_export_verifies_with_its_gaps(viewing, trail, tmp_path):
    done = verify_file(export_json(viewing, tmp_path, actor="leo"))
    assert done.returncode == 0, done.stdout + done.stderr
    # None of leo's three events follows the one before it in the file.
    assert "OK: 3 events (a filtered export), 0 links checked, 3 gaps" in done.stdout


def test_the_verifier_names_an_edited_event(viewing, trail, tmp_path):
    path = export_json(viewing, tmp_path)
    document = json.loads(path.read_text())
    assert document["events"][3]["id"] == trail[2].pk
    document["events"][3]["details"]["comment"] = "approved without review"
    path.write_text(json.dumps(document, indent=2))  # another layout: the verifier must not care
    done = verify_file(path)
    assert done.returncode == 1
    assert done.stdout.strip() == (
        f"BROKEN at event #{trail[2].pk}: its content does not match its hash (edited)"
    )


def test_the_verifier_names_the_event_after_a_removed_one(viewing, trail, tmp_path):
    path = export_json(viewing, tmp_path)
    document = json.loads(path.read_text())
    assert document["events"][2]["id"] == trail[1].pk
    del document["events"][2]
    document["count"] = 5
    path.write_text(json.dumps(document))
    done = verify_file(path)
    assert done.returncode == 1
    assert done.stdout.startswith(f"BROKEN at event #{trail[2].pk}: its prev does not match")


def test_the_verifier_reads_members_in_any_order(viewing, trail, tmp_path):
    path = export_json(viewing, tmp_path)
    document = json.loads(path.read_text())
    del document["events"][2]
    path.write_text(
        json.dumps({"count": 5, "events": document["events"], "meta": document["meta"]})
    )
    done = verify_file(path)
    assert done.returncode == 1  # "complete" is only known at the end: the gap is named then
    assert done.stdout.startswith(f"BROKEN at event #{trail[2].pk}: events are missing before it")


def test_the_verifier_agrees_with_verify_audit_on_a_tampered_trail(viewing, trail, tmp_path):
    tamper(f"UPDATE audit_auditevent SET actor_name = 'mallory' WHERE id = {trail[3].pk}")
    verdict = chain.verify()
    assert verdict.first_broken is not None and verdict.first_broken.pk == trail[3].pk
    done = verify_file(export_json(viewing, tmp_path))
    assert done.returncode == 1
    assert f"BROKEN at event #{trail[3].pk}: its content does not match its hash" in done.stdout


def test_the_verifier_rejects_a_cut_off_download(viewing, trail, tmp_path):
    path = export_json(viewing, tmp_path)
    path.write_bytes(path.read_bytes()[:-200])
    done = verify_file(path)
    assert done.returncode == 2 and "cannot check" in done.stderr


def test_an_export_of_nothing_is_still_a_document(viewing, tmp_path):
    path = export_json(viewing, tmp_path, since="2000-01-01", until="2000-01-31")
    assert json.loads(path.read_text())["events"] == []
    done = verify_file(path)
    assert done.returncode == 0 and "OK: 0 events" in done.stdout


# --- PDF ---


def pdf_text(pdf: bytes, tmp_path: Path) -> str:
    """The PDF's words, with line breaks and runs of spaces made single spaces."""
    (tmp_path / "report.pdf").write_bytes(pdf)
    done = subprocess.run(
        ["pdftotext", str(tmp_path / "report.pdf"), "-"], capture_output=True, text=True, check=True
    )
    return " ".join(done.stdout.split())


def page_one_png(tmp_path: Path, stem: Path) -> Path:
    """Page 1 of the last PDF that pdf_text() read, as a PNG to look at."""
    subprocess.run(
        ["pdftoppm", "-png", "-r", "80", "-f", "1", "-l", "1", "-singlefile",
         str(tmp_path / "report.pdf"), str(stem)],
        check=True,
    )  # fmt: skip
    return stem.with_suffix(".png")


def test_the_pdf_names_an_exact_action_filter_as_such(client, lead, trail, tmp_path):
    client.force_login(lead)
    response = client.get(PDF_URL, JANUARY | {"action": "backup.requested"})
    text = pdf_text(response.content, tmp_path)
    assert "action is backup.requested" in text and "one of" not in text


def test_the_pdf_report_says_what_it_covers(client, lead, trail, tmp_path, artifacts):
    client.force_login(lead)
    response = client.get(PDF_URL, JANUARY | {"action": "backup"})  # the family, backup.*
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert 'filename="runway-audit-2020-01-01_2020-01-31.pdf"' in response["Content-Disposition"]
    assert response.content.startswith(b"%PDF")
    text = pdf_text(response.content, tmp_path)
    assert "Audit trail, 2020-01-01 to 2020-01-31" in text
    assert "action is one of backup.*" in text
    assert "by leo" in text and "2 matching" in text
    assert "Hash chain intact" in text and "Each of the 2 events listed here was checked" in text
    assert "backup.requested" in text and "run.approved" not in text
    assert "Truncated" not in text
    assert page_one_png(tmp_path, artifacts / "audit-report-page1").stat().st_size > 10_000


def test_a_long_pdf_says_it_is_truncated(viewing, trail, settings, tmp_path, artifacts):
    settings.RUNWAY_PDF_MAX_EVENTS = 2
    text = pdf_text(viewing.get(PDF_URL).content, tmp_path)
    page_one_png(tmp_path, artifacts / "audit-report-truncated-page1")
    assert "Truncated" in text and "first 2 of 6 matching events" in text
    assert "The CSV and JSON exports of the same filters hold all 6" in text
    assert "database.registered" in text and "run.started" not in text


def test_the_pdf_reports_a_broken_chain(viewing, trail, tmp_path, artifacts):
    tamper(f"DELETE FROM audit_auditevent WHERE id = {trail[1].pk}")
    text = pdf_text(viewing.get(PDF_URL).content, tmp_path)
    page_one_png(tmp_path, artifacts / "audit-report-broken-page1")
    assert f"Hash chain broken at event #{trail[2].pk}" in text
    assert "Hash chain intact" not in text


def test_the_pdf_fetches_only_static_files(db):
    fetcher = reports._static_fetcher()
    assert b"--ink" in fetcher("file:///static/runway.css").read()
    for url in ("file:///etc/passwd", "http://127.0.0.1:1/x.css", "file:///static/../settings.py"):
        with pytest.raises(ValueError, match="static files only"):
            fetcher(url)


def test_user_text_is_escaped_in_the_page_and_the_pdf(viewing, lead):
    record(lead, "database.registered", Thing(9, "<script>alert(1)</script>"), object_type="db")
    page = viewing.get(reverse("audit-events")).content.decode()
    html = render_to_string(
        "audit/report.html", reports.period_report({}, generated_by="<b>vera</b>")
    )
    for text in (page, html):
        assert "<script>alert(1)</script>" not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<b>vera</b>" not in html


# --- Bad filters, roles, methods ---


@pytest.mark.parametrize("url", EXPORTS)
@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"since": "yesterday"}, "since: Enter a valid date."),
        ({"since": "2026-02-01", "until": "2026-01-01"}, "'Since' must not be after 'until'."),
        ({"actor": "x" * 151}, "actor: Ensure this value has at most 150 characters"),
    ],
)
def test_bad_filters_get_400_and_nothing_else(viewing, url, query, message):
    response = viewing.get(url, query)
    assert response.status_code == 400
    assert not isinstance(response, StreamingHttpResponse)
    assert "Content-Disposition" not in response
    assert message in response.content.decode()


@pytest.mark.parametrize("url", EXPORTS)
def test_exports_need_the_viewer_role(client, outsider, url):
    client.force_login(outsider)
    assert client.get(url).status_code == 403


@pytest.mark.parametrize("url", EXPORTS)
def test_exports_send_anonymous_users_to_log_in(client, db, url):
    response = client.get(url)
    assert response.status_code == 302 and reverse("login") in response["Location"]


@pytest.mark.parametrize("url", EXPORTS)
def test_exports_reject_post(viewing, url):
    assert viewing.post(url).status_code == 405


# --- In Chromium ---


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_viewer_filters_and_downloads_what_the_page_shows(
    page, live_server, viewer, lead, monkeypatch, artifacts
):
    record_at(monkeypatch, "2020-01-15T12:00:00", lead, "run.approved", Thing(1, "analyticbot"),
              object_type="database")  # fmt: skip
    record(lead, "backup.requested", Thing(1, "analyticbot"), object_type="database")
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", "vera")
    page.fill("#id_password", "pw-vera")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{live_server.url}/")
    page.goto(f"{live_server.url}{reverse('audit-events')}")
    page.select_option("#id_action", "run.")
    page.fill("#id_since", "2020-01-01")
    page.fill("#id_until", "2020-01-31")
    with page.expect_response(lambda r: "action=run." in r.url):
        page.get_by_role("button", name="Filter").click()  # htmx swaps the table and the links
    # The response is in before htmx swaps it into the page: wait for the swapped links.
    page.locator('a[href*="action=run."]', has_text="CSV").wait_for()
    page.screenshot(path=artifacts / "audit-page-filtered.png", full_page=True)
    with page.expect_download() as download:
        page.get_by_role("link", name="CSV").click()
    assert download.value.suggested_filename == "runway-audit-2020-01-01_2020-01-31.csv"
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert [r["action"] for r in rows] == ["run.approved"]
