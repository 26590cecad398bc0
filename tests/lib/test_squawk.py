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


# --- One squawk process over many texts ---

TEXTS = {
    "index": SQL,
    "default": "ALTER TABLE users ADD COLUMN flag boolean DEFAULT false;",
    "empty": "  \n",
    "broken": "SELECT FROM WHERE;",
    "type": "BEGIN;\nALTER TABLE users ALTER COLUMN email TYPE text;\nCOMMIT;\n",
    "safe": "SELECT 1;",
}


def counting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """squawk behind a wrapper that logs each start; the log's path."""
    log = tmp_path / "starts.log"
    real = squawk.binary()
    wrapper = tmp_path / "squawk"
    wrapper.write_text(f'#!/bin/sh\necho start >> {log}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setattr(squawk, "binary", lambda: str(wrapper))
    return log


def test_lint_many_finds_what_lint_finds_on_each_text_in_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_by_one = {name: squawk.lint(sql, pg_version="15") for name, sql in TEXTS.items()}
    log = counting(tmp_path, monkeypatch)

    together = squawk.lint_many(TEXTS, pg_version="15")

    assert together == one_by_one
    assert log.read_text().count("start") == 1
    assert together["empty"] == [] and together["safe"] == []
    assert {h.rule for h in together["broken"]} == {"syntax-error"}


def test_lint_many_of_the_demo_chain_matches_each_revision_linted_alone() -> None:
    from dashboard.lib import alembic

    tree = alembic.read_scripts(Path(__file__).resolve().parents[2] / "migrations_target")
    rendered, _ = alembic.render_offline(tree, [tree.revisions[r] for r in tree.oldest_first()])
    sqls = {rid: r.upgrade.sql for rid, r in rendered.items()}

    assert squawk.lint_many(sqls) == {rid: squawk.lint(sql) for rid, sql in sqls.items()}


def test_a_batch_runs_while_the_caller_works_and_starts_nothing_for_blank_texts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = counting(tmp_path, monkeypatch)

    batch = squawk.Batch({"a": SQL, "b": "SELECT 1;"})
    hits = batch.result()
    blank = squawk.Batch({"a": "", "b": " \n"}).result()

    assert [h.rule for h in hits["a"]][0] == "require-concurrent-index-creation"
    assert hits["b"] == [] and not batch.failed
    assert blank == {"a": [], "b": []}
    assert log.read_text().count("start") == 1


def test_a_batch_squawk_cannot_report_is_linted_one_text_at_a_time(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A squawk that panics over several files, and on one text of its own.
    fake = tmp_path / "squawk"
    fake.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do case "$a" in [0-9]*.sql) echo "panicked" >&2; exit 101;; esac; done\n'
        'if grep -q BAD; then echo "panicked at BAD" >&2; exit 101; fi\n'
        "echo '[]'\n"
    )
    fake.chmod(0o755)
    monkeypatch.setattr(squawk, "binary", lambda: str(fake))

    batch = squawk.Batch({"good": "SELECT 1;", "bad": "SELECT 'BAD';"})

    assert batch.result() == {"good": [], "bad": []}
    assert list(batch.failed) == ["bad"]
    assert "panicked at BAD" in str(batch.failed["bad"])
    with pytest.raises(squawk.SquawkError, match="panicked at BAD"):
        squawk.lint_many({"good": "SELECT 1;", "bad": "SELECT 'BAD';"})


def test_a_batch_refuses_a_version_squawk_cannot_read() -> None:
    with pytest.raises(squawk.SquawkError, match="not a PostgreSQL version"):
        squawk.Batch({"a": "SELECT 1;"}, pg_version="fifteen")


def test_a_batch_leaves_no_files_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)

    squawk.lint_many(TEXTS)

    assert list(tmp_path.iterdir()) == []
