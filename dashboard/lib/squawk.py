"""Linting SQL with squawk (PyPI ``squawk-cli``): the only module in Runway that runs it.

squawk reads the SQL on stdin and prints its findings as JSON (``--reporter json``). Its exit
code says only "something was found" (1 covers findings, syntax errors and missing files
alike), so the result is read from the JSON, never from the exit code. No configuration file
is read: ``-c /dev/null`` keeps a stray ``.squawk.toml`` in some parent folder from changing the
rules, so a revision lints the same everywhere.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SquawkError", "SquawkHit", "binary", "lint"]

_PG_VERSION = re.compile(r"^\d{1,2}(\.\d{1,2})?$")
_STDIN_NAME = "revision.sql"


class SquawkError(RuntimeError):
    """squawk is missing, crashed, or printed something that is not its JSON report."""


@dataclass(frozen=True)
class SquawkHit:
    """One squawk finding. ``line`` and ``column`` are 0-based, as squawk reports them."""

    rule: str
    level: str  # "Warning" or "Error", as squawk says
    line: int
    column: int
    message: str
    help: str


def binary() -> str:
    """The squawk executable: the one installed next to this Python first, then ``PATH``."""
    beside = Path(sys.executable).parent / "squawk"
    if beside.is_file():
        return str(beside)
    found = shutil.which("squawk")
    if found:
        return found
    raise SquawkError("squawk is not installed: pip install squawk-cli (or uv sync).")


def lint(sql: str, *, pg_version: str | None = None, timeout: float = 60) -> list[SquawkHit]:
    """squawk's findings on ``sql``, in the order it reports them.

    ``pg_version`` is the server's version as squawk takes it: a major ("15") or
    major.minor ("15.4"). Raises :class:`SquawkError` when squawk cannot run or its output
    is not a JSON report.
    """
    if not sql.strip():
        return []
    argv = [binary(), "--reporter", "json", "--stdin-filepath", _STDIN_NAME, "-c", "/dev/null"]
    if pg_version is not None:
        version = str(pg_version).strip()
        if not _PG_VERSION.match(version):
            raise SquawkError(
                f"{pg_version!r} is not a PostgreSQL version squawk understands (e.g. 15 or 15.4)."
            )
        argv += ["--pg-version", version]
    try:
        done = subprocess.run(
            argv, input=sql, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise SquawkError(f"squawk did not finish within {timeout:g} s.") from None
    except OSError as exc:
        raise SquawkError(f"squawk cannot be started: {exc.strerror or exc}") from None
    if done.returncode not in (0, 1):
        raise SquawkError(f"squawk failed (exit {done.returncode}): {_summary(done.stderr)}")
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise SquawkError(
            f"squawk printed no JSON report (exit {done.returncode}): "
            f"{_summary(done.stderr or done.stdout)}"
        ) from None
    if not isinstance(report, list):
        raise SquawkError("squawk's JSON report is not a list of findings.")
    try:
        return [_hit(item) for item in report]
    except (KeyError, TypeError, ValueError) as exc:
        raise SquawkError(f"squawk's JSON report has an unexpected shape: {exc!r}") from None


def _hit(item: dict[str, object]) -> SquawkHit:
    return SquawkHit(
        rule=str(item["rule_name"]),
        level=str(item.get("level") or ""),
        line=int(item.get("line") or 0),  # type: ignore[call-overload]
        column=int(item.get("column") or 0),  # type: ignore[call-overload]
        message=str(item.get("message") or ""),
        help=str(item.get("help") or ""),
    )


def _summary(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines[:3])[:500] or "no output"
