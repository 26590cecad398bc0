"""manage.py lint_migrations: JSON and text reports, exit codes for CI, bad input. Without
--database the tests have no database access at all (pytest-django refuses any)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
