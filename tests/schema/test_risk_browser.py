"""In Chromium: the history page grades the pending revisions; the revision page shows the SQL
with its findings beside the statements; a lead accepts a finding; the preflight page runs the
gates and a rehearsal on the real worker."""

from __future__ import annotations

import pytest
from helpers import log_in, make_database

from dashboard.audit.models import AuditEvent
from dashboard.databases import checks
from dashboard.jobs import lifecycle as jobs
from dashboard.schema.models import RiskAcceptance

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def analyticbot(make_target, owner_may_create_databases):
    db = make_database(dsn=make_target())
    # Reads the revision and the table sizes.
    jobs.run("connection_check", checks.request_check(None, db).pk)
    return db


def test_a_lead_reads_the_risk_and_accepts_a_finding(
    page, live_server, lead, analyticbot, artifacts
):
    log_in(page, live_server, "leo")
    page.goto(f"{live_server.url}/databases/analyticbot/history/")
    rows = {r: page.locator(f"tr[data-rev='{r}'] .risk") for r in ("0017", "0018", "0019", "0020")}
    assert rows["0017"].locator("[data-grade]").inner_text() == "low"
    assert rows["0019"].locator("[data-grade]").inner_text() == "medium"
    assert "data-migration" in rows["0019"].inner_text()
    # 200 users: a blocking index on a small table is medium, with the lock named.
    assert "create-index-blocking" in rows["0020"].inner_text()
    assert "SHARE on users" in rows["0020"].inner_text()
    assert page.locator("tr[data-rev='0016'] .risk").inner_text().strip() == ""
    page.screenshot(path=artifacts / "history-risk.png", full_page=True)

    page.locator("tr[data-rev='0020'] a", has_text="0020").click()
    page.wait_for_url(f"{live_server.url}/databases/analyticbot/revisions/0020/")
    statement = page.locator("[data-statement='0']")
    assert "CREATE INDEX ix_users_email ON users (email)" in statement.inner_text()
    assert "takes SHARE" in statement.inner_text()
    finding = page.locator(".stmts .finding[data-rule='create-index-blocking']")
    assert "CONCURRENTLY" in finding.inner_text()
    page.screenshot(path=artifacts / "revision-0020.png", full_page=True)

    page.select_option("#id_rule", "create-index-blocking")
    page.fill("#id_comment", "<b>built at night</b>, users has 200 rows")
    page.get_by_role("button", name="Accept").click()
    page.wait_for_url(f"{live_server.url}/databases/analyticbot/revisions/0020/")
    accepted = page.locator("[data-accepted='create-index-blocking']")
    assert "<b>built at night</b>" in accepted.inner_text()  # shown as text, not markup
    assert page.locator("#grade").inner_text() == "low risk"
    acceptance = RiskAcceptance.objects.get()
    assert acceptance.accepted_by == lead and acceptance.revision == "0020"
    assert AuditEvent.objects.filter(action="schema.finding_accepted").exists()
    page.screenshot(path=artifacts / "revision-0020-accepted.png", full_page=True)


def test_an_engineer_runs_the_gates_and_a_rehearsal_on_the_worker(
    page, live_server, celery_worker, engineer, analyticbot, artifacts
):
    log_in(page, live_server, "erin")
    page.goto(f"{live_server.url}/databases/analyticbot/preflight/")
    page.get_by_role("button", name="Rehearse").click()
    page.locator("#rehearsal-state", has_text="succeeded").wait_for(timeout=60_000)
    page.get_by_role("button", name="Run the gates").click()
    page.locator("#gates-verdict", has_text="Fail").wait_for(timeout=60_000)
    gates = {
        g: page.locator(f"tr[data-gate='{g}']").get_attribute("data-verdict")
        for g in ("backup", "ready", "disk", "long_transactions", "locks", "wal", "rehearsal")
    }
    # No backup was taken: that gate fails; the rehearsal of these revisions passes.
    assert gates["backup"] == "fail"
    assert gates["ready"] == "pass" and gates["rehearsal"] == "pass"
    assert gates["disk"] == "warn"  # the target's role may not read data_directory: unknown
    for rev in ("0017", "0018", "0019", "0020"):
        assert page.locator(f"table.rehearsal tr[data-rev='{rev}']").is_visible()
    page.screenshot(path=artifacts / "preflight.png", full_page=True)
