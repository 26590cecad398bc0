"""A run's integrity step finds what its revisions lost, against the snapshot its upgrade step
took before the first revision ran: real revisions on the real seeded target, run by the step
jobs in process, while the application keeps writing from its own session."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from helpers import alembic_project, drain, recorded_backup, runbook

from dashboard.lib import pg
from dashboard.lib.secrets import resolve
from dashboard.schema.models import DataSnapshot
from runbooks import engine
from runbooks.models import Run, StepState

pytestmark = pytest.mark.django_db

UPGRADE_THEN_VERIFY = """
id: upgrade-verify
title: Upgrade and verify
needs_target: true
phases:
  - id: only
    title: Only
    steps:
      - id: upgrade
        action: schema.upgrade
        title: Upgrade
      - id: integrity
        action: integrity.verify
        title: Verify
"""

CLEANUP = 'op.execute("DELETE FROM payments WHERE id % 10 = 0")'
BLANK = 'op.execute("UPDATE users SET email = NULL")'
HARMLESS = 'op.execute("ALTER TABLE users ADD COLUMN nickname text")'


class Application:
    """The application meanwhile: inserts payments and updates users.plan_id."""

    def __init__(self, db: Any) -> None:
        self.dsn = db.dsn + f" password={resolve(db.password_ref)}"
        self.stop, self.writes = threading.Event(), 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                conn.execute(
                    "INSERT INTO payments (user_id, amount, status, currency) "
                    "SELECT id, 5, 'completed', 'USD' FROM users WHERE id % 10 = 1 LIMIT 1"
                )
                conn.execute("UPDATE users SET plan_id = plan_id WHERE id = 1")
                self.writes += 1
                time.sleep(0.01)

    def __enter__(self) -> Application:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def deploy(engineer: Any, db: Any, tmp_path: Any, body: str) -> Run:
    db.script_location = str(alembic_project(tmp_path / "app", ("t1", "0016", body)))
    db.application_writes = ["users.plan_id"]
    db.save()
    run = engine.start_run(engineer, runbook(UPGRADE_THEN_VERIFY), db, "t1")
    recorded_backup(run)
    with Application(db):
        drain(run)
    run.refresh_from_db()
    return run


def scalar(db: Any, sql: str) -> Any:
    with pg.connect(db.dsn, resolve(db.password_ref)) as conn:
        return conn.execute(sql).fetchone()[0]  # type: ignore[index]


def test_a_revision_that_deletes_rows_fails_the_integrity_step_naming_them(
    engineer, live_target, tmp_path
):
    payments_before = scalar(live_target, "SELECT count(*) FROM payments")
    run = deploy(engineer, live_target, tmp_path, CLEANUP)
    # The payments there when the snapshot was taken (the application had inserted some).
    (payments,) = [t for t in run.snapshot_before.tables if t["table"] == "payments"]
    doomed = sum(1 for a, b in payments["islands"] for key in range(a, b + 1) if key % 10 == 0)

    upgrade = run.steps.get(step_id="upgrade")
    assert upgrade.state == StepState.DONE, upgrade.summary
    assert "snapshot of 2 critical table(s) before the run" in upgrade.output
    integrity = run.steps.get(step_id="integrity")
    assert integrity.state == StepState.FAILED
    assert integrity.summary.startswith("Data loss: ")
    (finding,) = integrity.evidence["data_loss"]["findings"]
    assert doomed > 0 and finding["table"] == "payments" and finding["rows"] == doomed
    assert finding["kind"] == "rows deleted" and finding["keys"][:2] == [10, 20]
    assert f"payments: {doomed} row(s) that existed are gone; keys 10, 20" in integrity.summary
    # The application's inserts meanwhile: a bare count would have seen no loss.
    assert scalar(live_target, "SELECT count(*) FROM payments") > payments_before - doomed


def test_the_same_revision_declaring_its_deletes_passes(engineer, live_target, tmp_path):
    declared = "# runway: expect delete payments\n" + CLEANUP
    run = deploy(engineer, live_target, tmp_path, declared)

    integrity = run.steps.get(step_id="integrity")
    assert integrity.state == StepState.DONE, integrity.summary
    findings = integrity.evidence["data_loss"]["findings"]
    assert findings and all(f["declared_by"] == "t1" for f in findings)


def test_a_blanked_column_fails_it(engineer, live_target, tmp_path):
    run = deploy(engineer, live_target, tmp_path, BLANK)

    integrity = run.steps.get(step_id="integrity")
    assert integrity.state == StepState.FAILED
    (finding,) = integrity.evidence["data_loss"]["findings"]
    assert finding["kind"] == "values changed" and finding["column"] == "email"
    assert "users.email: values changed in" in integrity.summary


def test_a_harmless_revision_under_the_applications_writes_passes(engineer, live_target, tmp_path):
    run = deploy(engineer, live_target, tmp_path, HARMLESS)

    integrity = run.steps.get(step_id="integrity")
    assert integrity.state == StepState.DONE, integrity.summary
    assert integrity.evidence["data_loss"]["lossless"] is True
    snap = DataSnapshot.objects.get()
    assert run.snapshot_before == snap and snap.database_at == "0016"
    assert {t["table"] for t in snap.tables} == {"users", "payments"}


def test_a_resumed_upgrade_keeps_the_snapshot_of_before_the_run(engineer, live_target, tmp_path):
    failing = 'op.execute("DELETE FROM payments WHERE id = 3")\nop.execute("SELECT 1/0")'
    run = deploy(engineer, live_target, tmp_path, failing)
    upgrade = run.steps.get(step_id="upgrade")
    assert upgrade.state == StepState.FAILED
    first = run.snapshot_before
    assert first is not None

    # The revision is fixed; the same run's upgrade is retried and resumes.
    (tmp_path / "app" / "versions" / "t1_step.py").write_text(
        (tmp_path / "app" / "versions" / "t1_step.py")
        .read_text()
        .replace('op.execute("SELECT 1/0")', "pass")
    )
    assert scalar(live_target, "SELECT count(*) FROM payments WHERE id = 3") == 1  # rolled back
    with pg.connect(live_target.dsn, resolve(live_target.password_ref)) as conn:
        conn.execute("DELETE FROM payments WHERE id = 5")  # between the attempts
    engine.retry(engineer, run, upgrade)
    drain(run)
    run.refresh_from_db()
    assert run.snapshot_before == first and DataSnapshot.objects.count() == 1
    integrity = run.steps.get(step_id="integrity")
    assert integrity.state == StepState.FAILED, integrity.summary
    # Against the snapshot of before the run: the row deleted between the attempts shows too.
    assert "payments: 2 row(s) that existed are gone; keys 3, 5" in integrity.summary
