"""Runway's online environment on the real cluster: revision files run one at a time on Runway's
connection, never through env.py (here one that imports a module that does not exist), with the
version table written by Runway in each revision's own transaction."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import TARGET_PASSWORD, TARGET_ROLE

from dashboard.lib import pg
from dashboard.lib.alembic import online, read_scripts
from devstack.cluster import Cluster

BROKEN_ENV_PY = "from app.db import metadata  # the application: not importable here\n"


def project(
    folder: Path,
    *revisions: tuple[str, Any, str],
    downgrades: dict[str, str] | None = None,
    imports: dict[str, str] | None = None,
    depends: dict[str, str] | None = None,
) -> Path:
    """An Alembic project whose env.py cannot be imported, with ``(id, down_revision, body of
    upgrade())`` revisions; ``downgrades`` gives downgrade() bodies (default: pass), ``imports``
    lines added to a file's imports, ``depends`` a revision's depends_on."""
    (folder / "versions").mkdir(parents=True)
    (folder / "env.py").write_text(BROKEN_ENV_PY)
    (folder.parent / "app").mkdir(exist_ok=True)  # the application's own package, beside it
    for rev, down, body in revisions:
        down_body = (downgrades or {}).get(rev, "pass")
        (folder / "versions" / f"{rev}_step.py").write_text(
            "import sqlalchemy as sa\nfrom alembic import context, op\n"
            f"{(imports or {}).get(rev, '')}\n"
            f"revision = {rev!r}\ndown_revision = {down!r}\n"
            f"branch_labels = None\ndepends_on = {(depends or {}).get(rev)!r}\n\n\n"
            f"def upgrade():\n{textwrap.indent(textwrap.dedent(body).strip(), '    ')}\n\n\n"
            f"def downgrade():\n{textwrap.indent(textwrap.dedent(down_body).strip(), '    ')}\n"
        )
    return folder


@pytest.fixture
def database(pg_cluster: Cluster) -> Iterator[str]:
    """An empty database owned by the target role; its DSN (without the password)."""
    name = f"online_{os.getpid()}_{time.monotonic_ns() % 10**8}"
    pg_cluster.create_database(name, owner=TARGET_ROLE, replace=True)
    yield f"host={pg_cluster.host} port={pg_cluster.port} dbname={name} user={TARGET_ROLE}"
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def session(dsn: str, folder: Path, **hooks: Callable[[online.Statement], None]) -> online.Session:
    url = pg.sqlalchemy_url(dsn, TARGET_PASSWORD, options="-c lock_timeout=2s")
    return online.Session(url, online.Chain.of(read_scripts(folder)), **hooks)


def rows(dsn: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, password=TARGET_PASSWORD) as conn:
        return conn.execute(query).fetchall()


def versions(dsn: str) -> list[str]:
    return sorted(r[0] for r in rows(dsn, "SELECT version_num FROM alembic_version"))


def table_exists(dsn: str, name: str) -> bool:
    return rows(dsn, f"SELECT to_regclass('{name}')")[0][0] is not None


CONTEXT_WORKS = """
assert not context.is_offline_mode()
assert context.get_x_argument(as_dictionary=True) == {}
assert context.get_context() is op.get_context()
op.create_table("notes", sa.Column("id", sa.Integer, primary_key=True), sa.Column("body", sa.Text))
"""
ADD_COLUMN = 'op.add_column("notes", sa.Column("author", sa.Text))'
AUTOCOMMIT = """
op.execute("INSERT INTO notes (body) VALUES ('first')")
with op.get_context().autocommit_block():
    op.execute("CREATE INDEX CONCURRENTLY notes_body ON notes (body)")
op.execute("INSERT INTO notes (body) VALUES ('after the block')")
"""


def test_a_chain_whose_env_py_cannot_be_imported_runs_to_its_head(
    database: str, tmp_path: Path
) -> None:
    folder = project(
        tmp_path / "migrations",
        ("a1", None, CONTEXT_WORKS),
        ("a2", "a1", ADD_COLUMN),
        ("a3", "a2", AUTOCOMMIT),
        imports={"a2": "from app.models import Note  # imported, never used"},
    )
    with session(database, folder) as s:
        ran = [s.run(rev) for rev in ("a1", "a2", "a3")]
        assert s.backend_pid is not None
    assert [r.revision for r in ran] == ["a1", "a2", "a3"]
    assert all(r.direction == "upgrade" and r.seconds > 0 and r.statements for r in ran)
    assert versions(database) == ["a3"]
    assert rows(database, "SELECT body FROM notes ORDER BY id") == [
        ("first",),
        ("after the block",),
    ]
    assert rows(
        database, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'notes_body'::regclass"
    )
    assert not list(folder.rglob("__pycache__"))  # nothing written into the project


def test_a_revision_that_raises_rolls_back_and_leaves_its_parent_current(
    database: str, tmp_path: Path
) -> None:
    folder = project(
        tmp_path / "migrations",
        ("b1", None, CONTEXT_WORKS),
        ("b2", "b1", "op.create_table('half')\nvalue = {}\nvalue['missing']"),
        ("b3", "b2", "op.execute('SELECT 1/0')"),
    )
    with session(database, folder) as s:
        s.run("b1")
        with pytest.raises(online.RevisionFailed) as caught:
            s.run("b2")
    failure = caught.value.failure
    assert (failure.category, failure.line) == ("raises", 13)
    assert str(caught.value) == "KeyError: 'missing' (raises, line 13 of versions/b2_step.py)"
    assert versions(database) == ["b1"] and not table_exists(database, "half")


def test_a_database_error_names_the_line_and_never_the_password(
    database: str, tmp_path: Path
) -> None:
    folder = project(
        tmp_path / "migrations",
        ("c1", None, CONTEXT_WORKS),
        ("c2", "c1", "op.create_table('half')\nop.execute('SELECT 1/0')"),
    )
    with session(database, folder) as s:
        s.run("c1")
        with pytest.raises(online.RevisionFailed) as caught:
            s.run("c2")
    assert caught.value.failure.category == "database_error"
    assert str(caught.value) == (
        "DivisionByZero: division by zero (database_error, line 12 of versions/c2_step.py)"
    )
    assert TARGET_PASSWORD not in str(caught.value)
    assert versions(database) == ["c1"] and not table_exists(database, "half")


def test_a_revision_that_uses_the_application_fails_naming_the_module(
    database: str, tmp_path: Path
) -> None:
    folder = project(
        tmp_path / "migrations",
        ("d1", None, "op.create_table('x')\nNote.metadata.create_all(op.get_bind())"),
        ("d2", None, "from app.tables import notes\nop.create_table(notes)"),
        imports={"d1": "from app.models import Note"},
    )
    with session(database, folder) as s:
        for rev, line in (("d1", 12), ("d2", 11)):  # a module-level import; one in upgrade()
            with pytest.raises(online.RevisionFailed) as caught:
                s.run(rev)
            assert caught.value.failure.category == "imports_application"
            assert (caught.value.failure.module, caught.value.failure.line) == ("app", line)
    assert str(caught.value) == (
        "it imports app, from the application's own module 'app', which Runway does not "
        "import (imports_application, line 11 of versions/d2_step.py)"
    )
    assert not table_exists(database, "alembic_version")  # the root's table went with it
    assert "app" not in sys.modules and "runway_online_d1" not in sys.modules


def test_branches_merge_into_one_row_and_unmerge_on_the_way_down(
    database: str, tmp_path: Path
) -> None:
    folder = project(
        tmp_path / "migrations",
        ("root", None, "op.execute('CREATE TABLE r (id int)')"),
        ("left", "root", "op.execute('CREATE TABLE l (id int)')"),
        ("right", "root", "op.execute('CREATE TABLE rr (id int)')"),
        ("merge", ("left", "right"), "op.execute('CREATE TABLE m (id int)')"),
        downgrades={
            "merge": "op.execute('DROP TABLE m')",
            "right": "op.execute('DROP TABLE rr')",
            "left": "op.execute('DROP TABLE l')",
            "root": "op.execute('DROP TABLE r')",
        },
    )
    with session(database, folder) as s:
        s.run("root")
        s.run("left")
        s.run("right")  # a branch off a revision already built on: a second row
        assert versions(database) == ["left", "right"]
        s.run("merge")
        assert versions(database) == ["merge"]
        s.run("merge", "downgrade")
        assert versions(database) == ["left", "right"]
        s.run("right", "downgrade")
        assert versions(database) == ["left"]
        s.run("left", "downgrade")
        s.run("root", "downgrade")
    assert versions(database) == []
    assert not any(table_exists(database, t) for t in ("r", "l", "rr", "m"))


def test_a_downgrade_runs_the_revisions_downgrade_in_one_transaction(
    database: str, tmp_path: Path
) -> None:
    folder = project(
        tmp_path / "migrations",
        ("e1", None, CONTEXT_WORKS),
        ("e2", "e1", "op.add_column('notes', sa.Column('x', sa.Integer))"),
        downgrades={"e2": "op.drop_column('notes', 'x')\nraise RuntimeError('half way')"},
    )
    with session(database, folder) as s:
        s.run("e1")
        s.run("e2")
        with pytest.raises(online.RevisionFailed, match="RuntimeError: half way"):
            s.run("e2", "downgrade")
        with pytest.raises(online.RevisionFailed, match="e1 is not the current revision"):
            s.run("e1", "downgrade")
    assert versions(database) == ["e2"]  # the failed downgrade rolled back, column and all
    columns = "SELECT count(*) FROM information_schema.columns WHERE column_name = 'x'"
    assert rows(database, columns) == [(1,)]


def test_the_version_table_guard_refuses_a_database_not_at_the_parent(
    database: str, tmp_path: Path
) -> None:
    folder = project(
        tmp_path / "migrations",
        ("f1", None, CONTEXT_WORKS),
        ("f2", "f1", "op.create_table('two')"),
        ("f3", "f2", "op.create_table('three')"),
        ("f4", "f3", "op.execute(\"UPDATE alembic_version SET version_num = 'someone'\")"),
    )
    with session(database, folder) as s:
        s.run("f1")
        with pytest.raises(online.RevisionFailed) as caught:
            s.run("f3")
        assert caught.value.failure.category == "version_table"
        assert str(caught.value) == (
            "the database is not at 'f2', the parent of f3: alembic_version holds 'f1'"
        )
        assert versions(database) == ["f1"] and not table_exists(database, "three")
        with pytest.raises(online.RevisionFailed, match="f1 is already applied"):
            s.run("f1")
        with pytest.raises(online.RevisionFailed, match="f2 is not the current revision"):
            s.run("f2", "downgrade")
        s.run("f2")
        s.run("f3")
        # A revision that moves the row itself: Runway's UPDATE matches nothing, all rolls back.
        with pytest.raises(online.RevisionFailed) as caught:
            s.run("f4")
    assert str(caught.value) == (
        "alembic_version changed while the revision ran: moving 'f3' to 'f4' matched 0 rows; "
        "alembic_version holds 'someone'"
    )
    assert versions(database) == ["f3"]


def test_a_root_on_a_database_without_the_table_creates_it_but_a_child_is_refused(
    database: str, tmp_path: Path
) -> None:
    folder = project(
        tmp_path / "migrations",
        ("g1", None, "pass"),
        ("g2", "g1", "op.create_table('two')"),
    )
    with session(database, folder) as s:
        with pytest.raises(online.RevisionFailed, match="no alembic_version table"):
            s.run("g2")
        assert not table_exists(database, "alembic_version")
        s.run("g1")
    assert versions(database) == ["g1"]


def test_each_statement_is_logged_with_its_time_and_never_its_parameters(
    database: str, tmp_path: Path
) -> None:
    folder = project(
        tmp_path / "migrations",
        ("h1", None, CONTEXT_WORKS),
        (
            "h2",
            "h1",
            """
            insert = sa.text("INSERT INTO notes (body) VALUES (:b)")
            op.get_bind().execute(insert, {"b": "p@ssport 123"})
            op.execute("SELECT pg_sleep(0.2)")
            """,
        ),
        ("h3", "h2", "op.execute('SELECT * FROM no_such_table')"),
    )
    before: list[online.Statement] = []
    after: list[online.Statement] = []
    with session(
        database, folder, before_statement=before.append, after_statement=after.append
    ) as s:
        s.run("h1")
        s.run("h2")
        with pytest.raises(online.RevisionFailed):
            s.run("h3")
    assert before == after  # the same objects, finished
    sql = [st.sql for st in after]
    assert "CREATE TABLE notes ( id SERIAL NOT NULL, body TEXT, PRIMARY KEY (id) )" in sql
    insert = next(st for st in after if st.sql.startswith("INSERT INTO notes"))
    assert insert.revision == "h2" and insert.rowcount == 1
    assert not any("p@ssport" in st.sql for st in after)
    sleep = next(st for st in after if "pg_sleep" in st.sql)
    assert sleep.seconds is not None and sleep.seconds >= 0.2
    assert all(st.seconds is not None and st.seconds >= 0 for st in after)
    failed = after[-1]
    assert failed.sql == "SELECT * FROM no_such_table"
    assert failed.error.startswith('relation "no_such_table" does not exist')
    version_writes = [st.sql for st in after if st.revision == "h2" and "alembic_version" in st.sql]
    assert version_writes[-1].startswith("UPDATE alembic_version SET version_num=")


def test_the_connection_carries_runways_timeouts(database: str, tmp_path: Path) -> None:
    folder = project(
        tmp_path / "migrations",
        (
            "t1",
            None,
            """
            query = sa.text("SELECT current_setting('lock_timeout')")
            found = op.get_bind().execute(query).scalar()
            assert found == "2s", found
            """,
        ),
    )
    with session(database, folder) as s:
        s.run("t1")
    assert versions(database) == ["t1"]


def test_a_dependency_on_another_branch_is_consumed_as_alembic_does(
    database: str, tmp_path: Path
) -> None:
    folder = project(
        tmp_path / "migrations",
        ("p1", None, "pass"),
        ("q1", None, "pass"),
        ("p2", "p1", "pass"),
        depends={"p2": "q1"},
    )
    with session(database, folder) as s:
        s.run("p1")
        s.run("q1")
        assert versions(database) == ["p1", "q1"]
        s.run("p2")  # alembic upgrade heads --sql: DELETE one parent's row, UPDATE the other's
        assert versions(database) == ["p2"]
        s.run("p2", "downgrade")
        assert versions(database) == ["p1", "q1"]
