"""Execution on the real cluster: revisions run the way the database says (Runway's online
environment by default, or the project's own alembic in an allowed interpreter), one transaction
each, under the migration lock; the real Celery worker upgrades a project whose env.py cannot be
imported."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import ROOT, TARGET_PASSWORD, checked, make_database, runbook, wait_until

from dashboard.schema import execution

pytestmark = pytest.mark.django_db

PYTHON = sys.executable  # the venv's interpreter: Alembic, SQLAlchemy and psycopg are there
BROKEN_ENV_PY = (
    "from app.db import metadata  # the application, which only its own environment has\n"
    "from alembic import context\n"
)


def project(
    folder: Path,
    *revisions: tuple[str, Any, str],
    env_py: str = BROKEN_ENV_PY,
    downgrades: dict[str, str] | None = None,
) -> Path:
    """An Alembic project: a stand-in for 0016 (the seeded target's revision), then
    ``(revision, down_revision, body of upgrade())``; migrations_target's alembic.ini beside."""
    (folder / "versions").mkdir(parents=True)
    (folder / "env.py").write_text(env_py)
    shutil.copy(ROOT / "migrations_target" / "alembic.ini", folder / "alembic.ini")
    for rev, down, body in [("0016", None, "pass"), *revisions]:
        down_body = (downgrades or {}).get(rev, "pass")
        (folder / "versions" / f"{rev}_step.py").write_text(
            "import os\n\nimport sqlalchemy as sa\nfrom alembic import op\n\n"
            f"revision = {rev!r}\ndown_revision = {down!r}\n"
            "branch_labels = None\ndepends_on = None\n\n\n"
            f"def upgrade():\n{textwrap.indent(textwrap.dedent(body).strip(), '    ')}\n\n\n"
            f"def downgrade():\n{textwrap.indent(textwrap.dedent(down_body).strip(), '    ')}\n"
        )
    return folder


@pytest.fixture
def target(make_target: Callable[..., str]) -> Any:
    """A seeded managed database at 0016 (its last check read it)."""
    db = make_database(dsn=make_target())
    checked(db, "0016")
    return db


def use(db: Any, folder: Path, **fields: Any) -> Any:
    db.script_location = str(folder)
    for name, value in fields.items():
        setattr(db, name, value)
    db.save()
    return db


def query(db: Any, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(db.dsn, password=TARGET_PASSWORD) as conn:
        return conn.execute(sql).fetchall()


def versions(db: Any) -> list[str]:
    return sorted(r[0] for r in query(db, "SELECT version_num FROM alembic_version"))


def exists(db: Any, table: str) -> bool:
    return query(db, f"SELECT to_regclass('{table}')")[0][0] is not None


# --- Runway's environment ---


def test_a_failing_revision_rolls_back_and_leaves_the_previous_one_current(
    target: Any, tmp_path: Path
) -> None:
    folder = project(
        tmp_path / "migrations",
        ("x1", "0016", "op.create_table('x_one', sa.Column('id', sa.Integer))"),
        (
            "x2",
            "x1",
            "op.create_table('x_two', sa.Column('id', sa.Integer))\nraise TypeError('no')",
        ),
        ("x3", "x2", "op.create_table('x_three', sa.Column('id', sa.Integer))"),
    )
    lines: list[str] = []
    steps = execution.migrate(use(target, folder), ["x1", "x2", "x3"], log=lines.append)
    assert [(s.revision, s.ok) for s in steps] == [("x1", True), ("x2", False)]
    assert steps[1].error == "TypeError: no (raises, line 14 of versions/x2_step.py)"
    assert versions(target) == ["x1"]
    assert exists(target, "x_one") and not exists(target, "x_two") and not exists(target, "x_three")
    assert "revisions run in Runway's environment (the revision files only" in "\n".join(lines)
    assert lines[-1] == "released the migration lock"


def test_a_merge_is_upgraded_to_and_downgraded_from(target: Any, tmp_path: Path) -> None:
    folder = project(
        tmp_path / "migrations",
        ("left", "0016", "op.execute('CREATE TABLE m_left (id int)')"),
        ("right", "0016", "op.execute('CREATE TABLE m_right (id int)')"),
        ("both", ("left", "right"), "op.execute('CREATE TABLE m_both (id int)')"),
        downgrades={
            "left": "op.execute('DROP TABLE m_left')",
            "right": "op.execute('DROP TABLE m_right')",
            "both": "op.execute('DROP TABLE m_both')",
        },
    )
    use(target, folder)
    pending = execution.revisions_to(target, ["0016"], "both")
    assert sorted(pending[:2]) == ["left", "right"] and pending[2] == "both"
    steps = execution.migrate(target, pending)
    assert all(s.ok for s in steps), steps
    assert versions(target) == ["both"]

    back = execution.revisions_back_to(target, ["both"], "0016")
    assert back[0] == "both" and sorted(back[1:]) == ["left", "right"]
    lines: list[str] = []
    steps = execution.migrate(target, back, direction="downgrade", log=lines.append)
    assert all(s.ok for s in steps), steps
    assert versions(target) == ["0016"]
    assert not any(exists(target, t) for t in ("m_left", "m_right", "m_both"))
    assert "undo both …" in lines


def test_the_live_log_shows_each_statement_with_its_time_and_no_data(
    target: Any, tmp_path: Path
) -> None:
    folder = project(
        tmp_path / "migrations",
        (
            "s1",
            "0016",
            """
            op.create_table("notes", sa.Column("id", sa.Integer), sa.Column("body", sa.Text))
            insert = sa.text("INSERT INTO notes (id, body) VALUES (:id, :body)")
            op.get_bind().execute(insert, {"id": 1, "body": "card 4111 1111 1111 1111"})
            op.execute("SELECT pg_sleep(0.2)")
            """,
        ),
    )
    lines: list[str] = []
    steps = execution.migrate(use(target, folder), ["s1"], log=lines.append)
    assert steps[0].ok, steps[0].error
    statements = [line for line in lines if " ms  " in line]
    assert any(
        line.endswith("ms  CREATE TABLE notes ( id INTEGER, body TEXT )") for line in statements
    )
    assert any(
        "INSERT INTO notes (id, body) VALUES" in line and "(1 rows)" in line for line in statements
    )
    sleep = next(line for line in statements if "pg_sleep" in line)
    assert float(sleep.split()[0]) >= 200
    assert not any("4111" in line for line in lines)


def test_a_database_not_at_the_parent_is_refused_and_nothing_changes(
    target: Any, tmp_path: Path
) -> None:
    folder = project(
        tmp_path / "migrations",
        ("y1", "0016", "op.create_table('y_one', sa.Column('id', sa.Integer))"),
        ("y2", "y1", "op.create_table('y_two', sa.Column('id', sa.Integer))"),
    )
    steps = execution.migrate(use(target, folder), ["y2"])
    assert [(s.revision, s.ok) for s in steps] == [("y2", False)]
    assert steps[0].error == (
        "the database is not at 'y1', the parent of y2: alembic_version holds '0016'"
    )
    assert versions(target) == ["0016"] and not exists(target, "y_two")


# --- The project's own env.py ---

RECORD = """
import json
argv = open("/proc/self/cmdline", "rb").read().decode().split("\\0")[:-1]
bind = op.get_bind()
setting = sa.text("SELECT current_setting(:name)")
seen = {{
    "argv": argv,
    "has_url": "DATABASE_URL" in os.environ,
    "pgoptions": os.environ.get("PGOPTIONS"),
    "database": bind.execute(sa.text("SELECT current_database()")).scalar(),
    "lock_timeout": bind.execute(setting, {{"name": "lock_timeout"}}).scalar(),
    "statement_timeout": bind.execute(setting, {{"name": "statement_timeout"}}).scalar(),
}}
open({path!r}, "w").write(json.dumps(seen))
print("the URL is", os.environ["DATABASE_URL"])
op.create_table("p_one", sa.Column("id", sa.Integer))
"""


def project_mode(settings: Any, db: Any, folder: Path, python: str = PYTHON) -> Any:
    settings.RUNWAY_PROJECT_PYTHONS = [PYTHON]
    return use(db, folder, run_mode="project", project_python=python)


def test_the_project_mode_runs_its_env_py_with_the_url_only_in_its_environment(
    settings: Any, target: Any, tmp_path: Path
) -> None:
    seen = tmp_path / "seen.json"
    env_py = (ROOT / "migrations_target" / "env.py").read_text()  # reads $DATABASE_URL
    folder = project(
        tmp_path / "migrations", ("p1", "0016", RECORD.format(path=str(seen))), env_py=env_py
    )
    lines: list[str] = []
    steps = execution.migrate(project_mode(settings, target, folder), ["p1"], log=lines.append)
    assert steps[0].ok, steps[0].error + "\n" + "\n".join(lines)
    assert versions(target) == ["p1"] and exists(target, "p_one")
    record = json.loads(seen.read_text())
    # The process's own argv, as /proc showed it while it ran: no URL, no password.
    assert record["argv"] == [
        PYTHON, "-m", "alembic", "-c", str(folder / "alembic.ini"), "upgrade", "p1"
    ]  # fmt: skip
    assert (
        record["has_url"] and record["database"] == query(target, "SELECT current_database()")[0][0]
    )
    # The first attempt's settings (guarded execution: the database's policy, by default).
    assert record["pgoptions"] == (
        "-c lock_timeout=100ms -c statement_timeout=300000ms "
        "-c client_connection_check_interval=1000ms"
    )
    assert (record["lock_timeout"], record["statement_timeout"]) == ("100ms", "5min")
    log = "\n".join(lines)
    assert "revisions run in the project's own env.py" in log
    assert f"$ {PYTHON} -m alembic -c {folder / 'alembic.ini'} upgrade p1" in log
    assert "Running upgrade 0016 -> p1" in log  # Alembic's own output, line by line
    assert "  | the URL is ***" in log
    assert TARGET_PASSWORD not in log and "app_owner:" not in log


def test_the_project_mode_fails_where_its_env_py_cannot_be_imported(
    settings: Any, target: Any, tmp_path: Path
) -> None:
    folder = project(tmp_path / "migrations", ("q1", "0016", "op.create_table('q_one')"))
    lines: list[str] = []
    steps = execution.migrate(project_mode(settings, target, folder), ["q1"], log=lines.append)
    assert [(s.revision, s.ok) for s in steps] == [("q1", False)]
    assert steps[0].error == (
        "alembic upgrade q1 exited with 1: ModuleNotFoundError: No module named 'app'"
    )
    assert versions(target) == ["0016"]
    # The same project through Runway's environment: env.py is never run.
    target.run_mode = "runway"
    target.save()
    assert execution.migrate(target, ["q1"])[0].ok
    assert versions(target) == ["q1"]


def test_an_interpreter_no_longer_allowed_is_refused_before_anything_runs(
    settings: Any, target: Any, tmp_path: Path
) -> None:
    folder = project(tmp_path / "migrations", ("r1", "0016", "op.create_table('r_one')"))
    project_mode(settings, target, folder)
    settings.RUNWAY_PROJECT_PYTHONS = ["/usr/bin/python3"]
    lines: list[str] = []
    with pytest.raises(execution.ExecutionError) as caught:
        execution.migrate(target, ["r1"], log=lines.append)
    assert str(caught.value) == (
        f"Refused to run the project's alembic: {PYTHON} is not one of the interpreters an "
        "admin allowed (RUNWAY_PROJECT_PYTHONS): the workers run only those. Nothing ran."
    )
    assert lines == [] and versions(target) == ["0016"]


def test_a_working_directory_outside_the_project_is_refused_at_run_time(
    settings: Any, target: Any, tmp_path: Path
) -> None:
    folder = project(tmp_path / "deep" / "er" / "still" / "migrations", ("r1", "0016", "pass"))
    project_mode(settings, target, folder)
    target.project_directory = "/tmp"
    target.save()
    with pytest.raises(execution.ExecutionError, match="/tmp is outside the project"):
        execution.migrate(target, ["r1"])
    assert versions(target) == ["0016"]


# --- Through the real worker ---

BACKUP_THEN_UPGRADE = """
id: upgrade-real-project
title: Upgrade a real project
needs_target: true
phases:
  - id: only
    title: Only
    steps:
      - id: backup
        action: backup.create
        title: Back up
      - id: validate-backup
        action: backup.validate
        title: Validate the backup
      - id: upgrade
        action: schema.upgrade
        title: Upgrade
"""


@pytest.mark.django_db(transaction=True)
def test_the_worker_upgrades_a_project_whose_env_py_cannot_be_imported(
    celery_worker: Path,
    target: Any,
    engineer: Any,
    owner_may_create_databases: None,
    tmp_path: Path,
) -> None:
    from dashboard.backups.models import BackupPolicy
    from runbooks import engine
    from runbooks.models import StepState

    folder = project(
        tmp_path / "migrations",
        ("w1", "0016", "op.create_table('w_notes', sa.Column('id', sa.Integer))"),
        (
            "w2",
            "w1",
            """
            op.add_column("w_notes", sa.Column("body", sa.Text))
            with op.get_context().autocommit_block():
                op.execute("CREATE INDEX CONCURRENTLY w_notes_body ON w_notes (body)")
            """,
        ),
    )
    broken = subprocess.run([PYTHON, folder / "env.py"], capture_output=True, text=True)
    assert "No module named 'app'" in broken.stderr  # env.py really cannot be imported
    use(target, folder)
    BackupPolicy.objects.create(database=target, storage_url=f"file://{tmp_path}/store")
    run = engine.start_run(engineer, runbook(BACKUP_THEN_UPGRADE), target, "w2")
    assert run.revisions == ["w1", "w2"]

    def finished() -> bool:
        return run.steps.get(step_id="upgrade").state in (StepState.DONE, StepState.FAILED) or (
            run.steps.filter(state=StepState.FAILED).exists()
        )

    wait_until(finished, "the worker's upgrade", 120)
    upgrade = run.steps.get(step_id="upgrade")
    others = {s.step_id: (s.state, s.summary) for s in run.steps.all()}
    assert upgrade.state == StepState.DONE, (
        f"{others}\n{upgrade.output}\n{celery_worker.read_text()[-3000:]}"
    )
    assert upgrade.summary.startswith("At w2: 2 revision(s) in ")
    assert [r["revision"] for r in upgrade.evidence["revisions"]] == ["w1", "w2"]
    assert versions(target) == ["w2"]
    assert query(
        target, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'w_notes_body'::regclass"
    ) == [(True,)]
    output = upgrade.output
    assert "revisions run in Runway's environment" in output
    assert "ms  CREATE INDEX CONCURRENTLY w_notes_body ON w_notes (body)" in output
    assert "UPDATE alembic_version SET version_num=" in output
    assert TARGET_PASSWORD not in output
