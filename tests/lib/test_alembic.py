"""dashboard.lib.alembic: reading script folders, the graph, status against a database, commands.

No database, no Django: script folders are written into tmp_path; the commands run against
SQLite files or offline.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from dashboard.lib.alembic import (
    AlembicError,
    History,
    NotAnAlembicProject,
    ScriptTree,
    check_project,
    downgrade,
    history,
    psycopg_url,
    read_config,
    read_scripts,
    render_sql,
    stamp,
    upgrade,
)

ROOT = Path(__file__).resolve().parents[2]

ENV_PY = """\
from alembic import context
from sqlalchemy import create_engine

url = context.get_x_argument(as_dictionary=True).get("url")
if url is None:
    url = context.config.get_main_option("sqlalchemy.url")

if context.is_offline_mode():
    context.configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()
else:
    if url.startswith("fail://"):
        raise RuntimeError(f"cannot connect to {url}")
    engine = create_engine(url)
    with engine.connect() as connection:
        context.configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
"""

WORKING_DOWNGRADE = '    op.drop_table("t_{rev}")'


def write_revision(
    folder: Path,
    rev: str,
    down: str | tuple[str, ...] | None,
    message: str = "",
    downgrade: bool | str = True,
    branch_labels: str | tuple[str, ...] | None = None,
    *,
    depends_on: str | tuple[str, ...] | None = None,
    filename: str | None = None,
    versions: Path | None = None,
) -> Path:
    """A revision file as ``alembic revision`` writes it; it creates (and drops) table t_<rev>.

    ``downgrade``: True for a working one, False for ``pass``, or the body's source code.
    ``versions``: the folder it goes into (default: ``versions/`` of the script folder).
    """
    versions = versions or folder / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "env.py").exists():
        (folder / "env.py").write_text(ENV_PY)
    if downgrade is True:
        body = WORKING_DOWNGRADE.format(rev=rev)
    elif downgrade is False:
        body = "    pass"
    else:
        body = textwrap.indent(textwrap.dedent(downgrade).strip("\n"), "    ")
    message = message or f"step {rev}"
    path = versions / (filename or f"{rev}_{message.replace(' ', '_')}.py")
    path.write_text(
        f'"""{message}\n\nRevision ID: {rev}\nRevises: {down}\n"""\n\n'
        "import sqlalchemy as sa\n"
        "from alembic import op\n\n"
        f"revision = {rev!r}\n"
        f"down_revision = {down!r}\n"
        f"branch_labels = {branch_labels!r}\n"
        f"depends_on = {depends_on!r}\n\n\n"
        "def upgrade():\n"
        f'    op.create_table("t_{rev}", sa.Column("id", sa.Integer, primary_key=True))\n\n\n'
        f"def downgrade():\n{body}\n"
    )
    return path


def linear(folder: Path, *revs: str) -> Path:
    down = None
    for rev in revs:
        write_revision(folder, rev, down)
        down = rev
    return folder


def diamond(folder: Path) -> Path:
    """a1 → (b1, c1) → d1 (merge) → e1."""
    write_revision(folder, "a1", None, "base")
    write_revision(folder, "b1", "a1", "left")
    write_revision(folder, "c1", "a1", "right")
    write_revision(folder, "d1", ("b1", "c1"), "merge left and right")
    write_revision(folder, "e1", "d1", "after the merge")
    return folder


def kinds(tree: ScriptTree) -> list[str]:
    return [p.kind for p in tree.problems]


def assert_lanes_join(result: History) -> None:
    """Every row's bottom meets the next row's top; every edge runs straight to its parent."""
    rows = result.rows
    lanes = {row.revision.id: row.lane for row in rows}
    position = {row.revision.id: i for i, row in enumerate(rows)}
    previous_bottom: set[int] = set()
    for row in rows:
        lane = row.lane
        top = set(lane.incoming) | set(lane.passing)
        assert top == previous_bottom, row.revision.id
        assert lane.lane not in lane.passing
        assert set(lane.incoming) <= {lane.lane} | previous_bottom
        assert lane.width > max([lane.lane, *top, *(e.lane for e in lane.edges)])
        previous_bottom = set(lane.passing) | {e.lane for e in lane.edges}
        assert [e.parent for e in lane.edges] == list(row.revision.parents)
        for edge in lane.edges:
            # The line reaches the parent in the parent's own column...
            assert lanes[edge.parent].lane == edge.lane
            assert edge.lane in lanes[edge.parent].incoming
            # ...and runs straight down every row in between.
            for between in rows[position[row.revision.id] + 1 : position[edge.parent]]:
                assert edge.lane in between.lane.passing, (row.revision.id, edge.parent)
    assert previous_bottom == set()


# --- Reading ---


def test_it_reads_a_linear_chain(tmp_path):
    linear(tmp_path, "0001", "0002", "0003")
    tree = read_scripts(tmp_path)
    assert tree.problems == []
    assert list(tree.order) == ["0003", "0002", "0001"]
    assert tree.heads == ("0003",) and tree.bases == ("0001",)
    rev = tree.revisions["0002"]
    assert rev.down_revisions == ("0001",) and rev.children == ("0003",)
    assert rev.message == "step 0002"
    assert rev.path == "versions/0002_step_0002.py"
    assert not rev.is_merge and not rev.is_branch_point
    assert tree.ancestors("0003") == {"0001", "0002"}
    assert tree.ancestors("0003", include_self=True) == {"0001", "0002", "0003"}


def test_it_reads_annotated_assignments_as_the_alembic_template_writes_them(tmp_path):
    (tmp_path / "env.py").write_text(ENV_PY)
    (tmp_path / "versions").mkdir()
    (tmp_path / "versions" / "ab12_first.py").write_text(
        '"""first one\n\nRevision ID: ab12\n"""\n'
        "from typing import Sequence, Union\n\n"
        'revision: str = "ab12"\n'
        "down_revision: Union[str, Sequence[str], None] = None\n"
        'branch_labels: Union[str, Sequence[str], None] = "core"\n'
        "depends_on: Union[str, Sequence[str], None] = None\n\n\n"
        "def upgrade() -> None:\n    pass\n\n\n"
        'def downgrade() -> None:\n    """Downgrade schema."""\n    pass\n'
    )
    (tmp_path / "versions" / "cd34_second.py").write_text(
        '"""second one"""\n'
        'revision: str = "cd34"\n'
        'down_revision: str | Sequence[str] | None = ["ab12"]\n'
        'branch_labels = ("x", "y")\n\n'
        "async def downgrade() -> None:\n    await something()\n"
    )
    tree = read_scripts(tmp_path)
    assert tree.problems == []
    first, second = tree.revisions["ab12"], tree.revisions["cd34"]
    assert first.message == "first one" and first.branch_labels == ("core",)
    assert not first.has_downgrade
    assert second.down_revisions == ("ab12",) and second.branch_labels == ("x", "y")
    assert second.has_downgrade
    assert tree.resolve("core") == "ab12" and tree.resolve("cd34") == "cd34"


def test_it_ignores_init_files_caches_and_other_files(tmp_path):
    linear(tmp_path, "0001")
    versions = tmp_path / "versions"
    (versions / "__init__.py").write_text("")
    (versions / "__pycache__").mkdir()
    (versions / "__pycache__" / "0001_step.cpython-312.pyc").write_bytes(b"\x00garbage")
    (versions / "notes.txt").write_text("revision = 'nope'")
    (versions / "0002_draft.py.orig").write_text("revision = 'nope'")
    tree = read_scripts(tmp_path)
    assert list(tree.revisions) == ["0001"] and tree.problems == []


def test_it_detects_a_branch_and_its_merge(tmp_path):
    tree = read_scripts(diamond(tmp_path))
    assert tree.problems == []
    assert tree.heads == ("e1",) and tree.bases == ("a1",)
    assert tree.revisions["d1"].is_merge and tree.revisions["d1"].down_revisions == ("b1", "c1")
    assert tree.revisions["a1"].is_branch_point
    assert tree.revisions["a1"].children == ("b1", "c1")
    assert list(tree.order) == ["e1", "d1", "b1", "c1", "a1"]


def test_a_merge_draws_in_two_lanes_that_join_up(tmp_path):
    result = history(read_scripts(diamond(tmp_path)), ["b1"])
    assert_lanes_join(result)
    lanes = {row.revision.id: row.lane for row in result.rows}
    assert [(e.parent, e.lane) for e in lanes["d1"].edges] == [("b1", 0), ("c1", 1)]
    assert lanes["b1"].lane == 0 and lanes["b1"].passing == (1,)
    assert lanes["c1"].lane == 1 and lanes["c1"].passing == (0,)
    assert [(e.parent, e.lane) for e in lanes["c1"].edges] == [("a1", 0)]
    assert lanes["a1"].incoming == (0,)
    assert result.width == 2


def test_two_heads_from_one_branch_point_draw_side_by_side(tmp_path):
    write_revision(tmp_path, "a1", None)
    write_revision(tmp_path, "b1", "a1")
    write_revision(tmp_path, "c1", "a1")
    result = history(read_scripts(tmp_path), ["a1"])
    assert_lanes_join(result)
    assert [(row.revision.id, row.lane.lane) for row in result.rows] == [
        ("c1", 0),
        ("b1", 1),
        ("a1", 0),
    ]


def test_a_tangled_graph_still_draws_lines_that_join(tmp_path):
    # Two long branches off the same base, merged twice, one branch dangling, a late base.
    write_revision(tmp_path, "r00", None)
    for i in range(1, 6):
        write_revision(tmp_path, f"r{i:02d}", f"r{i - 1:02d}")
        write_revision(tmp_path, f"s{i:02d}", f"s{i - 1:02d}" if i > 1 else "r00")
    write_revision(tmp_path, "m1", ("r03", "s02"))
    write_revision(tmp_path, "m2", ("m1", "r05", "s05"))
    write_revision(tmp_path, "x1", "r02")
    write_revision(tmp_path, "z1", None)
    write_revision(tmp_path, "z2", ("z1", "m2"))
    tree = read_scripts(tmp_path)
    assert tree.problems == []
    result = history(tree, ["r02"])
    assert_lanes_join(result)
    assert set(tree.heads) == {"z2", "x1"}
    assert set(result.merges) == {"m1", "m2", "z2"}


# --- Broken folders ---


def test_it_names_a_missing_down_revision(tmp_path):
    linear(tmp_path, "0001", "0002")
    write_revision(tmp_path, "0007", "0006", "x", filename="0007_x.py")
    tree = read_scripts(tmp_path)
    assert kinds(tree) == ["missing_down_revision"]
    problem = tree.problems[0]
    assert problem.file == "versions/0007_x.py" and problem.revision == "0007"
    assert problem.message.startswith(
        "0007_x.py: down_revision '0006' names a revision that does not exist"
    )
    assert "0007" in tree.revisions and "0007" in tree.bases
    assert set(tree.heads) == {"0002", "0007"}


def test_it_keeps_the_first_of_two_files_with_the_same_revision_id(tmp_path):
    linear(tmp_path, "0001", "0002")
    write_revision(tmp_path, "0002", "0001", "copy", filename="0002_z_copy.py")
    tree = read_scripts(tmp_path)
    assert kinds(tree) == ["duplicate_revision"]
    message = tree.problems[0].message
    assert "0002_step_0002.py" in message and "0002_z_copy.py" in message and "'0002'" in message
    assert tree.revisions["0002"].path == "versions/0002_step_0002.py"
    assert tree.problems[0].file == "versions/0002_z_copy.py"


def test_a_file_with_a_syntax_error_is_named_and_skipped(tmp_path):
    linear(tmp_path, "0001", "0002")
    (tmp_path / "versions" / "0003_broken.py").write_text(
        "revision = '0003'\ndown_revision = '0002'\ndef upgrade(:\n"
    )
    tree = read_scripts(tmp_path)
    assert kinds(tree) == ["syntax_error"]
    assert tree.problems[0].file == "versions/0003_broken.py"
    assert "0003_broken.py" in tree.problems[0].message
    assert list(tree.order) == ["0002", "0001"]


def test_a_file_without_a_revision_is_named_and_skipped(tmp_path):
    linear(tmp_path, "0001")
    (tmp_path / "versions" / "helpers.py").write_text("def util():\n    return 1\n")
    (tmp_path / "versions" / "0002_computed.py").write_text("revision = make_id()\n")
    tree = read_scripts(tmp_path)
    assert kinds(tree) == ["bad_value", "no_revision"]
    assert tree.problems[1].message.startswith("helpers.py: no `revision = ...` assignment")
    assert list(tree.revisions) == ["0001"]


def test_a_cycle_is_reported_and_cut_open_not_a_hang(tmp_path):
    write_revision(tmp_path, "0001", "0003")
    write_revision(tmp_path, "0002", "0001")
    write_revision(tmp_path, "0003", "0002")
    write_revision(tmp_path, "0004", "0003")
    tree = read_scripts(tmp_path)
    assert kinds(tree) == ["cycle"]
    problem = tree.problems[0]
    assert problem.revision == "0001"
    assert "'0001' → '0003' → '0002' → '0001'" in problem.message
    assert list(tree.order) == ["0004", "0003", "0002", "0001"]
    assert tree.bases == ("0001",)
    assert_lanes_join(history(tree, []))


def test_a_revision_naming_itself_is_a_cycle(tmp_path):
    write_revision(tmp_path, "0001", "0001")
    tree = read_scripts(tmp_path)
    assert kinds(tree) == ["cycle"] and tree.bases == ("0001",)


def test_a_cycle_through_depends_on_is_cut_open_too(tmp_path):
    write_revision(tmp_path, "a1", None)
    write_revision(tmp_path, "b1", "a1", depends_on="c1")
    write_revision(tmp_path, "c1", None, depends_on="b1")
    tree = read_scripts(tmp_path)
    assert kinds(tree) == ["cycle"]
    assert len(tree.order) == 3


def test_the_problems_reach_the_json(tmp_path):
    linear(tmp_path, "0001")
    write_revision(tmp_path, "0007", "0006", "x", filename="0007_x.py")
    data = history(read_scripts(tmp_path), ["0001"]).to_json()
    assert data["problems"] == [
        {
            "kind": "missing_down_revision",
            "file": "versions/0007_x.py",
            "revision": "0007",
            "message": "0007_x.py: down_revision '0006' names a revision that does not exist; "
            "the chain is broken here",
        }
    ]


def not_a_project(tmp_path: Path, what: str) -> Path:
    if what == "missing":
        return tmp_path / "gone"
    if what == "file":
        (tmp_path / "env.py").write_text(ENV_PY)
        return tmp_path / "env.py"
    if what == "no env.py":
        (tmp_path / "versions").mkdir()
    if what == "no versions":
        (tmp_path / "env.py").write_text("")
    return tmp_path


@pytest.mark.parametrize(
    "what,reason",
    [
        ("missing", "the folder does not exist"),
        (
            "file",
            "it is a file, but not an ini file Alembic can read "
            "(File contains no section headers.)",
        ),
        ("no env.py", "no env.py found"),
        ("no versions", "no versions/ folder found"),
    ],
)
def test_it_explains_what_is_not_an_alembic_project(tmp_path, what, reason):
    path = not_a_project(tmp_path, what)
    with pytest.raises(NotAnAlembicProject) as caught:
        read_scripts(path)
    assert str(caught.value) == f"{path} is not an Alembic project: {reason}"


# --- Script locations: a folder or an alembic.ini, as Alembic itself reads them ---


def ini(folder: Path, body: str, name: str = "alembic.ini") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(body).lstrip())
    return path


def spread_out(root: Path) -> Path:
    """A project whose revisions live in two folders, one with a dated sub-folder.

    migrations/ (env.py) · migrations/versions: a1, b1 (label core) · migrations/versions/2024:
    c1 · billing/versions: p1 (label billing, depends on core). Returns the script folder.
    """
    script = root / "migrations"
    write_revision(script, "a1", None, "base")
    write_revision(script, "b1", "a1", "core tables", branch_labels="core")
    write_revision(script, "c1", "b1", "dated", versions=script / "versions" / "2024")
    write_revision(
        script,
        "p1",
        None,
        "billing base",
        branch_labels="billing",
        depends_on="core",
        versions=root / "billing" / "versions",
    )
    return script


def alembic_reads(config: Path, section: str = "alembic") -> dict[str, Path]:
    """What Alembic 1.20 itself loads from the same file: revision id -> file."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    if config.name == "pyproject.toml":
        cfg = Config(toml_file=str(config))
    else:
        beside = config.parent / "pyproject.toml"
        cfg = Config(str(config), ini_section=section, toml_file=str(beside))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy separators
        script = ScriptDirectory.from_config(cfg)
        return {
            s.revision: Path(s.path).resolve()
            for s in script.revision_map.iterate_revisions("heads", "base")
        }


def runway_reads(location: str | Path) -> dict[str, Path]:
    tree = read_scripts(location)
    assert tree.problems == []
    return {rev.id: (tree.location / rev.path).resolve() for rev in tree}


TWO_FOLDERS = "%(here)s/migrations/versions{sep}%(here)s/billing/versions"


@pytest.mark.parametrize(
    "options,ids",
    [
        ("script_location = migrations", {"a1", "b1"}),
        ("script_location = %(here)s/migrations", {"a1", "b1"}),
        ("script_location = ./migrations\nrecursive_version_locations = true", {"a1", "b1", "c1"}),
        (
            "script_location = migrations\n"
            f"version_locations = {TWO_FOLDERS.format(sep=':')}\npath_separator = os",
            {"a1", "b1", "p1"},
        ),
        (
            "script_location = migrations\n"
            f"version_locations = {TWO_FOLDERS.format(sep=' ')}\npath_separator = space",
            {"a1", "b1", "p1"},
        ),
        (
            "script_location = migrations\n"
            f"version_locations =\n  {TWO_FOLDERS.format(sep=chr(10) + '  ')}\n"
            "path_separator = newline",
            {"a1", "b1", "p1"},
        ),
        (
            "script_location = migrations\n"
            f"version_locations = {TWO_FOLDERS.format(sep=';')}\nversion_path_separator = ;",
            {"a1", "b1", "p1"},
        ),
        (  # no separator configured: Alembic's legacy split on commas and spaces
            "script_location = migrations\n"
            "version_locations = migrations/versions, billing/versions",
            {"a1", "b1", "p1"},
        ),
        (
            "script_location = migrations\n"
            f"version_locations = {TWO_FOLDERS.format(sep=';')}\npath_separator = ;\n"
            "recursive_version_locations = true",
            {"a1", "b1", "c1", "p1"},
        ),
        (  # Alembic's boolean test is == "true"
            "script_location = migrations\nrecursive_version_locations = True",
            {"a1", "b1"},
        ),
    ],
)
def test_an_alembic_ini_is_read_as_alembic_reads_it(tmp_path, monkeypatch, options, ids):
    spread_out(tmp_path)
    config = ini(tmp_path, "[alembic]\n" + options + "\n")
    monkeypatch.chdir(tmp_path)  # Alembic starts relative paths here; Runway at the ini
    expected = alembic_reads(config)
    assert set(expected) == ids
    monkeypatch.chdir(tmp_path / "billing")
    assert runway_reads(config) == expected


def test_relative_paths_start_at_the_ini_not_the_working_directory(tmp_path, monkeypatch):
    spread_out(tmp_path / "app")
    config = ini(tmp_path / "app", "[alembic]\nscript_location = migrations\n")
    monkeypatch.chdir(tmp_path)
    tree = read_scripts(config)
    assert tree.location == tmp_path / "app" / "migrations"
    assert set(tree.revisions) == {"a1", "b1"}
    assert read_scripts(Path("app") / "alembic.ini").location == tree.location


def test_revision_paths_stay_usable_from_the_script_location(tmp_path):
    spread_out(tmp_path)
    config = ini(
        tmp_path,
        f"""
        [alembic]
        script_location = %(here)s/migrations
        version_locations = {TWO_FOLDERS.format(sep=" ")}
        path_separator = space
        recursive_version_locations = true
        """,
    )
    tree = read_scripts(config)
    assert tree.revisions["a1"].path == "versions/a1_base.py"
    assert tree.revisions["c1"].path == "versions/2024/c1_dated.py"
    billing = tmp_path / "billing" / "versions" / "p1_billing_base.py"
    assert tree.revisions["p1"].path == billing.as_posix()  # outside: absolute
    assert tree.revisions["p1"].file_name == "p1_billing_base.py"
    for rev in tree:
        assert (tree.location / rev.path).is_file()
    assert tree.shown_locations() == ["migrations/versions", "billing/versions"]
    assert tree.shown_path(tree.revisions["p1"]) == "billing/versions/p1_billing_base.py"
    assert tree.revisions["p1"].dependencies == ("b1",)
    data = history(tree, []).to_json()
    assert data["version_locations"] == ["migrations/versions", "billing/versions"]
    assert data["recursive"] is True and data["versions_named_in"] == "alembic.ini"
    p1 = next(r for r in data["revisions"] if r["id"] == "p1")
    assert p1["depends"] == [{"name": "core", "target": "b1"}]
    assert p1["shown_file"] == "billing/versions/p1_billing_base.py"


def test_a_script_folder_needs_no_versions_folder_when_version_locations_say_where(tmp_path):
    script = tmp_path / "migrations"
    write_revision(script, "a1", None, versions=tmp_path / "revisions")
    config = ini(
        tmp_path,
        "[alembic]\nscript_location = migrations\nversion_locations = %(here)s/revisions\n",
    )
    assert not (script / "versions").exists()
    assert check_project(config) == script
    assert list(read_scripts(config).revisions) == ["a1"]


def test_one_id_in_two_version_locations_is_a_duplicate(tmp_path):
    spread_out(tmp_path)
    write_revision(
        tmp_path / "migrations", "a1", None, "base", versions=tmp_path / "billing" / "versions"
    )
    config = ini(
        tmp_path,
        f"""
        [alembic]
        script_location = migrations
        version_locations = {TWO_FOLDERS.format(sep=" ")}
        path_separator = space
        """,
    )
    tree = read_scripts(config)
    assert kinds(tree) == ["duplicate_revision"]
    problem = tree.problems[0]
    assert problem.message == (
        "migrations/versions/a1_base.py and billing/versions/a1_base.py both define revision "
        "'a1'; billing/versions/a1_base.py is ignored"
    )
    assert tree.revisions["a1"].path == "versions/a1_base.py"
    assert problem.file == (tmp_path / "billing" / "versions" / "a1_base.py").as_posix()


def test_a_folder_listed_twice_is_read_once(tmp_path):
    spread_out(tmp_path)
    config = ini(
        tmp_path,
        "[alembic]\nscript_location = migrations\npath_separator = space\n"
        "version_locations = migrations/versions %(here)s/migrations/versions "
        "migrations/versions/2024\nrecursive_version_locations = true\n",
    )
    assert set(runway_reads(config)) == {"a1", "b1", "c1"}


def test_another_section_is_named_after_a_hash(tmp_path):
    spread_out(tmp_path)
    config = ini(
        tmp_path,
        """
        [alembic]
        script_location = migrations

        [billing]
        script_location = migrations
        version_locations = %(here)s/billing/versions
        """,
    )
    assert set(runway_reads(config)) == {"a1", "b1"}
    tree = read_scripts(f"{config}#billing")
    assert set(tree.revisions) == {"p1"}
    assert kinds(tree) == ["missing_dependency"]  # core lives in the other section's folder
    assert read_config(config, "billing").section == "billing"


def test_a_pyproject_toml_is_read_as_alembic_reads_it(tmp_path, monkeypatch):
    spread_out(tmp_path)
    toml = tmp_path / "pyproject.toml"
    toml.write_text(
        '[tool.alembic]\nscript_location = "%(here)s/migrations"\n'
        'version_locations = ["%(here)s/migrations/versions", "%(here)s/billing/versions"]\n'
        "recursive_version_locations = true\n"
    )
    monkeypatch.chdir(tmp_path)
    expected = alembic_reads(toml)
    assert set(expected) == {"a1", "b1", "c1", "p1"}
    assert runway_reads(toml) == expected
    # The pyproject template: alembic.ini keeps only logging and the URL.
    config = ini(tmp_path, "[alembic]\nsqlalchemy.url = driver://u:p@h/db\n")
    assert alembic_reads(config) == expected
    assert runway_reads(config) == expected


def make_package(root: Path, dotted: str) -> Path:
    """Packages whose __init__ raises, so importing any of them fails the test; returns the
    innermost package's folder, holding a script folder migrations/ with a1 and b1."""
    folder = root
    for name in dotted.split("."):
        folder = folder / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "__init__.py").write_text(f"raise RuntimeError('{name} was imported')\n")
    linear(folder / "migrations", "a1", "b1")
    return folder


@pytest.mark.parametrize("dotted", ["runway_demo_pkg", "runway_demo_pkg.db.schema"])
def test_a_package_resource_is_found_without_importing_the_package(tmp_path, monkeypatch, dotted):
    folder = make_package(tmp_path / "site", dotted)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    config = ini(tmp_path / "project", f"[alembic]\nscript_location = {dotted}:migrations\n")
    tree = read_scripts(config)
    assert tree.location == folder / "migrations"
    assert set(tree.revisions) == {"a1", "b1"}
    assert not any(m.startswith("runway_demo_pkg") for m in sys.modules)


def test_a_package_resource_is_looked_for_in_prepend_sys_path_first(tmp_path):
    folder = make_package(tmp_path / "src", "runway_src_pkg.db")
    make_package(tmp_path, "runway_src_pkg.db")  # beside the ini: found only as the fallback
    config = ini(
        tmp_path,
        "[alembic]\nprepend_sys_path = src\npath_separator = os\n"
        "script_location = runway_src_pkg.db:migrations\n",
    )
    assert read_scripts(config).location == folder / "migrations"
    assert "runway_src_pkg" not in sys.modules


def test_a_package_resource_falls_back_to_a_folder_beside_the_ini(tmp_path):
    folder = make_package(tmp_path, "runway_app_pkg.db")
    config = ini(tmp_path, "[alembic]\nscript_location = runway_app_pkg.db:migrations\n")
    assert read_scripts(config).location == folder / "migrations"


def test_version_locations_may_be_package_resources_too(tmp_path):
    folder = make_package(tmp_path, "runway_ver_pkg")
    write_revision(folder / "migrations", "p1", "b1", versions=folder / "billing")
    config = ini(
        tmp_path,
        "[alembic]\nscript_location = runway_ver_pkg:migrations\npath_separator = space\n"
        "version_locations = runway_ver_pkg:migrations/versions runway_ver_pkg:billing\n",
    )
    assert set(read_scripts(config).revisions) == {"a1", "b1", "p1"}


def broken_config(tmp_path: Path, what: str) -> Path:
    spread_out(tmp_path)
    bodies = {
        "no section": "[loggers]\nkeys = root\n",
        "no script_location": "[alembic]\nsqlalchemy.url = driver://u:p@h/db\n",
        "package": "[alembic]\nscript_location = runway_no_such_pkg:migrations\n",
        "not a package": "[alembic]\nscript_location = some-thing:migrations\n",
        "script folder": "[alembic]\nscript_location = %(here)s/migraitons\n",
        "env.py": "[alembic]\nscript_location = billing\n",
        "version location": "[alembic]\nscript_location = migrations\n"
        "version_locations = migrations/versions billing/versons\npath_separator = space\n",
        "separator": "[alembic]\nscript_location = migrations\n"
        "version_locations = a,b\npath_separator = comma\n",
        "interpolation": "[alembic]\nscript_location = %(root)s/migrations\n",
        "not ini": "script_location = migrations\n",
    }
    if what == "missing":
        return tmp_path / "alembic.ini"
    return ini(tmp_path, bodies[what])


@pytest.mark.parametrize(
    "what,reason",
    [
        ("missing", "the file does not exist"),
        ("no section", "it has no [alembic] section"),
        ("no script_location", "its [alembic] section has no script_location"),
        (
            "package",
            "its script_location 'runway_no_such_pkg:migrations' names the package "
            "'runway_no_such_pkg', which Runway cannot find (not importable here, and no "
            "runway_no_such_pkg/ folder beside alembic.ini)",
        ),
        ("not a package", "its script_location 'some-thing:migrations' does not name a package"),
        ("script folder", "its script_location migraitons does not exist"),
        ("env.py", "no env.py in its script_location billing"),
        ("version location", "version location billing/versons (version_locations) does not exist"),
        ("separator", "path_separator = 'comma' is not one of space, newline, os, ':' or ';'"),
        ("interpolation", "its script_location cannot be read (Bad value substitution: "),
        ("not ini", "it is a file, but not an ini file Alembic can read (File contains no "),
    ],
)
def test_it_explains_what_is_wrong_with_an_alembic_ini(tmp_path, what, reason):
    path = broken_config(tmp_path, what)
    with pytest.raises(NotAnAlembicProject) as caught:
        read_scripts(path)
    assert str(caught.value).startswith(f"{path} is not an Alembic project: {reason}")


def test_a_registered_folder_hints_at_its_alembic_ini(tmp_path):
    spread_out(tmp_path)
    ini(tmp_path, "[alembic]\nscript_location = migrations\n")
    with pytest.raises(NotAnAlembicProject, match="it holds an alembic.ini: register that file"):
        read_scripts(tmp_path)


def test_commands_run_through_an_alembic_ini_with_version_locations(tmp_path):
    spread_out(tmp_path)
    config = ini(
        tmp_path,
        f"""
        [alembic]
        script_location = migrations
        version_locations = {TWO_FOLDERS.format(sep=" ")}
        path_separator = space
        recursive_version_locations = true
        """,
    )
    sql = render_sql(config, None, "heads")
    for rev in ("a1", "b1", "c1", "p1"):
        assert f"CREATE TABLE t_{rev}" in sql
    url = f"sqlite:///{tmp_path / 'app.db'}"
    upgrade(config, url, "billing@head")
    with sqlite3.connect(tmp_path / "app.db") as conn:
        versions = {r[0] for r in conn.execute("SELECT version_num FROM alembic_version")}
    assert versions == {"p1"}  # p1 depends on b1: b1 ran first, and p1 stands for both


def test_the_fingerprint_follows_every_version_location_and_the_ini(tmp_path):
    spread_out(tmp_path)
    config = ini(
        tmp_path,
        "[alembic]\nscript_location = migrations\npath_separator = space\n"
        "version_locations = migrations/versions billing/versions\n",
    )
    before = read_config(config).fingerprint()
    write_revision(tmp_path / "migrations", "p2", "p1", versions=tmp_path / "billing" / "versions")
    after = read_config(config).fingerprint()
    assert after != before and after[1] > before[1]
    config.write_text(config.read_text() + "recursive_version_locations = true\n")
    os.utime(config, (after[0] + 5, after[0] + 5))
    assert read_config(config).fingerprint()[0] > after[0]


# --- Downgrades ---


@pytest.mark.parametrize(
    "body,works",
    [
        (True, True),
        (False, False),
        ("...", False),
        ('"""Nothing to undo."""\npass', False),
        ("# irreversible: data was dropped\npass", False),
        ("raise NotImplementedError", False),
        ('raise NotImplementedError("cannot undo a backfill")', False),
        ('"""Irreversible."""\nraise RuntimeError("no way back")', False),
        ('op.drop_column("users", "flag")', True),
        ('if False:\n    raise NotImplementedError\nop.drop_table("t")', True),
    ],
)
def test_it_tells_a_working_downgrade_from_a_stub(tmp_path, body, works):
    write_revision(tmp_path, "a1", None, downgrade=body)
    assert read_scripts(tmp_path).revisions["a1"].has_downgrade is works


def test_a_revision_without_a_downgrade_function_has_no_downgrade(tmp_path):
    (tmp_path / "env.py").write_text("")
    (tmp_path / "versions").mkdir()
    (tmp_path / "versions" / "a1.py").write_text("revision = 'a1'\ndown_revision = None\n")
    assert read_scripts(tmp_path).revisions["a1"].has_downgrade is False


# --- Status against a database ---


def test_pending_revisions_come_oldest_first(tmp_path):
    linear(tmp_path, "0001", "0002", "0003", "0004")
    result = history(read_scripts(tmp_path), ["0002"])
    assert result.current == ["0002"]
    assert result.pending == ["0003", "0004"]
    assert result.applied == {"0001", "0002"}
    assert result.drift == []
    rows = {row.revision.id: row for row in result.rows}
    assert rows["0002"].is_current and rows["0002"].is_applied and not rows["0002"].is_pending
    assert rows["0001"].is_applied and not rows["0001"].is_current
    assert rows["0004"].is_pending and rows["0004"].is_head


def test_pending_follows_both_sides_of_a_merge_in_running_order(tmp_path):
    result = history(read_scripts(diamond(tmp_path)), ["b1"])
    assert result.pending == ["c1", "d1", "e1"]
    assert result.merges == ["d1"] and result.heads == ["e1"]
    assert result.drift == []


def test_an_unstamped_database_has_everything_pending_and_no_drift(tmp_path):
    linear(tmp_path, "0001", "0002", "0003")
    result = history(read_scripts(tmp_path), [])
    assert result.current == [] and not result.stamped
    assert result.pending == ["0001", "0002", "0003"]
    assert result.drift == []


def test_a_database_at_a_revision_no_script_defines_is_drift(tmp_path):
    linear(tmp_path, "0001", "0002")
    result = history(read_scripts(tmp_path), ["abc123"])
    assert result.drift == [
        "the database is at 'abc123', which no script defines — renamed or deleted?"
    ]
    assert result.unknown_current == ["abc123"]
    assert result.pending == ["0001", "0002"]


def test_two_heads_are_drift(tmp_path):
    write_revision(tmp_path, "a1", None)
    write_revision(tmp_path, "b1", "a1")
    write_revision(tmp_path, "c1", "a1")
    result = history(read_scripts(tmp_path), ["a1"])
    assert result.drift == ["2 heads: c1, b1 — merge them"]
    assert result.pending == ["b1", "c1"]


def test_a_database_on_two_branches_has_both_applied(tmp_path):
    write_revision(tmp_path, "a1", None)
    write_revision(tmp_path, "b1", "a1")
    write_revision(tmp_path, "c1", "a1")
    write_revision(tmp_path, "d1", ("b1", "c1"))
    result = history(read_scripts(tmp_path), ["b1", "c1", "b1"])
    assert result.current == ["b1", "c1"]
    assert result.pending == ["d1"] and result.drift == []


def test_heads_of_independent_labelled_branches_are_named_by_label(tmp_path):
    write_revision(tmp_path, "a1", None, branch_labels="core")
    write_revision(tmp_path, "a2", "a1")
    write_revision(tmp_path, "n1", None, branch_labels="networking", depends_on="a1")
    assert history(read_scripts(tmp_path), ["n1"]).drift == [
        "2 heads, one per branch label: networking at n1, core at a2. Alembic runs them all "
        "with upgrade heads, but a rehearsal needs a single head: merge them (alembic merge heads)"
    ]
    write_revision(tmp_path, "a3", "a1")  # a second head on core: plain drift
    assert history(read_scripts(tmp_path), []).drift[0].startswith("3 heads: ")


def test_a_current_revision_below_another_current_one_is_drift(tmp_path):
    linear(tmp_path, "0001", "0002")
    result = history(read_scripts(tmp_path), ["0002", "0001"])
    assert result.drift == [
        "alembic_version lists both '0001' and '0002', but '0001' is an ancestor of '0002'"
    ]


def test_a_dependency_counts_as_applied_and_runs_first(tmp_path):
    write_revision(tmp_path, "a1", None, branch_labels="core")
    write_revision(tmp_path, "n1", None, branch_labels="networking")
    write_revision(tmp_path, "n2", "n1", depends_on="core")
    tree = read_scripts(tmp_path)
    assert tree.problems == []
    assert tree.revisions["n2"].dependencies == ("a1",)
    assert tree.ancestors("n2") == {"n1", "a1"}
    pending = history(tree, []).pending
    assert pending.index("a1") < pending.index("n2")
    assert history(tree, ["n2"]).pending == []


def test_the_json_holds_everything_a_page_needs(tmp_path):
    write_revision(tmp_path, "a1", None, "base", branch_labels="core")
    write_revision(tmp_path, "b1", "a1", "left", downgrade=False)
    write_revision(tmp_path, "c1", "a1", "right")
    write_revision(tmp_path, "d1", ("b1", "c1"), "merge")
    data = json.loads(json.dumps(history(read_scripts(tmp_path), ["b1"]).to_json()))
    assert data["current"] == ["b1"] and data["heads"] == ["d1"]
    assert data["pending"] == ["c1", "d1"] and data["drift"] == [] and data["problems"] == []
    assert [r["id"] for r in data["revisions"]] == ["d1", "b1", "c1", "a1"]
    d1, b1, c1, a1 = data["revisions"]
    assert d1 == {
        "id": "d1",
        "message": "merge",
        "down_revisions": ["b1", "c1"],
        "parents": ["b1", "c1"],
        "children": [],
        "branch_labels": [],
        "depends_on": [],
        "is_head": True,
        "is_base": False,
        "is_current": False,
        "is_applied": False,
        "is_pending": True,
        "is_merge": True,
        "is_branch_point": False,
        "has_downgrade": True,
        "file": "versions/d1_merge.py",
        "lane": 0,
        "width": 2,
        "incoming": [],
        "passing": [],
        "edges": [{"parent": "b1", "lane": 0}, {"parent": "c1", "lane": 1}],
        "depends": [],
        "shown_file": "versions/d1_merge.py",
        "file_name": "d1_merge.py",
        "folder": "versions",
    }
    assert data["version_locations"] == ["versions"] and data["recursive"] is False
    assert data["versions_named_in"] is None
    assert b1["is_current"] and b1["is_applied"] and not b1["has_downgrade"]
    assert a1["branch_labels"] == ["core"] and a1["is_branch_point"] and a1["is_applied"]
    assert c1["is_pending"] and c1["lane"] == 1


# --- Running Alembic ---


def test_render_sql_prints_the_upgrade_offline(tmp_path):
    linear(tmp_path, "0001", "0002", "0003")
    sql = render_sql(tmp_path, "0001", "0003")
    assert "CREATE TABLE t_0002" in sql and "CREATE TABLE t_0003" in sql
    assert "CREATE TABLE t_0001" not in sql
    assert "UPDATE alembic_version SET version_num='0003'" in sql


def test_render_sql_from_the_base(tmp_path):
    linear(tmp_path, "0001")
    sql = render_sql(tmp_path, None, "head")
    assert "CREATE TABLE alembic_version" in sql and "CREATE TABLE t_0001" in sql


def test_render_sql_refuses_a_folder_that_is_not_a_project(tmp_path):
    with pytest.raises(NotAnAlembicProject):
        render_sql(tmp_path, None, "head")


def test_upgrade_downgrade_and_stamp_drive_a_real_database(tmp_path):
    project = linear(tmp_path / "project", "0001", "0002")
    url = f"sqlite:///{tmp_path / 'app.db'}"

    def state() -> tuple[list[str], set[str]]:
        with sqlite3.connect(tmp_path / "app.db") as conn:
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            versions = [r[0] for r in conn.execute("SELECT version_num FROM alembic_version")]
        return versions, tables - {"alembic_version"}

    upgrade(project, url, "head")
    assert state() == (["0002"], {"t_0001", "t_0002"})
    downgrade(project, url, "0001")
    assert state() == (["0001"], {"t_0001"})
    stamp(project, url, "0002")
    assert state() == (["0002"], {"t_0001"})


def test_a_failing_command_never_shows_the_password(tmp_path):
    project = linear(tmp_path, "0001")
    with pytest.raises(AlembicError) as caught:
        upgrade(project, "fail://runway:s3cr%40t@db.example/app", "head")
    message = str(caught.value)
    assert "cannot connect to" in message
    assert "s3cr" not in message and "runway:" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_postgresql_urls_get_the_psycopg_driver():
    assert psycopg_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert psycopg_url("postgres://h/db") == "postgresql+psycopg://h/db"
    assert psycopg_url("postgresql+psycopg2://h/db") == "postgresql+psycopg://h/db"
    assert psycopg_url("postgresql+psycopg://h/db") == "postgresql+psycopg://h/db"
    assert psycopg_url("sqlite:///x.db") == "sqlite:///x.db"


# --- The project's own migrations ---

TARGET = ROOT / "migrations_target"


def test_the_managed_projects_scripts_read_cleanly():
    tree = read_scripts(TARGET)
    assert tree.problems == []
    assert tree.heads == ("0020",) and tree.bases == ("0001",)
    assert list(tree.order) == [f"{i:04d}" for i in range(20, 0, -1)]
    assert history(tree, ["0016"]).pending == ["0017", "0018", "0019", "0020"]


def test_the_managed_projects_pending_sql_renders_offline():
    sql = render_sql(TARGET, "0016", "0020")
    assert "-- Running upgrade 0016 -> 0017" in sql
    assert "-- Running upgrade 0019 -> 0020" in sql
    assert "UPDATE alembic_version SET version_num='0020'" in sql
