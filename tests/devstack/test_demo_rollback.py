"""The demo's setup (``setup_demo``, for real against the session's cluster) and the data-loss
story it sets up: the sandbox's pending 0021 deletes the inactive users, its staging deployment's
integrity step names them, the "Any data loss" trigger fires and the rollback restores the
run's backup, users back to their count. Steps run as run_step jobs in process (what a worker
does); ``watch.tick()`` where beat would."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.core.management import call_command
from helpers import BACKUP_PASSPHRASE, TARGET_PASSWORD, TARGET_ROLE, drain

from dashboard.audit.chain import verify
from dashboard.audit.models import AuditEvent
from dashboard.databases.models import ConnectionCheck, ManagedDatabase
from dashboard.jobs import lifecycle as jobs
from dashboard.schema.status import scripts_of
from dashboard.triggers import watch
from dashboard.triggers.models import Firing, Rule, Signal
from dashboard.triggers.rules import update
from devstack import demo
from devstack.load import AUTH_FAILURE_SQL
from devstack.management.commands.setup_demo import Command
from runbooks import engine, library
from runbooks.models import Run, RunState, StepState

pytestmark = pytest.mark.django_db
DBNAMES = [t.dbname for t in demo.TARGETS]


def drop_demo_databases(cluster: Any) -> None:
    for name in DBNAMES:
        cluster.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def demo_setup(
    pg_cluster: Any, db_secrets: Path, tmp_path: Path, capsys: Any
) -> Iterator[dict[str, Any]]:
    """``setup_demo`` run once, as the launcher runs it (small seed): its options and output."""
    drop_demo_databases(pg_cluster)
    password_file = db_secrets / f"demo-{tmp_path.name}.password"
    password_file.write_text(TARGET_PASSWORD + "\n")
    (tmp_path / "pg").mkdir()
    superuser = tmp_path / "pg" / "password"
    superuser.write_text(pg_cluster.password + "\n")
    args = [
        "--host", pg_cluster.host, "--port", str(pg_cluster.port), "--user", TARGET_ROLE,
        "--password-file", str(password_file), "--superuser-password-file", str(superuser),
        "--users", "120", "--load-port", "8123", "--sandbox-scripts", str(tmp_path / "scripts"),
    ]  # fmt: skip
    call_command(Command(), *args)
    try:
        yield {"args": args, "out": capsys.readouterr().out, "scripts": tmp_path / "scripts"}
    finally:
        drop_demo_databases(pg_cluster)


def scalar(db: ManagedDatabase, sql: str) -> Any:
    dsn = db.dsn + f" password={TARGET_PASSWORD}"
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return row[0]


def test_setup_demo_registers_the_sandbox_with_0021_pending_and_the_triggers_once(
    demo_setup, capsys, lead
):
    out = demo_setup["out"]
    assert "analyticbot-sandbox (staging): created at 0020 and seeded" in out, out
    assert "0021 pending" in out and "rollback triggers" in out and "set:" in out
    sandbox = ManagedDatabase.objects.get(name="analyticbot-sandbox")
    assert sandbox.environment == "staging"
    assert Path(sandbox.script_location) == demo_setup["scripts"].resolve()
    tree = scripts_of(sandbox)
    assert "0021" in tree.revisions and tree.revisions["0021"].down_revisions == ("0020",)
    assert not tree.revisions["0021"].has_downgrade
    assert scalar(sandbox, "SELECT version_num FROM alembic_version") == "0020"
    assert scalar(sandbox, "SELECT count(*) FROM users WHERE NOT is_active") > 0
    # The main chain is untouched: the other targets' scripts end at 0020.
    production = ManagedDatabase.objects.get(name="analyticbot")
    assert production.script_location == "migrations_target"
    assert "0021" not in scripts_of(production).revisions
    for db in ManagedDatabase.objects.all():
        assert db.application_writes == ["users.plan_id", "users.is_active", "channels.title"]
    rules = {r.signal: r for r in Rule.objects.filter(database=production)}
    assert rules[Signal.HEALTH].enabled
    assert rules[Signal.HEALTH].config == {"url": "http://127.0.0.1:8123/health"}
    assert rules[Signal.CUSTOM_SQL].enabled
    assert rules[Signal.CUSTOM_SQL].config == {"query": AUTH_FAILURE_SQL}
    assert rules[Signal.DATA_LOSS].enabled and rules[Signal.DATA_LOSS].action == "rollback"
    sandbox_rules = {r.signal: r for r in Rule.objects.filter(database=sandbox)}
    loss = sandbox_rules[Signal.DATA_LOSS]
    assert loss.enabled and loss.action == "rollback" and loss.grace_seconds == 0
    assert AuditEvent.objects.filter(action="trigger.rule_changed").count() == 2

    # A second run finds everything there and changes nothing.
    events = AuditEvent.objects.count()
    call_command(Command(), *demo_setup["args"])
    again = capsys.readouterr().out
    assert again.count("already there") == 5, again  # three targets, the scripts, the triggers
    assert "set:" not in again and "created" not in again
    assert AuditEvent.objects.count() == events + 3  # only the connection checks it asks for
    newest = AuditEvent.objects.order_by("-pk")[:3]
    assert {e.action for e in newest} == {"database.check_requested"}
    # A rule a person changed is theirs: a later run (the load on another port) leaves it.
    health = rules[Signal.HEALTH]
    update(lead, health, {"config": {"url": "http://127.0.0.1:9999/health"}})
    moved = [a if a != "8123" else "8124" for a in demo_setup["args"]]
    call_command(Command(), *moved)
    capsys.readouterr()
    health.refresh_from_db()
    assert health.config == {"url": "http://127.0.0.1:9999/health"}
    assert verify().ok


def test_the_sandbox_cleanup_is_caught_and_rolled_back_on_its_own(
    demo_setup, engineer, settings, tmp_path, owner_may_create_databases
):
    settings.RUNWAY_BACKUP_PASSPHRASE = BACKUP_PASSPHRASE
    settings.RUNWAY_BACKUP_STORAGE = f"file://{tmp_path / 'backups'}"
    sandbox = ManagedDatabase.objects.get(name="analyticbot-sandbox")
    users = scalar(sandbox, "SELECT count(*) FROM users")
    inactive = scalar(sandbox, "SELECT count(*) FROM users WHERE NOT is_active")
    payments = scalar(sandbox, "SELECT count(*) FROM payments")

    # The connection check setup_demo asked for (the worker's job in the demo).
    check = ConnectionCheck.objects.filter(database=sandbox).latest("pk")
    jobs.run("connection_check", check.pk)

    run = engine.start_run(engineer, library.get("staging-deployment"), sandbox, "0021")
    drain(run)
    steps = {s.step_id: s for s in run.steps.all()}
    assert steps["validate-backup"].state == StepState.DONE, steps["validate-backup"].summary
    assert steps["upgrade"].state == StepState.DONE, steps["upgrade"].summary
    integrity = steps["integrity"]
    assert integrity.state == StepState.FAILED
    assert "users" in integrity.summary, integrity.summary
    findings = integrity.evidence["data_loss"]["findings"]
    assert not any(f["declared"] for f in findings)
    lost = {f["table"].split(".")[-1]: f["rows"] for f in findings if "deleted" in f["kind"]}
    assert lost["users"] == inactive, findings
    assert lost["payments"] > 0, findings
    assert scalar(sandbox, "SELECT count(*) FROM users") == users - inactive

    # Beat's tick: the data-loss rule measures once execution has ended and fires.
    assert watch.tick() == 1
    firing = Firing.objects.get()
    assert firing.rule.signal == Signal.DATA_LOSS and firing.value >= inactive
    rollback = Run.objects.get(rollback_of=run)
    assert firing.rollback_run_id == rollback.pk
    drain(rollback)
    rollback.refresh_from_db()
    r = {s.step_id: s for s in rollback.steps.all()}
    assert rollback.rollback_plan["path"] == "restore", rollback.rollback_plan
    assert r["perform"].state == StepState.DONE, r["perform"].summary
    assert r["verify"].state == StepState.DONE, r["verify"].summary
    assert rollback.state == RunState.COMPLETED
    # Every user back, and their payments.
    assert scalar(sandbox, "SELECT count(*) FROM users") == users
    assert scalar(sandbox, "SELECT count(*) FROM payments") == payments
    assert scalar(sandbox, "SELECT version_num FROM alembic_version") == "0020"
    run.refresh_from_db()
    assert run.state == RunState.ABORTED
