"""In Chromium, two people: an engineer starts a production deployment of analyticbot to the
newest revision; the automated steps run on the real Celery worker (risk report, rehearsal,
backup, validation, gates, upgrade, integrity); the engineer ticks the manual items; a lead
approves from another browser context on the review page, the engineer presses Deploy; the run
completes at the target revision and the PDF
report downloads (its first page goes through pdftoppm)."""

from __future__ import annotations

import subprocess

import pytest
from helpers import log_in
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from dashboard.lib import pg
from dashboard.lib.secrets import resolve
from runbooks.models import Run, RunState

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
SLOW = 120_000  # ms: a backup, its restore and a rehearsal on a shared 2-core machine


def step_row(page, step_id):
    return page.locator(f"tr[data-step='{step_id}']")


def wait_done(page, *step_ids, worker_log=None):
    """Wait until each step is done; a step that fails instead fails the test with its reason."""
    for step_id in step_ids:
        row = f"tr[data-step='{step_id}']"
        try:
            page.locator(f"{row}[data-state='done'], {row}[data-state='failed']").wait_for(
                timeout=SLOW
            )
        except PlaywrightTimeout:
            step = Run.objects.get().steps.get(step_id=step_id)
            log = worker_log.read_text()[-4000:] if worker_log else ""
            raise AssertionError(f"{step_id} still {step.state}: {step.output}\n{log}") from None
        step = Run.objects.get().steps.get(step_id=step_id)
        assert step.state == "done", f"{step_id}: {step.summary}\n{step.output}"


def tick_all(page, note="checked"):
    """Tick every open check of the open phase, one at a time (each tick reloads the page)."""
    while True:
        forms = page.locator("form.tick")
        if forms.count() == 0:
            return
        row = forms.first.locator("xpath=ancestor::tr[1]")
        step_id = row.get_attribute("data-step")
        row.locator("input[name=note]").fill(note)
        row.get_by_role("button", name="Tick").click()
        page.locator(f"tr[data-step='{step_id}'][data-state='done']").wait_for()


def test_a_lead_approves_a_production_deployment_in_the_browser(
    browser,
    live_server,
    celery_worker,
    engineer,
    lead,
    live_target,
    owner_may_create_databases,
    artifacts,
    tmp_path,
):
    erin = browser.new_context().new_page()
    leo = browser.new_context().new_page()
    log_in(erin, live_server, "erin")
    erin.goto(f"{live_server.url}/runs/new/?database=analyticbot&runbook=production-deployment")
    erin.get_by_role("button", name="Start").click()
    erin.wait_for_url("**/databases/analyticbot/runs/*/")
    run = Run.objects.get()
    assert run.target_revision == "0020" and run.revisions == ["0017", "0018", "0019", "0020"]

    # Preparation: the risk report and the rehearsal run on the worker; the page follows them.
    wait_done(erin, "risk-report", "rehearsal", worker_log=celery_worker)
    assert "s in all" in step_row(erin, "rehearsal").inner_text()
    tick_all(erin, "reviewed on the revision pages")

    # Pre-deployment: backup, its restore validation and the gates, then the approval.
    wait_done(erin, "backup", "validate-backup", "gates", worker_log=celery_worker)
    tick_all(erin)
    approval = step_row(erin, "lead-approval")
    assert approval.get_attribute("data-state") == "open"
    assert "Approve" not in approval.inner_text()  # an engineer sees no approve button
    erin.screenshot(path=artifacts / "run-waiting-for-approval.png", full_page=True)

    log_in(leo, live_server, "leo")
    leo.goto(f"{live_server.url}{run.get_absolute_url()}")
    assert "a lead to approve" in leo.locator("#waiting").inner_text()
    # The decision is taken on the review page, with the evidence; it starts nothing.
    step_row(leo, "lead-approval").get_by_role("link", name="Review and decide").click()
    leo.wait_for_url("**/review/")
    leo.locator("#decide textarea[name=comment]").fill("Read the risk report; 0020 is small. Go.")
    leo.locator("#decide").get_by_role("button", name="Approve").click()
    leo.locator("tr[data-step='lead-approval'][data-state='done']").wait_for()
    assert leo.locator("tr[data-step='upgrade']").get_attribute("data-state") == "waiting"

    # Execution: the engineer presses Deploy (their page noticed the approval by itself).
    erin.locator("#deploy").get_by_role("button", name="Deploy").click()
    wait_done(erin, "upgrade", "integrity", worker_log=celery_worker)
    assert "At 0020: 4 revision(s)" in step_row(erin, "upgrade").inner_text()
    tick_all(erin)
    tick_all(erin)  # post-deployment
    erin.locator("#run-state", has_text="Completed").wait_for()
    erin.screenshot(path=artifacts / "run-completed.png", full_page=True)
    run.refresh_from_db()
    assert run.state == RunState.COMPLETED
    with pg.connect(live_target.dsn, resolve(live_target.password_ref)) as conn:
        assert pg.alembic_revision(conn) == "0020"
    approval_row = run.approvals.get()
    assert approval_row.user == lead and approval_row.backup_id_seen == run.backup_id

    with erin.expect_download(timeout=120_000) as download:  # the PDF takes 10-20 s on 2 cores
        erin.locator("#report-pdf").click(timeout=120_000)
    pdf = tmp_path / "report.pdf"
    download.value.save_as(pdf)
    assert pdf.read_bytes().startswith(b"%PDF")
    subprocess.run(
        [
            "pdftoppm",
            "-png",
            "-r",
            "80",
            "-f",
            "1",
            "-l",
            "1",
            str(pdf),
            str(artifacts / "run-report"),
        ],
        check=True,
    )
    page_one = next(artifacts.glob("run-report-*1.png"))
    assert page_one.stat().st_size > 10_000
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True).stdout
    assert "Approved by leo" in " ".join(text.split())
    assert f"#{run.backup_id}" in text and "0020" in text

    erin.goto(f"{live_server.url}/runs/?database=analyticbot")
    assert erin.locator(f"tr[data-run='{run.pk}']").is_visible()
    erin.screenshot(path=artifacts / "runs.png", full_page=True)
