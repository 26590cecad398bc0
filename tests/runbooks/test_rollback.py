"""Automatic rollback (runbooks/rollback.py) on the real cluster: a deployment's upgrade runs for
real, then start_rollback takes the database back, by downgrade (revisions with working
downgrades) or by restoring the run's real pre-migration backup (pg_dump | zstd | gpg, then
pg_restore into the same database), and its own integrity step compares with the snapshot the
upgrade took before the run. Steps run as run_step jobs in process (what a worker does)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from helpers import BACKUP_PASSPHRASE, ROOT, drain, make_user, recorded_backup, runbook

from dashboard.audit.chain import verify
from dashboard.audit.models import AuditEvent
from dashboard.jobs.models import JobState
from dashboard.lib import pg
from dashboard.lib.secrets import resolve
from dashboard.notify.models import Outbox
from runbooks import engine
from runbooks.models import Run, RunState, StepState
from runbooks.rollback import RollbackError, cancel_rollback, start_rollback

pytestmark = pytest.mark.django_db

DEPLOY = """
id: deploy
title: Deploy
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
DEPLOY_BACKED_UP = """
id: deploy-backed-up
title: Deploy with a backup
needs_target: true
phases:
  - id: only
    title: Only
    steps:
      - id: backup
        action: backup.create
        title: Backup
      - id: validate
        action: backup.validate
        title: Validate
      - id: upgrade
        action: schema.upgrade
        title: Upgrade
      - id: integrity
        action: integrity.verify
        title: Verify
"""


@pytest.fixture(autouse=True)
def email_and_passphrase(settings: Any) -> None:
    """Email on (the outbox gets a row per user who wants the event); backups encrypt."""
    settings.RUNWAY_EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.RUNWAY_BACKUP_PASSPHRASE = BACKUP_PASSPHRASE


def project(folder: Path, *revisions: tuple[str, str, str, str]) -> Path:
    """An Alembic project based on 0016 whose revisions are ``(id, down, upgrade body,
    downgrade body)``."""
    (folder / "versions").mkdir(parents=True)
    (folder / "env.py").write_text((ROOT / "migrations_target" / "env.py").read_text())
    steps = [("0016", None, "pass", "pass"), *revisions]
    for rev, down, up, back in steps:
        (folder / "versions" / f"{rev}_step.py").write_text(
            "from alembic import op\n\n"
            f"revision = {rev!r}\ndown_revision = {down!r}\n"
            "branch_labels = None\ndepends_on = None\n\n\n"
            f"def upgrade():\n{textwrap.indent(textwrap.dedent(up).strip(), '    ')}\n\n\n"
            f"def downgrade():\n{textwrap.indent(textwrap.dedent(back).strip(), '    ')}\n"
        )
    return folder


def connect(db: Any) -> Any:
    return pg.connect(db.dsn, resolve(db.password_ref))


def scalar(db: Any, sql: str) -> Any:
    with connect(db) as conn:
        return conn.execute(sql).fetchone()[0]


def fake_backup(run: Run) -> None:
    """The downgrade path never reads the backup: a recorded, validated one lets the upgrade
    run."""
    recorded_backup(run)


def steps_of(run: Run) -> dict[str, Any]:
    return {s.step_id: s for s in run.steps.all()}


UP1 = """
op.execute("ALTER TABLE users ADD COLUMN nickname text")
op.execute("UPDATE users SET nickname = 'n' || id")
"""
DOWN1 = 'op.execute("ALTER TABLE users DROP COLUMN nickname")'
UP2 = 'op.execute("CREATE TABLE badges (id int PRIMARY KEY, user_id int)")'
DOWN2 = 'op.execute("DROP TABLE badges")'


def test_rollback_by_downgrade_brings_the_database_and_every_row_back(
    engineer, live_target, tmp_path, settings
):
    db = live_target
    db.script_location = str(
        project(tmp_path / "app", ("t1", "0016", UP1, DOWN1), ("t2", "t1", UP2, DOWN2))
    )
    db.save()
    failed = engine.start_run(engineer, runbook(DEPLOY), db, "t2")
    fake_backup(failed)
    drain(failed)
    failed.refresh_from_db()
    assert scalar(db, "SELECT version_num FROM alembic_version") == "t2"
    assert failed.snapshot_before is not None
    users_hash = scalar(
        db, "SELECT md5(string_agg(id || ':' || email, ',' ORDER BY id)) FROM users"
    )
    # The application writes after the upgrade: new rows are not loss.
    with connect(db) as conn:
        conn.execute(
            "INSERT INTO payments (user_id, amount, status, currency) "
            "SELECT id, 7, 'completed', 'USD' FROM users ORDER BY id LIMIT 3"
        )

    rb = start_rollback(failed, "health checks at 80% failures", source="trigger:7 health")
    assert start_rollback(failed, "again", source="trigger:7 health") == rb  # idempotent
    assert rb.rollback_of == failed and rb.runbook_id == "failed-migration-rollback"
    drain(rb)
    rb.refresh_from_db()
    failed.refresh_from_db()

    s = steps_of(rb)
    assert s["hold"].state == StepState.DONE, s["hold"].summary + s["hold"].output
    assert rb.rollback_plan["path"] == "downgrade" and rb.rollback_plan["undo"] == ["t2", "t1"]
    assert s["perform"].state == StepState.DONE, s["perform"].summary + s["perform"].output
    assert "undo t2" in s["perform"].output and "took the migration lock" in s["perform"].output
    assert s["verify"].state == StepState.DONE, s["verify"].summary + s["verify"].output
    assert s["verify"].evidence["data_loss"]["lossless"] is True
    assert rb.state == RunState.COMPLETED
    # The database: at 0016, the revisions' column and table gone, every row and value back.
    assert scalar(db, "SELECT version_num FROM alembic_version") == "0016"
    assert scalar(db, "SELECT to_regclass('badges')") is None
    assert not scalar(
        db, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'nickname'"
    )
    assert users_hash == scalar(
        db, "SELECT md5(string_agg(id || ':' || email, ',' ORDER BY id)) FROM users"
    )
    # The deployment had completed (a post-deployment trigger): it stays so; both linked.
    assert failed.state == RunState.COMPLETED
    assert list(failed.rollbacks.all()) == [rb]
    # Audited end to end, notified in the same transactions.
    started = AuditEvent.objects.get(action="runbook.rollback_started")
    assert started.details["reason"] == "health checks at 80% failures"
    assert started.details["source"] == "trigger:7 health" and started.actor_name == "system"
    ended = AuditEvent.objects.get(action="runbook.rollback_ended")
    assert ended.details["outcome"] == "succeeded" and ended.details["path"] == "downgrade"
    assert AuditEvent.objects.filter(action="run.rolled_back").count() == 1
    assert set(Outbox.objects.values_list("event", flat=True)) >= {
        "rollback.started",
        "rollback.ended",
    }
    assert Outbox.objects.get(event="rollback.ended").payload["outcome"] == "succeeded"
    assert verify().ok

    page = Client()
    page.force_login(engineer)
    body = page.get(rb.get_absolute_url()).content.decode()
    assert f"run #{failed.pk}</a>" in body and "trigger:7 health" in body
    body = page.get(failed.get_absolute_url()).content.decode()
    assert f'Rolled back by <a href="{rb.get_absolute_url()}">run #{rb.pk}</a>' in body


CLEANUP = 'op.execute("DELETE FROM payments WHERE id % 10 = 0")'
PAYMENTS_HASH = (
    "SELECT count(*) || ':' || md5(string_agg(id || ':' || amount, ',' ORDER BY id)) FROM payments"
)


@pytest.mark.parametrize(
    ("up", "down", "why"),
    [
        (
            "# runway: expect delete payments\n" + CLEANUP,
            'op.execute("SELECT 1")',
            "declared lossy",
        ),
        (CLEANUP, "pass", "no working downgrade in t1"),
    ],
    ids=["declared-lossy", "no-downgrade"],
)
def test_rollback_by_restore_of_the_real_backup_ends_sessions_and_brings_the_rows_back(
    engineer, live_target, tmp_path, owner_may_create_databases, up, down, why
):
    db = live_target
    db.script_location = str(project(tmp_path / "app", ("t1", "0016", up, down)))
    db.save()
    before = scalar(db, PAYMENTS_HASH)
    failed = engine.start_run(engineer, runbook(DEPLOY_BACKED_UP), db, "t1")
    drain(failed)
    failed.refresh_from_db()
    s = steps_of(failed)
    assert s["validate"].state == StepState.DONE, s["validate"].summary
    assert s["upgrade"].state == StepState.DONE, s["upgrade"].summary + s["upgrade"].output
    assert scalar(db, PAYMENTS_HASH) != before  # the rows are gone
    # A session of the application, held open (idle) through the rollback.
    held = psycopg.connect(db.dsn + f" password={resolve(db.password_ref)}", autocommit=True)
    held_pid = held.info.backend_pid

    rb = start_rollback(failed, "data loss: payments", source="trigger:3 data_loss")
    drain(rb)
    rb.refresh_from_db()
    failed.refresh_from_db()

    r = steps_of(rb)
    assert rb.rollback_plan["path"] == "restore", rb.rollback_plan
    assert any(why in w for w in rb.rollback_plan["why"]), rb.rollback_plan["why"]
    assert r["perform"].state == StepState.DONE, r["perform"].summary + r["perform"].output
    restore = r["perform"].evidence["restore"]
    assert restore["backup"] == failed.backup_id and restore["sha256_ok"] is True
    assert held_pid in [x["pid"] for x in restore["sessions_ended"] if x["ended"]]
    with pytest.raises(psycopg.OperationalError):
        held.execute("SELECT 1")
    held.close()
    # Counts and hashes: every payment back, as before the run; the snapshot compare agrees.
    assert scalar(db, PAYMENTS_HASH) == before
    assert scalar(db, "SELECT version_num FROM alembic_version") == "0016"
    assert r["verify"].state == StepState.DONE, r["verify"].summary + r["verify"].output
    assert r["verify"].evidence["data_loss"]["lossless"] is True
    assert "are not in it: the restore lost them" in r["verify"].summary
    counted = [c for c in r["verify"].evidence["checks"] if c["name"].startswith("rows in")]
    assert counted and all(c["ok"] for c in counted)
    assert rb.state == RunState.COMPLETED
    if "declared" in why:  # its integrity step passed (the loss was declared): it completed
        assert failed.state == RunState.COMPLETED
    else:  # its integrity step failed on the loss: the run was still active, and ended
        assert failed.state == RunState.ABORTED
        assert failed.reason.startswith(f"Rolled back by run #{rb.pk}: data loss: payments")
    assert Outbox.objects.filter(event="rollback.ended", payload__outcome="succeeded").exists()
    assert verify().ok


def deployed(engineer: Any, db: Any, tmp_path: Path) -> Run:
    db.script_location = str(
        project(tmp_path / "app", ("t1", "0016", UP1, DOWN1), ("t2", "t1", UP2, DOWN2))
    )
    db.save()
    failed = engine.start_run(engineer, runbook(DEPLOY), db, "t2")
    fake_backup(failed)
    drain(failed)
    return failed


def test_a_lead_cancels_within_the_grace_others_are_refused_and_after_it_nobody_can(
    engineer, lead, viewer, outsider, admin_user, live_target, tmp_path
):
    failed = deployed(engineer, live_target, tmp_path)
    rb = start_rollback(failed, "latency +40%", source="trigger:9 performance", grace_seconds=30)
    assert rb.in_grace
    hold = rb.steps.get(step_id="hold")
    assert hold.state == StepState.STARTED and hold.job.state == JobState.QUEUED
    auditor = make_user("audrey", "viewer")
    for who in (viewer, engineer, outsider, auditor):
        with pytest.raises(RollbackError, match="Only a lead"):
            cancel_rollback(who, rb, "not so bad")
        page = Client()
        page.force_login(who)
        response = page.post(f"{rb.get_absolute_url()}cancel-rollback/", {"reason": "not so bad"})
        assert response.status_code == 403
    rb.refresh_from_db()
    assert rb.state == RunState.ACTIVE
    # The lead's button on the rollback page: the form is there, a reason is required.
    page = Client()
    page.force_login(lead)
    body = page.get(rb.get_absolute_url()).content.decode()
    assert 'id="cancel-rollback"' in body and "Nothing has touched the database yet" in body
    response = page.post(f"{rb.get_absolute_url()}cancel-rollback/", {"reason": "  "}, follow=True)
    assert "say why the rollback is cancelled" in response.content.decode()
    response = page.post(
        f"{rb.get_absolute_url()}cancel-rollback/", {"reason": "a known spike"}, follow=True
    )
    assert "Rollback cancelled" in response.content.decode()
    rb.refresh_from_db()
    assert rb.state == RunState.ABORTED and rb.cancelled_by == lead
    assert rb.reason == "Cancelled by leo within the grace period: a known spike"
    assert rb.steps.get(step_id="hold").job.state == JobState.CANCELLED
    drain(rb)  # nothing left to run
    # Nothing touched the database: still at t2, the failed run as it was.
    assert scalar(live_target, "SELECT version_num FROM alembic_version") == "t2"
    failed.refresh_from_db()
    assert failed.state == RunState.COMPLETED
    cancelled = AuditEvent.objects.get(action="runbook.rollback_cancelled")
    assert cancelled.actor_name == "leo" and cancelled.details["reason"] == "a known spike"
    assert Outbox.objects.filter(event="rollback.ended", payload__outcome="cancelled").exists()
    with pytest.raises(RollbackError, match="is aborted: nothing to cancel"):
        cancel_rollback(lead, rb, "again")

    # A new rollback with a 1 s grace: once it has passed, even an admin is refused.
    again = start_rollback(failed, "latency +45%", source="manual", actor=engineer, grace_seconds=1)
    assert again != rb and again.started_by == engineer
    import time

    time.sleep(1.2)
    with pytest.raises(RollbackError, match="Too late: the grace period of rollback run"):
        cancel_rollback(admin_user, again, "too late")
    drain(again)
    again.refresh_from_db()
    assert again.state == RunState.COMPLETED, again.reason
    assert scalar(live_target, "SELECT version_num FROM alembic_version") == "0016"
    assert verify().ok


def test_bad_input_is_answered_clearly(engineer, lead, live_target, tmp_path):
    failed = deployed(engineer, live_target, tmp_path)
    # A run that is not a rollback, by the command and the page.
    with pytest.raises(CommandError, match=f"Run #{failed.pk} is not a rollback"):
        call_command("cancel_rollback", str(failed.pk), "--reason", "x", "--by", "leo")
    page = Client()
    page.force_login(lead)
    response = page.post(
        f"{failed.get_absolute_url()}cancel-rollback/", {"reason": "x"}, follow=True
    )
    assert f"Run #{failed.pk} is not a rollback" in response.content.decode()
    with pytest.raises(CommandError, match="No run #999999"):
        call_command("cancel_rollback", "999999", "--reason", "x", "--by", "leo")
    with pytest.raises(CommandError, match="is not a run number"):
        call_command("cancel_rollback", "12; DROP", "--reason", "x", "--by", "leo")
    with pytest.raises(CommandError, match="No Runway user named 'nobody'"):
        call_command("cancel_rollback", str(failed.pk), "--reason", "x", "--by", "nobody")
    with pytest.raises(CommandError, match="--reason"):
        call_command("cancel_rollback", str(failed.pk), "--by", "leo")
    rb = start_rollback(failed, "x", source="manual", grace_seconds=60)
    with pytest.raises(CommandError, match="Say why the rollback is cancelled"):
        call_command("cancel_rollback", str(rb.pk), "--reason", " ", "--by", "leo")
    with pytest.raises(CommandError, match="Only a lead"):
        call_command("cancel_rollback", str(rb.pk), "--reason", "x", "--by", "erin")
    call_command("cancel_rollback", str(rb.pk), "--reason", "false alarm", "--by", "leo")
    rb.refresh_from_db()
    assert rb.state == RunState.ABORTED
    # start_rollback's own refusals.
    with pytest.raises(RollbackError, match="Say why"):
        start_rollback(failed, "  ", source="manual")
    with pytest.raises(RollbackError, match="grace period"):
        start_rollback(failed, "x", source="manual", grace_seconds=-1)
    with pytest.raises(RollbackError, match="itself a rollback"):
        start_rollback(rb, "x", source="manual")
    viewer = make_user("vic", "viewer")
    with pytest.raises(RollbackError, match="Only an engineer"):
        start_rollback(failed, "x", source="manual", actor=viewer)


def test_an_engineer_cannot_stop_an_automatic_rollback_around_the_lead_only_cancel(
    engineer, lead, live_target, tmp_path
):
    failed = deployed(engineer, live_target, tmp_path)
    rb = start_rollback(failed, "health 100%", source="trigger:3 health", grace_seconds=30)
    hold = rb.steps.get(step_id="hold")
    with pytest.raises(engine.RunError, match="Stopping an automatic rollback needs the lead"):
        engine.abort(engineer, rb, "I know better")
    with pytest.raises(engine.RunError, match="Stopping an automatic rollback needs the lead"):
        engine.abort_step(engineer, rb, hold, "I know better")
    page = Client()
    page.force_login(engineer)
    body = page.get(rb.get_absolute_url()).content.decode()
    assert "Abort the run" not in body and "data-abort-step" not in body
    response = page.post(f"{rb.get_absolute_url()}abort/", {"reason": "I know better"}, follow=True)
    assert "Stopping an automatic rollback needs the lead role" in response.content.decode()
    rb.refresh_from_db()
    assert rb.state == RunState.ACTIVE
    # A lead may (and the audit says who).
    engine.abort(lead, rb, "the trigger misfired: a known spike")
    rb.refresh_from_db()
    assert rb.state == RunState.ABORTED
    assert AuditEvent.objects.filter(action="run.aborted", actor_name="leo").exists()
