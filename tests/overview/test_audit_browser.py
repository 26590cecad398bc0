"""The audit page in Chromium: a few dozen varied events, the action select, the links."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse
from helpers import log_in, make_database

from dashboard.audit.chain import record
from dashboard.backups.models import Backup
from runbooks.models import Run


def varied_trail(lead: Any, engineer: Any) -> dict[str, Any]:
    """About forty events of the kinds Runway writes, with details short and long."""
    db = make_database()
    gone = make_database(name="retiredbot", environment="staging")
    record(lead, "database.registered", db, details={"name": db.name, "environment": "production"})
    record(lead, "database.registered", gone, details={"name": "retiredbot"})
    gone.delete()
    backups = [Backup.objects.create(database=db, requested_by=engineer) for _ in range(3)]
    run = Run.objects.create(
        runbook_id="upgrade", runbook_title="Upgrade", runbook={}, database=db, started_by=engineer
    )
    for backup in backups:
        record(engineer, "backup.requested", backup, details={"reason": "pre-migration"})
        record(None, "backup.completed", backup, details={
            "size_bytes": 48_213_344, "sha256": "9f" * 32,
            "storage_url": f"s3://runway-backups/analyticbot/2026/01/15/backup-{backup.pk}.dump.zst.gpg",
            "row_counts": {"users": 200, "payments": 1834}, "duration_s": 12.4,
        })  # fmt: skip
    record(engineer, "run.started", run, details={"runbook": "upgrade", "target": "0018",
                                                  "revisions": ["0017", "0018"]})  # fmt: skip
    for step in ("preflight", "backup", "approve", "upgrade", "integrity"):
        record(None, "run.step_started", run, details={"step": step, "action": f"runbook.{step}"})
        record(None, "run.step_finished", run, details={
            "step": step, "job_state": "succeeded", "evidence": {"gate_run": 12, "verdict": "pass",
            "notes": "All gates passed: lock timeout set, no table rewrite, no long transaction."},
        })  # fmt: skip
    record(lead, "run.approved", run, details={"note": "Looks good; window 09:00-10:00 UTC."})
    record(lead, "run.deployed", run, details={})
    record(None, "schema.gates_run", db, details={"gate_run": 12, "state": "succeeded",
           "verdict": "pass", "gates": {"lint": "pass", "locks": "pass", "rehearsal": "warn"},
           "error": ""})  # fmt: skip
    record(None, "trigger.fired", db, details={"rule": 3, "signal": "execution_time",
                                               "value": 184.2, "threshold": 120})  # fmt: skip
    record(None, "user.login_failed", object_type="user", details={
        "username": "mallory", "ip_address": "203.0.113.7", "count": 1})  # fmt: skip
    record(None, "backup.failed", backups[0], details={
        "reason": "RuntimeError: pg_dump exited with 1: " + "pg_dump: error: connection to "
        "server at 127.0.0.1, port 5432 failed: FATAL: password authentication failed " * 4,
        "job": backups[0].pk})  # fmt: skip
    record(lead, "notification.preferences_changed", lead, object_type="user", details={
        "events": {"approval.waiting": ["email"], "step.failed": ["email", "webhook"]},
        "muted": ["retiredbot"]})  # fmt: skip
    record(None, "run_step.interrupted", run, details={"job": 77, "reason": "worker lost"})
    return {"db": db, "run": run, "backups": backups}


@pytest.mark.django_db(transaction=True)
def test_the_audit_page_in_chromium(page, live_server, viewer, lead, engineer, artifacts):
    made = varied_trail(lead, engineer)
    page.set_viewport_size({"width": 1280, "height": 900})
    log_in(page, live_server, "vera")
    page.goto(f"{live_server.url}{reverse('audit-events')}")
    page.screenshot(path=artifacts / "audit-page.png", full_page=True)
    # No sideways scroll: the table fits the page.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    labels = page.eval_on_selector_all("#id_action optgroup", "gs => gs.map(g => g.label)")
    assert {"Runs", "Backups", "Databases", "Users", "Run step jobs"} <= set(labels)
    db, run = made["db"], made["run"]
    run_url = reverse("run-detail", args=[db.name, run.pk])
    assert page.locator(f'a[href="{run_url}"]').count() > 10
    assert page.locator(f'a[href="{reverse("database-detail", args=["retiredbot"])}"]').count() == 0
    # The whole JSON of a long event is one click away.
    failed = page.locator("tr", has=page.locator("code", has_text="backup.failed"))
    failed.locator("summary").click()
    assert "password authentication failed" in failed.locator("pre").inner_text()
    page.screenshot(path=artifacts / "audit-page-details-open.png", full_page=True)

    page.select_option("#id_action", "backup.")
    with page.expect_response(lambda r: "action=backup." in r.url):
        page.get_by_role("button", name="Filter").click()
    # The response is in before htmx swaps it into the page: wait for the swap itself.
    page.wait_for_function(
        "() => [...document.querySelectorAll('table.events tbody code')]"
        ".every(c => c.textContent.startsWith('backup.'))"
    )
    actions = page.eval_on_selector_all(
        "table.events tbody code", "cs => cs.map(c => c.textContent)"
    )
    assert set(actions) == {"backup.requested", "backup.completed", "backup.failed"}
    page.screenshot(path=artifacts / "audit-page-backups.png", full_page=True)
    page.get_by_role("link", name=f"backup #{made['backups'][1].pk} of analyticbot").first.click()
    page.wait_for_url(f"**{reverse('backup-detail', args=[db.name, made['backups'][1].pk])}")
