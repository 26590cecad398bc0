"""dashboard.lib.squawk: the real squawk binary from the venv, its JSON read back."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dashboard.lib import squawk

SQL = "BEGIN;\n-- a comment\nCREATE INDEX ix_users_email ON users (email);\nCOMMIT;\n"


def test_it_runs_the_squawk_installed_next_to_python() -> None:
    assert squawk.binary() == str(Path(sys.executable).parent / "squawk")


def test_it_reports_rules_with_zero_based_lines() -> None:
    hits = squawk.lint(SQL)

    index = next(h for h in hits if h.rule == "require-concurrent-index-creation")
    assert index.line == 2
    assert index.column == 0
    assert index.level == "Warning"
    assert "concurrently" in index.help.lower()


def test_it_returns_nothing_for_safe_or_empty_sql() -> None:
    assert squawk.lint("SELECT 1;") == []
    assert squawk.lint("  \n") == []


def test_it_passes_the_server_version() -> None:
    sql = "ALTER TABLE users ADD COLUMN flag boolean DEFAULT false;"

    old = {h.rule for h in squawk.lint(sql, pg_version="10")}
    new = {h.rule for h in squawk.lint(sql, pg_version="15")}

    assert "adding-field-with-default" in old
    assert "adding-field-with-default" not in new


def test_it_reports_a_syntax_error_as_a_hit() -> None:
    hits = squawk.lint("SELECT FROM WHERE;")

    assert {h.rule for h in hits} == {"syntax-error"}
    assert {h.level for h in hits} == {"Error"}


def test_it_refuses_a_version_squawk_cannot_read() -> None:
    with pytest.raises(squawk.SquawkError, match="not a PostgreSQL version"):
        squawk.lint("SELECT 1;", pg_version="fifteen")


def test_it_says_so_when_squawk_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(squawk.SquawkError, match="pip install squawk-cli"):
        squawk.lint("SELECT 1;")


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("echo 'thread main panicked' >&2; exit 101", "exit 101.*panicked"),
        ("echo 'not json'; exit 1", "no JSON report"),
        ("echo '{\"a\": 1}'", "not a list"),
    ],
)
def test_it_raises_when_squawk_crashes_or_prints_garbage(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, script: str, message: str
) -> None:
    fake = tmp_path / "squawk"
    fake.write_text(f"#!/bin/sh\ncat >/dev/null\n{script}\n")
    fake.chmod(0o755)
    monkeypatch.setattr(squawk, "binary", lambda: str(fake))

    with pytest.raises(squawk.SquawkError, match=message):
        squawk.lint("SELECT 1;")
