"""A run's reports: the run CSV (its steps and decisions), the audit CSV beside it, and the PDF
(its events listed as label: value lines, no word cut in two)."""

from __future__ import annotations

import csv
import io
import subprocess
from urllib.parse import unquote

import pytest
from django.urls import reverse
from helpers import CHECKS_THEN_APPROVAL
from helpers import runbook as book

from dashboard.audit import reports as audit_reports
from runbooks import engine

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(engineer, analyticbot):
    return engine.start_run(engineer, book(CHECKS_THEN_APPROVAL), analyticbot, "0020")


def url(run, fmt):
    return reverse("run-report", args=[run.database.name, run.pk, fmt])


def rows(client, run, fmt):
    response = client.get(url(run, fmt))
    assert response.status_code == 200, response.status_code
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_the_run_csv_has_a_row_per_step_then_one_per_decision(client, viewer, engineer, lead, run):
    engine.tick(engineer, run, run.steps.get(step_id="look"), "=read them all")
    engine.decide(lead, run, run.steps.get(step_id="approve"), "approve", "Looks fine, go")
    client.force_login(viewer)
    listed = rows(client, run, "csv")
    assert list(listed[0]) == list(audit_reports_header())
    steps = [r for r in listed if r["record"] == "step"]
    assert [(r["phase"], r["step"], r["kind"]) for r in steps] == [
        ("1. First", "look", "check"),
        ("1. First", "maybe", "check"),
        ("1. First", "approve", "approval"),
        ("2. Second", "done", "check"),
    ]
    look = steps[0]
    assert look["state"] == "done" and look["who"] == engineer.username
    # A note a spreadsheet would run as a formula is defused.
    assert look["note or summary"] == "'=read them all" and look["when"].endswith("+00:00")
    assert steps[2]["who"] == lead.username and steps[2]["state"] == "done"
    assert steps[3]["state"] == "open" and steps[3]["who"] == ""
    (decision,) = [r for r in listed if r["record"] == "decision"]
    assert decision["who"] == lead.username and decision["decision"] == "approve"
    assert decision["note or summary"] == "Looks fine, go" and decision["state"] == "holds"
    assert decision["pinned target"] == "0020" and decision["void because"] == ""
    assert decision["step"] == "approve" and decision["when"]


def audit_reports_header():
    from runbooks.reports import RUN_CSV_HEADER

    return RUN_CSV_HEADER


def test_the_audit_csv_keeps_the_raw_events_with_their_chain(client, viewer, engineer, run):
    engine.tick(engineer, run, run.steps.get(step_id="look"), "read them")
    client.force_login(viewer)
    listed = rows(client, run, "audit.csv")
    assert tuple(listed[0]) == audit_reports.CSV_HEADER
    assert listed[0]["action"] == "run.started"
    assert "run.step_ticked" in {r["action"] for r in listed}
    assert all(len(r["hash"]) == 64 for r in listed)
    response = client.get(url(run, "audit.csv"))
    assert response["Content-Disposition"].endswith(f'runway-run-{run.pk}-analyticbot.audit.csv"')


def test_the_run_page_links_every_report(client, viewer, run):
    client.force_login(viewer)
    page = client.get(reverse("run-detail", args=[run.database.name, run.pk])).content.decode()
    for fmt in ("pdf", "csv", "audit.csv", "json"):
        assert f'href="{url(run, fmt)}"' in page
    assert 'data-prepare="Preparing PDF…"' in page and "report-download.js" in page


def test_the_pdf_lists_details_as_label_value_lines(client, viewer, engineer, lead, run, tmp_path):
    engine.tick(engineer, run, run.steps.get(step_id="look"), "read the engine/errors runbook")
    engine.decide(lead, run, run.steps.get(step_id="approve"), "approve", "fine")
    client.force_login(viewer)
    response = client.get(url(run, "pdf"))
    assert response.content.startswith(b"%PDF")
    pdf = tmp_path / "run.pdf"
    pdf.write_bytes(response.content)
    text = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    assert "note: read the engine/errors runbook" in text
    assert "step: look" in text
    assert "{'" not in text and '{"' not in text  # no Python dicts, no JSON


def test_details_read_as_label_value_lines():
    lines = audit_reports.detail_lines(
        {
            "step": "upgrade",
            "void": False,
            "error": "",
            "gates": {"backup": "pass", "wal_archiving": "warn"},
            "revisions": ["0017", "0018"],
            "findings": [{"rule": "add-column", "severity": "low"}],
            "note": None,
        }
    )
    assert lines == [
        "step: upgrade",
        "void: no",
        "error: —",
        "gates backup: pass",
        "gates wal archiving: warn",
        "revisions: 0017, 0018",
        "findings: rule add-column, severity low",
        "note: none",
    ]
    assert audit_reports.detail_lines({}) == [] and audit_reports.detail_lines(None) == []
    assert audit_reports.detail_lines({"x": "y" * 50}, value_chars=10) == ["x: yyyyyyyyy…"]


@pytest.mark.parametrize(
    ("text", "width", "lines"),
    [
        ("run: run #1 production-deployment on analyticbot", 20, [
            "run: run #1", "production-", "deployment on", "analyticbot"]),
        # A word longer than the column is cut after a separator, not at a letter.
        ("engine/errors/retries", 12, ["engine/", "errors/", "retries"]),
        ("backup.validation_failed", 16, ["backup.", "validation_", "failed"]),
        # Only a word without separators is cut at the width.
        ("c167f7292e951d99", 8, ["c167f729", "2e951d99"]),
        ("two\nlines", 20, ["two", "lines"]),
    ],
)  # fmt: skip
def test_the_listing_wraps_at_spaces_and_separators(text, width, lines):
    assert audit_reports.wrap(text, width) == lines
    assert all(len(line) <= width for line in audit_reports.wrap(text, width))


def test_details_pairs_share_a_line_when_they_fit():
    cell = audit_reports._details_cell(
        ["job: 3", "step: backup", "action: backup.create", "worker: vm:29770", "attempt: 1"], 40
    )
    assert cell == [
        "job: 3 · step: backup",
        "action: backup.create · worker: vm:29770",
        "attempt: 1",
    ]
    # A pair too long for a line wraps on its own lines, its continuation indented.
    long = "url: file:///tmp/backups/analyticbot/20261202T140459Z-1.dump.zst.gpg"
    assert audit_reports._details_cell(["n: 1", long, "size: 9"], 40) == [
        "n: 1",
        "url:",
        "  file:///tmp/backups/analyticbot/",
        "  20261202T140459Z-1.dump.zst.gpg",
        "size: 9",
    ]


def test_the_listing_prints_pages_of_whole_events_with_a_rule_between_each():
    from datetime import UTC, datetime

    from dashboard.audit.models import AuditEvent

    events = [
        AuditEvent(
            pk=n, created_at=datetime(2026, 1, 1, tzinfo=UTC), actor_name="lead",
            action="run.step_finished", object_type="run", object_repr=f"run #{n}",
            details={f"key_{k}": "value " * (n % 7) for k in range(n % 5)}, hash=f"{n:064x}",
        )
        for n in range(1, 301)
    ]  # fmt: skip
    listed = audit_reports.listing(events, titled=True)
    blocks = [audit_reports.listing_block(e) for e in events]
    assert "\n".join(g.text for g in listed.groups) == "\n".join(blocks)
    assert len(listed.groups) > 2
    start = 0
    for index, group in enumerate(listed.groups):
        room = audit_reports.TITLED_PAGE_LINES if index == 0 else audit_reports.PAGE_LINES
        assert group.text.count("\n") + 1 <= room
        count = next(
            n
            for n in range(1, len(blocks) + 1)
            if "\n".join(blocks[start : start + n]) == group.text
        )
        start += count
        # A rule under each event of the group but its last (the <pre>'s border is that one).
        svg = unquote(group.rules_url.removeprefix(audit_reports.RULES_URL_PREFIX))
        assert svg.startswith("<svg") and svg.count("<rect") == count - 1
    assert start == len(events)
    fetched = audit_reports._static_fetcher()(listed.groups[0].rules_url)
    assert fetched.read().startswith(b"<svg")


def test_the_findings_line_leaves_notes_out_without_a_stray_separator(tmp_path):
    """A note after the last finding used to leave "…on users);" in the PDF."""
    from django.template.loader import render_to_string
    from weasyprint import CSS, HTML

    from dashboard.settings import BASE_DIR

    findings = [
        {"rule": "data-migration", "severity": "medium", "lock": "ROW EXCLUSIVE", "table": "users"},
        {"rule": "style", "severity": "note"},
        {"rule": "create-index-blocking", "severity": "high", "lock": "SHARE", "accepted": True},
        {"rule": "style", "severity": "note"},
    ]
    html = render_to_string("runbooks/_report_findings.html", {"findings": findings})
    pdf = tmp_path / "findings.pdf"
    HTML(string=f"<p>{html}</p>").write_pdf(
        pdf, stylesheets=[CSS(filename=str(BASE_DIR / "static" / "report.css"))]
    )
    text = subprocess.run(
        ["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    line = " ".join(text.split("page 1 of 1")[0].split())  # the page's footer cut off
    assert line == (
        "data-migration (medium, ROW EXCLUSIVE on users); "
        "create-index-blocking (high, SHARE, accepted)"
    )
    only_notes = render_to_string("runbooks/_report_findings.html", {"findings": findings[1:2]})
    assert "finding" not in only_notes
