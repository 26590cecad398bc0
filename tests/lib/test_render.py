"""Rendering real teams' revision files offline (dashboard/lib/alembic/render.py): never env.py,
one revision at a time, in the isolated render worker. Each test builds its own awkward Alembic
project in a temporary folder, as teams write them."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from dashboard.lib import alembic
from dashboard.schema import risk

HEADER = "import sqlalchemy as sa\nfrom alembic import op\n"


def revision(folder: Path, rev: str, down: object, body: str, *, head: str = HEADER) -> Path:
    versions = folder / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    path = versions / f"{rev}_step.py"
    path.write_text(
        f'"""step {rev}"""\n{head}\n'
        f"revision = {rev!r}\ndown_revision = {down!r}\n"
        "branch_labels = None\ndepends_on = None\n\n\n"
        "def upgrade():\n" + textwrap.indent(textwrap.dedent(body).strip(), "    ") + "\n\n\n"
        "def downgrade():\n    op.execute('SELECT 1')\n"
    )
    return path


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """A project whose env.py imports the application (which Runway does not have)."""
    folder = tmp_path / "app" / "migrations"
    folder.mkdir(parents=True)
    (tmp_path / "app" / "myapp").mkdir()
    (tmp_path / "app" / "myapp" / "__init__.py").write_text("raise SystemExit('never run me')\n")
    (folder / "env.py").write_text(
        "from logging.config import fileConfig\n"
        "from alembic import context\n"
        "from myapp.db import metadata\n"
        "import does_not_exist_anywhere\n"
        "raise SystemExit('env.py must never run')\n"
    )
    revision(
        folder,
        "0001",
        None,
        'op.create_table("users", sa.Column("id", sa.BigInteger, primary_key=True), '
        'sa.Column("email", sa.Text), sa.Column("active", sa.Boolean))',
    )
    return folder


def render(folder: Path, *revs: str, **kwargs: object) -> dict[str, alembic.render.RevisionRender]:
    tree = alembic.read_scripts(folder)
    wanted = [tree.revisions[r] for r in revs] if revs else list(tree.revisions.values())
    rendered, _ = alembic.render_offline(tree, wanted, **kwargs)  # type: ignore[arg-type]
    return rendered


def test_an_env_py_that_imports_the_application_is_never_run(app: Path) -> None:
    rendered = render(app)["0001"].upgrade

    assert rendered.ok, rendered.failure
    assert "CREATE TABLE users" in rendered.sql
    assert "INSERT INTO alembic_version (version_num) VALUES ('0001')" in rendered.sql


def test_no_bytecode_is_written_into_the_project(app: Path) -> None:
    render(app)
    assert not list(app.rglob("__pycache__")) and not list(app.rglob("*.pyc"))


def test_an_import_of_the_application_that_upgrade_never_uses_does_not_matter(app: Path) -> None:
    revision(
        app,
        "0002",
        "0001",
        'op.add_column("users", sa.Column("name", sa.Text))',
        head=HEADER + "from myapp.models import User  # autogenerate left it\n",
    )
    rendered = render(app, "0002")["0002"].upgrade
    assert rendered.ok and "ADD COLUMN name TEXT" in rendered.sql


def test_using_the_applications_own_type_is_named_with_its_module_and_line(app: Path) -> None:
    revision(
        app,
        "0002",
        "0001",
        'op.add_column("users", sa.Column("token", myapp.types.Token()))',
        head=HEADER + "import myapp.types\n",
    )
    failure = render(app, "0002")["0002"].upgrade.failure
    assert failure is not None and failure.category == "imports_application"
    assert failure.module == "myapp" and failure.line == 13  # the header imports one more
    assert "myapp.types.Token()" in failure.message


def test_a_package_that_is_not_installed_is_named(app: Path) -> None:
    revision(
        app,
        "0002",
        "0001",
        'op.add_column("users", sa.Column("geo", geoalchemy9.Geometry("POINT")))',
        head=HEADER + "import geoalchemy9\n",
    )
    failure = render(app, "0002")["0002"].upgrade.failure
    assert failure is not None and failure.category == "missing_package"
    assert failure.module == "geoalchemy9"


def test_an_installed_plugin_env_py_imports_is_loaded_so_its_operations_exist(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "plugged"
    folder.mkdir()
    (folder / "env.py").write_text(
        "from alembic import context\n"
        "from alembic_utils.replaceable_entity import register_entities\n"
        "from alembic_utils_that_is_missing import thing\n"
    )
    revision(
        folder,
        "0001",
        None,
        'op.create_entity(PGView(schema="public", signature="active_users", '
        'definition="SELECT 1 AS id"))',
        head=HEADER + "from alembic_utils.pg_view import PGView\n",
    )
    revision(folder, "0002", "0001", 'op.create_materialised_thing("x")')
    tree = alembic.read_scripts(folder)
    rendered, facts = alembic.render_offline(tree, list(tree.revisions.values()))

    assert "CREATE VIEW" in rendered["0001"].upgrade.sql and "active_users" in (
        rendered["0001"].upgrade.sql
    )
    assert facts.loaded == ["alembic_utils.replaceable_entity"]
    assert facts.missing == ["alembic_utils_that_is_missing"]
    unknown = rendered["0002"].upgrade.failure
    assert unknown is not None and unknown.category == "unknown_operation"
    assert "op.create_materialised_thing" in unknown.message
    (report,) = risk.analyse(folder, tree, ["0002"])
    assert "alembic_utils_that_is_missing" in report.error and report.grade == "medium"


def test_a_revision_that_reads_the_database_shows_the_query_and_no_partial_sql(app: Path) -> None:
    revision(
        app,
        "0002",
        "0001",
        """
        op.add_column("users", sa.Column("name", sa.Text))
        bind = op.get_bind()
        ids = [r.id for r in bind.execute(sa.text("SELECT id FROM users WHERE active"))]
        for i in ids:
            op.execute(f"UPDATE users SET name = 'x' WHERE id = {i}")
        """,
    )
    rendered = render(app, "0002")["0002"].upgrade
    assert rendered.failure is not None and rendered.failure.category == "reads_database"
    assert rendered.failure.query == "SELECT id FROM users WHERE active"
    assert rendered.failure.line == 14
    assert rendered.sql == ""


def test_reflecting_the_live_schema_is_reading_the_database(app: Path) -> None:
    revision(
        app,
        "0002",
        "0001",
        'if "name" not in [c["name"] for c in sa.inspect(op.get_bind()).get_columns("users")]:\n'
        '    op.add_column("users", sa.Column("name", sa.Text))',
    )
    failure = render(app, "0002")["0002"].upgrade.failure
    assert failure is not None and failure.category == "reads_database"


def test_a_revision_that_raises_names_the_exception_and_the_line(app: Path) -> None:
    revision(app, "0002", "0001", 'op.add_column("users", sa.Column("n", sa.Text, 5, 6, x=1))')
    revision(app, "0003", "0002", "len(5)")
    rendered = render(app, "0002", "0003")
    assert rendered["0003"].upgrade.failure is not None
    failure = rendered["0003"].upgrade.failure
    assert failure.category == "raises" and failure.message.startswith("TypeError:")
    assert failure.line == 12
    (report,) = risk.analyse(app, alembic.read_scripts(app), ["0003"])
    assert report.grade == "high" and report.findings[0].rule == "revision-raises"


def test_what_a_revision_prints_is_kept_out_of_the_sql(app: Path) -> None:
    revision(
        app,
        "0002",
        "0001",
        'print("=== migrating users, this may take a while ===")\n'
        'op.add_column("users", sa.Column("name", sa.Text))',
    )
    rendered = render(app, "0002")["0002"].upgrade
    assert "===" not in rendered.sql and "migrating users" in rendered.printed
    (report,) = risk.analyse(app, alembic.read_scripts(app), ["0002"])
    assert report.grade == "low" and "migrating users" in report.printed


def test_parameters_given_to_execute_are_bound_into_the_sql(app: Path) -> None:
    revision(
        app,
        "0002",
        "0001",
        """
        plans = sa.table("plans", sa.column("code"), sa.column("price"))
        rows = [{"code": "free", "price": 0}, {"code": "pro", "price": 9}]
        op.get_bind().execute(plans.insert(), rows)
        fix = sa.text("UPDATE users SET email = :e WHERE id = :i")
        op.get_bind().execute(fix, {"e": "a@b", "i": 7})
        """,
    )
    sql = render(app, "0002")["0002"].upgrade.sql
    assert "INSERT INTO plans (code, price) VALUES ('free', 0);" in sql
    assert "INSERT INTO plans (code, price) VALUES ('pro', 9);" in sql
    assert "UPDATE users SET email = 'a@b' WHERE id = 7;" in sql
    assert "NULL" not in sql


def test_a_percent_in_a_like_is_not_doubled(app: Path) -> None:
    revision(
        app,
        "0002",
        "0001",
        "op.execute(\"UPDATE users SET active = false WHERE email LIKE '%@old.example'\")",
    )
    sql = render(app, "0002")["0002"].upgrade.sql
    assert "LIKE '%@old.example'" in sql and "%%" not in sql


def test_an_autocommit_block_renders_as_commit_and_begin(app: Path) -> None:
    revision(
        app,
        "0002",
        "0001",
        """
        with op.get_context().autocommit_block():
            op.create_index("ix_users_email", "users", ["email"], postgresql_concurrently=True)
        """,
    )
    sql = render(app, "0002")["0002"].upgrade.sql
    statements = [s.strip() for s in sql.split(";") if s.strip()]
    at = statements.index("CREATE INDEX CONCURRENTLY ix_users_email ON users (email)")
    assert statements[at - 1] == "COMMIT" and statements[at + 1] == "BEGIN"
    (report,) = risk.analyse(app, alembic.read_scripts(app), ["0002"])
    assert report.grade == "low", report.reasons
    assert report.findings == [] or all(f.severity == "note" for f in report.findings)


def test_concurrently_without_an_autocommit_block_fails_when_applied(app: Path) -> None:
    revision(
        app,
        "0002",
        "0001",
        'op.create_index("ix_users_email", "users", ["email"], postgresql_concurrently=True)',
    )
    (report,) = risk.analyse(app, alembic.read_scripts(app), ["0002"])
    finding = next(f for f in report.findings if f.rule == "concurrently-in-transaction")
    assert finding.severity == "high" and report.grade == "high"
    assert finding.line == 12  # the op.create_index call


def test_a_dangling_parent_and_a_duplicate_id_hide_nothing_that_parses(app: Path) -> None:
    revision(app, "0002", "0001", 'op.add_column("users", sa.Column("a", sa.Text))')
    revision(app, "0003", "gone", 'op.create_index("ix_users_a", "users", ["a"])')
    duplicate = app / "versions" / "0004_copy.py"
    duplicate.write_text((app / "versions" / "0002_step.py").read_text())
    tree = alembic.read_scripts(app)
    kinds = sorted(p.kind for p in tree.problems)
    assert kinds == ["duplicate_revision", "missing_down_revision"]

    reports = {r.revision: r for r in risk.analyse(app, tree, tree.oldest_first())}
    assert set(reports) == {"0001", "0002", "0003"}
    assert all(r.previewable for r in reports.values())
    # The broken link's revision is judged as applied to production: users holds data.
    assert reports["0003"].grade == "high"
    assert "WHERE alembic_version.version_num = 'gone'" in reports["0003"].sql


def test_without_a_database_an_index_on_a_table_made_two_revisions_earlier_is_flagged(
    app: Path,
) -> None:
    revision(app, "0002", "0001", 'op.create_table("events", sa.Column("id", sa.BigInteger))')
    revision(app, "0003", "0002", 'op.add_column("users", sa.Column("a", sa.Text))')
    revision(app, "0004", "0003", 'op.create_index("ix_events_id", "events", ["id"])')
    tree = alembic.read_scripts(app)
    reports = {r.revision: r for r in risk.analyse(app, tree, tree.oldest_first())}

    assert reports["0002"].grade == "low"  # a table created in the revision itself is new
    index = next(f for f in reports["0004"].findings if f.rule == "create-index-blocking")
    assert index.severity == "high" and reports["0004"].grade == "high"


def test_a_keyed_fix_up_is_not_a_data_migration(app: Path) -> None:
    revision(
        app,
        "0002",
        "0001",
        'op.execute("UPDATE users SET active = false WHERE id IN (3, 5, 8)")\n'
        'op.execute("DELETE FROM users WHERE id = 42")',
    )
    (report,) = risk.analyse(app, alembic.read_scripts(app), ["0002"])
    assert report.grade == "low", report.reasons
    assert {f.rule for f in report.findings} >= {"keyed-change"}


def test_a_revision_past_its_time_limit_is_timed_out_and_the_rest_still_render(app: Path) -> None:
    revision(app, "0002", "0001", "while True:\n    pass")
    revision(app, "0003", "0002", 'op.add_column("users", sa.Column("a", sa.Text))')
    rendered = render(app, "0002", "0003", timeout=1)
    failure = rendered["0002"].upgrade.failure
    assert failure is not None and failure.category == "timed_out"
    assert rendered["0003"].upgrade.ok


def test_module_state_is_restored_between_revisions(app: Path) -> None:
    revision(
        app,
        "0002",
        "0001",
        "import sys, types\nsys.modules['team_helpers'] = types.SimpleNamespace(state=1)",
    )
    revision(
        app,
        "0003",
        "0002",
        "import sys\nassert 'team_helpers' not in sys.modules, 'state leaked'\n"
        'op.add_column("users", sa.Column("a", sa.Text))',
    )
    rendered = render(app, "0002", "0003")
    assert rendered["0002"].upgrade.ok and rendered["0003"].upgrade.ok, rendered["0003"]


def test_the_downgrade_renders_too(app: Path) -> None:
    tree = alembic.read_scripts(app)
    rendered, _ = alembic.render_offline(tree, [tree.revisions["0001"]], downgrade=True)
    down = rendered["0001"].downgrade
    assert down is not None and down.ok
    assert "DELETE FROM alembic_version WHERE alembic_version.version_num = '0001'" in down.sql


def test_each_statement_knows_the_line_of_the_op_call_that_emitted_it(app: Path) -> None:
    revision(
        app,
        "0002",
        "0001",
        'op.add_column("users", sa.Column("a", sa.Text))\n'
        'op.create_index("ix_users_a", "users", ["a"])',
    )
    (report,) = risk.analyse(app, alembic.read_scripts(app), ["0002"])
    lines = {s.sql.split()[0] + " " + s.sql.split()[1]: s.file_line for s in report.statements}
    assert lines == {"ALTER TABLE": 12, "CREATE INDEX": 13}


def test_a_revision_that_kills_the_worker_is_named_and_the_rest_still_render(app: Path) -> None:
    revision(app, "0002", "0001", "import os\nos._exit(3)")
    revision(app, "0003", "0002", 'op.add_column("users", sa.Column("a", sa.Text))')
    rendered = render(app, "0002", "0003")
    failure = rendered["0002"].upgrade.failure
    assert failure is not None and failure.category == "raises"
    assert "the render worker died on it (exit 3)" in failure.message
    assert rendered["0003"].upgrade.ok


def test_an_import_inside_upgrade_is_importing_the_application_not_raising(app: Path) -> None:
    revision(app, "0002", "0001", "from myapp.enums import Status\nop.execute(Status.sql())")
    failure = render(app, "0002")["0002"].upgrade.failure
    assert failure is not None and failure.category == "imports_application"
    assert failure.module == "myapp" and failure.line == 12


def test_bulk_insert_into_an_untyped_lightweight_table_renders_as_online(app: Path) -> None:
    revision(
        app,
        "0002",
        "0001",
        'plans = sa.table("plans", sa.column("code"), sa.column("price"))\n'
        'op.bulk_insert(plans, [{"code": "free", "price": 0}, {"code": "pro", "price": 9.5}])',
    )
    rendered = render(app, "0002")["0002"].upgrade
    assert rendered.ok, rendered.failure
    assert "INSERT INTO plans (code, price) VALUES ('free', 0);" in rendered.sql
    assert "INSERT INTO plans (code, price) VALUES ('pro', 9.5);" in rendered.sql
