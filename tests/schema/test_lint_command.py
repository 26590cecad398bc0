"""manage.py lint_migrations: JSON, text, SARIF and GitHub reports, exit codes for CI, the
selection of revisions (by id, by what git says changed), bad input. Without --database the
tests have no database access at all (pytest-django refuses any). Projects and git repositories
are built in tmp_path."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from io import StringIO
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.core.management import CommandError, call_command
from helpers import ROOT, TARGET_PASSWORD, make_database

TARGET = str(ROOT / "migrations_target")


def lint(*args: str) -> tuple[int, str]:
    """(exit status, stdout) of the command run in-process."""
    out = StringIO()
    try:
        call_command("lint_migrations", *args, stdout=out, stderr=StringIO())
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue()
    return 0, out.getvalue()


def lint_streams(*args: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of the command run in-process."""
    out, err = StringIO(), StringIO()
    try:
        call_command("lint_migrations", *args, stdout=out, stderr=err)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


def write(
    folder: Path, rev: str, down: str | None, upgrade: str, *, labels: str | None = None
) -> Path:
    """A revision whose upgrade() body is ``upgrade``."""
    (folder / "versions").mkdir(parents=True, exist_ok=True)
    (folder / "env.py").write_text("from alembic import context\n")
    path = folder / "versions" / f"{rev}_step.py"
    path.write_text(
        f'"""step {rev}"""\n'
        "import sqlalchemy as sa\nfrom alembic import op\n\n"
        f"revision = {rev!r}\ndown_revision = {down!r}\n"
        f"branch_labels = {(labels,) if labels else None!r}\ndepends_on = None\n\n\n"
        "def upgrade():\n" + textwrap.indent(textwrap.dedent(upgrade).strip(), "    ") + "\n\n\n"
        "def downgrade():\n    pass\n"
    )
    return path


USERS = (
    'op.create_table("users", sa.Column("id", sa.BigInteger, primary_key=True), '
    'sa.Column("email", sa.Text))'
)
INDEX = 'op.create_index("ix_users_email", "users", ["email"])'


def call_line(path: Path, name: str) -> int:
    """The line of the ``op.<name>(...)`` call in the file's upgrade()."""
    module = ast.parse(path.read_text())
    upgrade = next(n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == "upgrade")
    return next(
        n.lineno
        for n in ast.walk(upgrade)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == name
    )


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
        + ["-c", "commit.gpgsign=false", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository whose Alembic project lives in db/migrations: main holds 0001-0003;
    the checked-out branch, feature, left main at that point."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    folder = root / "db" / "migrations"
    write(folder, "0001", None, USERS)
    write(folder, "0002", "0001", 'op.add_column("users", sa.Column("name", sa.Text))')
    write(folder, "0003", "0002", 'op.add_column("users", sa.Column("city", sa.Text))')
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "base")
    git(root, "checkout", "-q", "-b", "feature")
    return root


def check_sarif(log: dict[str, Any]) -> list[dict[str, Any]]:
    """The results of a SARIF 2.1.0 log with one run, once its structure is checked."""
    assert log["version"] == "2.1.0"
    assert log["$schema"].endswith("sarif-2.1.0.json")
    [run] = log["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "Runway"
    ids = [rule["id"] for rule in driver["rules"]]
    assert len(ids) == len(set(ids))
    for rule in driver["rules"]:
        assert rule["shortDescription"]["text"] and rule["help"]["text"]
    base = run["originalUriBaseIds"]["%SRCROOT%"]["uri"]
    assert base.startswith("file:///") and base.endswith("/")
    assert run["invocations"][0]["executionSuccessful"] is True
    for result in run["results"]:
        assert result["level"] in {"note", "warning", "error"}
        assert result["message"]["text"]
        assert driver["rules"][result["ruleIndex"]]["id"] == result["ruleId"]
        [location] = result["locations"]
        artifact = location["physicalLocation"]["artifactLocation"]
        assert artifact["uriBaseId"] == "%SRCROOT%"
        assert not artifact["uri"].startswith(("/", "file:"))
        assert location["physicalLocation"]["region"]["startLine"] >= 1
        for suppression in result.get("suppressions", []):
            assert suppression["kind"] in {"inSource", "external"}
            assert suppression["justification"]
    return run["results"]


def where(result: dict[str, Any]) -> tuple[str, int]:
    location = result["locations"][0]["physicalLocation"]
    return location["artifactLocation"]["uri"], location["region"]["startLine"]


def test_it_exits_1_with_a_json_list_when_a_revision_is_high() -> None:
    status, out = lint("--script-location", TARGET, "--from", "0016", "--format", "json")

    assert status == 1
    reports = json.loads(out)
    assert [r["revision"] for r in reports] == ["0017", "0018", "0019", "0020"]
    assert [r["grade"] for r in reports] == ["low", "low", "medium", "high"]
    finding = next(f for f in reports[3]["findings"] if f["severity"] == "high")
    assert {k: finding[k] for k in ("rule", "lock", "table")} == {
        "rule": "create-index-blocking",
        "lock": "SHARE",
        "table": "users",
    }
    for key in ("statement", "message", "safe_way", "severity"):
        assert finding[key]


def test_it_exits_0_when_nothing_is_high() -> None:
    status, out = lint(
        "--script-location", TARGET, "--from", "0016", "--to", "0019", "--format", "json"
    )

    assert status == 0
    assert [r["grade"] for r in json.loads(out)] == ["low", "low", "medium"]


def test_it_lints_the_whole_chain_from_the_base() -> None:
    status, out = lint("--script-location", TARGET, "--format", "json")

    reports = {r["revision"]: r for r in json.loads(out)}
    assert len(reports) == 20
    # Without a database each revision meets production at its parent: the seed's chain
    # indexes and constrains tables earlier revisions made, with no CONCURRENTLY, NOT VALID.
    assert status == 1
    assert all(reports[f"000{i}"]["grade"] == "low" for i in range(1, 7))  # creations
    assert {r for r, report in reports.items() if report["grade"] == "high"} == {
        "0007",
        "0011",
        "0012",
        "0013",
        "0015",
        "0016",
        "0020",
    }


def test_the_text_report_shows_grades_reasons_locks_and_safe_ways() -> None:
    status, out = lint("--script-location", TARGET, "--from", "0016")

    assert status == 1
    assert "4 revisions after 0016 (no database: table sizes unknown)" in out
    assert "0020  HIGH" in out
    assert (
        "[high] create-index-blocking (squawk: require-concurrent-index-creation) — users, SHARE"
        in out
    )
    assert "safe way: Build it with CONCURRENTLY" in out
    assert "0017  LOW" in out
    assert "notes: require-lock-timeout, require-statement-timeout" in out
    assert "1 high, 1 medium, 2 low" in out


def test_it_says_when_there_is_nothing_to_analyse() -> None:
    assert lint("--script-location", TARGET, "--from", "0020") == (
        0,
        "Nothing to analyse after 0020.\n",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--script-location", "/nonexistent/app"], "is not an Alembic project"),
        (["--script-location", str(ROOT / "dashboard")], "is not an Alembic project"),
        (["--script-location", TARGET, "--from", "9999"], "unknown revision '9999'"),
        (["--script-location", TARGET, "--to", "nope"], "unknown revision 'nope'"),
        (
            ["--script-location", TARGET, "--revision", "0020", "--revision", "nope,zz"],
            "unknown revisions 'nope', 'zz' in",
        ),
        (["--script-location", TARGET, "--revision", "0020", "--from", "0016"], "drop --from"),
        (["--script-location", TARGET, "--revision", " , "], "--revision needs a revision id"),
        (["--script-location", TARGET, "--revision", "base"], "unknown revision 'base' in"),
        (["--script-location", TARGET, "--changed-since", "main", "--to", "0019"], "drop --from"),
        (["--script-location", TARGET, "--changed-since=--output=x"], "cannot be empty or start"),
        (["--script-location", TARGET, "--changed-since", ""], "cannot be empty or start"),
        ([], "Give --script-location PATH"),
    ],
)
def test_bad_input_is_a_clear_error_with_nothing_on_stdout(args: list[str], message: str) -> None:
    out = StringIO()
    with pytest.raises(CommandError, match=message) as caught:
        call_command("lint_migrations", *args, stdout=out)

    assert caught.value.returncode == 2
    assert out.getvalue() == ""


@pytest.mark.parametrize(
    ("args", "status"),
    [
        (["--from", "0016"], 1),
        (["--from", "bogus"], 2),
    ],
)
def test_the_real_process_exits_with_the_status_ci_reads(args: list[str], status: int) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, "manage.py", "lint_migrations", "--script-location", TARGET, *args]
        + ["--format", "json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == status, done.stderr
    if status == 2:
        assert done.stdout == ""
        assert "unknown revision 'bogus'" in done.stderr
    else:
        assert isinstance(json.loads(done.stdout), list)


# --- With a registered database ---


@pytest.mark.django_db
def test_with_a_database_it_starts_at_its_revision_and_reads_live_sizes(
    make_target: Callable[..., str],
) -> None:
    make_database(dsn=make_target())

    status, out = lint("--database", "analyticbot", "--format", "json")

    reports = json.loads(out)
    assert [r["revision"] for r in reports] == ["0017", "0018", "0019", "0020"]
    index = reports[3]["findings"][0]
    assert index["rule"] == "create-index-blocking"
    assert index["table_size"].startswith("~200 rows, ")
    # 200 users: the SHARE lock is brief, so the revision is medium and the command passes.
    assert (reports[3]["grade"], index["severity"], status) == ("medium", "medium", 0)


@pytest.mark.django_db
def test_with_a_database_a_leads_acceptance_is_reported(
    make_target: Callable[..., str], lead: Any
) -> None:
    from dashboard.schema.models import RiskAcceptance

    db = make_database(dsn=make_target())
    RiskAcceptance.objects.create(
        database=db, revision="0019", rule="data-migration", comment="rehearsed", accepted_by=lead
    )

    _, out = lint("--database", "analyticbot", "--to", "0019", "--format", "json")

    backfill = json.loads(out)[-1]
    assert backfill["grade"] == "low"
    assert backfill["findings"][0]["accepted"] == {
        "by": "leo",
        "comment": "rehearsed",
        "source": "lead",
    }


@pytest.mark.django_db
def test_an_unknown_database_is_a_clear_error() -> None:
    make_database(name="billing")

    with pytest.raises(
        CommandError, match=r"No managed database named 'nope' \(registered: billing\)"
    ):
        call_command("lint_migrations", "--database", "nope", stdout=StringIO())


@pytest.mark.django_db
def test_an_unreachable_database_is_a_clear_error() -> None:
    make_database(dsn="host=127.0.0.1 port=1 dbname=analyticbot user=app_owner")

    with pytest.raises(CommandError, match="cannot be reached") as caught:
        call_command("lint_migrations", "--database", "analyticbot", stdout=StringIO())
    assert caught.value.returncode == 2
    assert TARGET_PASSWORD not in str(caught.value)


@pytest.mark.django_db
def test_a_database_at_a_revision_no_script_defines_is_a_clear_error(
    make_target: Callable[..., str],
) -> None:
    dsn = make_target()
    with psycopg.connect(f"{dsn} password={TARGET_PASSWORD}", autocommit=True) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'f00dface'")
    make_database(dsn=dsn)

    with pytest.raises(CommandError, match="is at f00dface, which no script"):
        call_command("lint_migrations", "--database", "analyticbot", stdout=StringIO())


@pytest.mark.django_db
def test_an_explicit_from_wins_over_the_databases_revision(
    make_target: Callable[..., str], tmp_path: Path
) -> None:
    make_database(dsn=make_target())

    _, out = lint("--database", "analyticbot", "--from", "0018", "--format", "json")

    assert [r["revision"] for r in json.loads(out)] == ["0019", "0020"]


# --- Selection: --revision ---


def test_a_selected_revision_is_judged_at_its_parent_knowing_what_earlier_ones_made(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "app"
    write(
        folder, "0001", None, USERS + '\nop.add_column("users", sa.Column("kind", sa.String(10)))'
    )
    write(
        folder,
        "0002",
        "0001",
        'op.alter_column("users", "kind", type_=sa.String(20))',
        labels="widen",
    )
    write(folder, "0003", "0002", INDEX)

    status, out = lint(
        "--script-location",
        str(folder),
        "--revision",
        "widen",
        "--revision",
        "0003",
        "--format",
        "json",
    )

    reports = {r["revision"]: r for r in json.loads(out)}
    assert list(reports) == ["0002", "0003"]
    # 0001's varchar(10) is known, so widening it needs no rewrite; and users, created by an
    # earlier revision, holds production's data: a blocking index on it is high.
    assert reports["0002"]["grade"] == "low"
    assert reports["0003"]["grade"] == "high"
    assert status == 1


def test_the_text_report_says_what_was_selected(tmp_path: Path) -> None:
    folder = tmp_path / "app"
    write(folder, "0001", None, USERS)

    status, out = lint("--script-location", str(folder), "--revision", "0001")

    assert status == 0
    assert out.startswith(
        "1 revision selected (0001), each as applied to production at its parent "
        "(no database: table sizes unknown)\n"
    )


# --- Selection: --changed-since ---


def test_changed_since_lints_the_branchs_commits_and_uncommitted_and_untracked_files(
    repo: Path,
) -> None:
    folder = repo / "db" / "migrations"
    write(folder, "0004", "0003", INDEX)
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "index")
    # main moves on after the branch left it: not this branch's change.
    git(repo, "checkout", "-q", "main")
    (folder / "versions" / "0002_step.py").write_text(
        (folder / "versions" / "0002_step.py").read_text() + "# reviewed\n"
    )
    git(repo, "commit", "-q", "-am", "main moves")
    git(repo, "checkout", "-q", "feature")
    (folder / "versions" / "0001_step.py").write_text(
        (folder / "versions" / "0001_step.py").read_text() + "# touched\n"
    )  # modified, not staged
    write(folder, "0005", "0004", 'op.add_column("users", sa.Column("zip", sa.Text))')  # untracked
    (repo / "notes.txt").write_text("not a revision\n")

    status, out = lint(
        "--script-location", str(folder), "--changed-since", "main", "--format", "json"
    )

    assert [r["revision"] for r in json.loads(out)] == ["0001", "0004", "0005"]
    assert status == 1  # 0004 indexes users, which 0001 created: high


@pytest.mark.parametrize(
    ("fmt", "stdout", "stderr"),
    [
        ("text", "No revision file changed since main.\n", ""),
        ("github", "No revision file changed since main.\n", ""),
        ("json", "[]\n", "No revision file changed since main.\n"),
    ],
)
def test_when_no_revision_changed_it_says_so_and_exits_0(
    repo: Path, fmt: str, stdout: str, stderr: str
) -> None:
    (repo / "README").write_text("docs only\n")

    assert lint_streams(
        "--script-location",
        str(repo / "db" / "migrations"),
        "--changed-since",
        "main",
        "--format",
        fmt,
    ) == (0, stdout, stderr)


def test_when_no_revision_changed_sarif_is_a_valid_empty_log(repo: Path) -> None:
    status, out, err = lint_streams(
        "--script-location",
        str(repo / "db" / "migrations"),
        "--changed-since",
        "main",
        "--format",
        "sarif",
    )

    assert (status, err) == (0, "No revision file changed since main.\n")
    assert check_sarif(json.loads(out)) == []


def test_an_unknown_ref_is_a_clear_error(repo: Path) -> None:
    out = StringIO()
    with pytest.raises(
        CommandError, match="'origin/nope': no such commit in .*fetch-depth: 0"
    ) as caught:
        call_command(
            "lint_migrations",
            "--script-location",
            str(repo / "db" / "migrations"),
            "--changed-since",
            "origin/nope",
            stdout=out,
        )

    assert caught.value.returncode == 2
    assert out.getvalue() == ""


def test_a_project_outside_git_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "app"
    write(folder, "0001", None, USERS)

    with pytest.raises(CommandError, match="is not in a git repository") as caught:
        call_command(
            "lint_migrations",
            "--script-location",
            str(folder),
            "--changed-since",
            "main",
            stdout=StringIO(),
        )
    assert caught.value.returncode == 2


def test_without_git_it_is_a_clear_error(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))

    with pytest.raises(CommandError, match="git is not installed") as caught:
        call_command(
            "lint_migrations",
            "--script-location",
            str(repo / "db" / "migrations"),
            "--changed-since",
            "main",
            stdout=StringIO(),
        )
    assert caught.value.returncode == 2


# --- SARIF and GitHub annotations ---


def test_sarif_points_the_demo_projects_index_at_its_op_call() -> None:
    status, out, _ = lint_streams(
        "--script-location", TARGET, "--revision", "0020", "--format", "sarif"
    )

    results = check_sarif(json.loads(out))
    path = next((ROOT / "migrations_target" / "versions").glob("0020_*.py"))
    index = next(r for r in results if r["ruleId"] == "create-index-blocking")
    assert index["level"] == "error"
    # Relative to the repository's root (this checkout).
    assert where(index) == (
        f"migrations_target/versions/{path.name}",
        call_line(path, "create_index"),
    )
    assert {r["properties"]["revision"] for r in results} == {"0020"}
    assert {r["level"] for r in results if r["ruleId"] != "create-index-blocking"} == {"note"}
    assert status == 1


@pytest.fixture
def graded(tmp_path: Path) -> Path:
    """A project outside git: an accepted index, one that reads the database, a plain index."""
    folder = tmp_path / "app"
    write(folder, "0001", None, USERS)
    write(
        folder,
        "0002",
        "0001",
        "# runway: accept create-index-blocking -- built off-hours, 50 rows\n" + INDEX,
    )
    write(
        folder,
        "0003",
        "0002",
        'count = op.get_bind().execute(sa.text("SELECT count(*) FROM users")).scalar()\n'
        "print(count)",
    )
    write(folder, "0004", "0003", 'op.create_index("ix_users_id_email", "users", ["id", "email"])')
    return folder


def test_sarif_grades_levels_suppresses_acceptances_and_reports_what_cannot_render(
    graded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # outside git, paths are relative to the current directory

    status, out, _ = lint_streams("--script-location", str(graded), "--format", "sarif")

    results = check_sarif(json.loads(out))
    assert json.loads(out)["runs"][0]["originalUriBaseIds"]["%SRCROOT%"]["uri"] == (
        tmp_path.resolve().as_uri() + "/"
    )
    graded_ones = {
        (r["properties"]["revision"], r["ruleId"]): r for r in results if r["level"] != "note"
    }
    assert sorted(graded_ones) == [
        ("0002", "create-index-blocking"),
        ("0003", "not-previewable"),
        ("0004", "create-index-blocking"),
    ]
    accepted = graded_ones["0002", "create-index-blocking"]
    assert accepted["level"] == "error"
    assert accepted["suppressions"] == [
        {
            "kind": "inSource",
            "status": "accepted",
            "justification": "built off-hours, 50 rows",
            "properties": {"by": "comment in versions/0002_step.py (line 12)"},
        }
    ]
    assert where(accepted) == (
        "app/versions/0002_step.py",
        call_line(graded / "versions" / "0002_step.py", "create_index"),
    )
    unrendered = graded_ones["0003", "not-previewable"]
    assert unrendered["level"] == "warning"
    assert where(unrendered) == (
        "app/versions/0003_step.py",
        call_line(graded / "versions" / "0003_step.py", "get_bind"),
    )
    assert "suppressions" not in graded_ones["0004", "create-index-blocking"]
    assert status == 1


def test_github_annotations_point_at_files_from_the_repository_root(repo: Path) -> None:
    folder = repo / "db" / "migrations"
    write(
        folder,
        "0004",
        "0003",
        "# runway: accept create-index-blocking -- built off-hours\n" + INDEX,
    )
    write(folder, "0005", "0004", 'op.create_index("ix_users_name", "users", ["name"])')

    status, out, err = lint_streams(
        "--script-location", str(folder), "--changed-since", "main", "--format", "github"
    )

    lines = out.splitlines()
    accepted = call_line(folder / "versions" / "0004_step.py", "create_index")
    line = call_line(folder / "versions" / "0005_step.py", "create_index")
    assert lines[0].startswith(
        f"::notice file=db/migrations/versions/0004_step.py,line={accepted},"
        "title=create-index-blocking (accepted)::0004: high create-index-blocking, accepted by "
    )
    assert lines[1].startswith(
        f"::error file=db/migrations/versions/0005_step.py,line={line},"
        "title=create-index-blocking::0005 (high): CREATE INDEX without CONCURRENTLY"
    )
    assert "%0ASafe way: Build it with CONCURRENTLY" in lines[1]
    assert lines[2:] == ["Runway: 2 revisions: 1 high, 0 medium, 1 low"]
    assert (status, err) == (1, "")


def test_github_format_turns_script_folder_problems_into_warnings_on_stderr(repo: Path) -> None:
    folder = repo / "db" / "migrations"
    (folder / "versions" / "0009_broken.py").write_text("revision = (\n")

    status, out, err = lint_streams(
        "--script-location", str(folder), "--changed-since", "main", "--format", "github"
    )

    assert (status, out) == (0, "No revision file changed since main.\n")
    assert err.startswith(
        "::warning title=Alembic scripts,file=db/migrations/versions/0009_broken.py"
        "::0009_broken.py: syntax error"
    )


def test_the_real_process_writes_sarif_to_stdout_and_warnings_to_stderr(repo: Path) -> None:
    folder = repo / "db" / "migrations"
    write(folder, "0004", "0003", INDEX)
    (folder / "versions" / "0009_broken.py").write_text("revision = (\n")
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}

    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "manage.py"),
            "lint_migrations",
            "--script-location",
            "db/migrations",
        ]
        + ["--changed-since", "main", "--format", "sarif"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 1, done.stderr
    results = check_sarif(json.loads(done.stdout))
    index = next(r for r in results if r["ruleId"] == "create-index-blocking")
    assert where(index) == (
        "db/migrations/versions/0004_step.py",
        call_line(folder / "versions" / "0004_step.py", "create_index"),
    )
    assert done.stderr.startswith("warning: 0009_broken.py: syntax error")


def test_the_text_report_says_what_env_py_imports_and_sets_without_running_it(tmp_path) -> None:
    folder = tmp_path / "app"
    (folder / "versions").mkdir(parents=True)
    (folder / "env.py").write_text(
        "from alembic import context\nfrom app.db import metadata\n"
        "connectable.execute(\"SET lock_timeout = '5s'\")\n"
        "raise SystemExit('env.py must never run')\n"
    )
    (folder / "versions" / "0001_a.py").write_text(
        "import sqlalchemy as sa\nfrom alembic import op\nrevision = '0001'\n"
        "down_revision = None\n\ndef upgrade():\n"
        "    op.create_table('t', sa.Column('id', sa.Integer))\n"
    )
    status, out = lint("--script-location", folder)

    assert status == 0
    assert "env.py imports app.db (not run" in out
    assert "env.py sets lock_timeout=5s on its connections" in out
