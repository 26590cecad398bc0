"""Linting SQL with squawk (PyPI ``squawk-cli``): the only module in Runway that runs it.

squawk reads the SQL on stdin (:func:`lint`), or one file per SQL text (:func:`lint_many`: one
process for a whole chain of revisions, each finding naming its ``file``), and prints its
findings as JSON (``--reporter json``). Its exit
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
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Batch", "SquawkError", "SquawkHit", "binary", "lint", "lint_many"]

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
    argv = [*_argv(pg_version), "--stdin-filepath", _STDIN_NAME]
    try:
        done = subprocess.run(
            argv, input=sql, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise SquawkError(f"squawk did not finish within {timeout:g} s.") from None
    except OSError as exc:
        raise SquawkError(f"squawk cannot be started: {exc.strerror or exc}") from None
    return [_hit(item) for item in _report(done.returncode, done.stdout, done.stderr)]


def lint_many(
    sqls: Mapping[str, str], *, pg_version: str | None = None, timeout: float = 60
) -> dict[str, list[SquawkHit]]:
    """squawk's findings on each of ``sqls`` (name -> SQL) from one squawk process, by name:
    what :func:`lint` finds on each. Raises :class:`SquawkError` as :func:`lint` does."""
    batch = Batch(sqls, pg_version=pg_version, timeout=timeout)
    hits = batch.result()
    if batch.failed:
        raise next(iter(batch.failed.values()))
    return hits


class Batch:
    """One squawk process over several SQL texts, each written to a file of its own in a
    temporary folder (squawk names each finding's file). It starts on creation, so the caller
    can do other work while squawk runs; :meth:`result` waits for it.

    A report squawk cannot give for the whole batch (it crashed on one of the files) is asked
    for again one text at a time, so one bad text costs only its own findings: it is named in
    :attr:`failed`. Raises :class:`SquawkError` when squawk cannot run at all or times out."""

    def __init__(
        self, sqls: Mapping[str, str], *, pg_version: str | None = None, timeout: float = 60
    ) -> None:
        self.failed: dict[str, SquawkError] = {}
        self._sqls = dict(sqls)
        self._pg_version = pg_version
        self._timeout = timeout + 0.05 * len(self._sqls)
        argv = _argv(pg_version)  # a bad version or a missing binary raises here
        self._files: dict[str, str] = {}  # file name -> name
        self._proc: subprocess.Popen[str] | None = None
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        texts = {name: sql for name, sql in self._sqls.items() if sql.strip()}
        if not texts:
            return
        self._folder = tempfile.TemporaryDirectory(prefix="runway-squawk-")
        try:
            for number, (name, sql) in enumerate(texts.items()):
                file = f"{number}.sql"
                Path(self._folder.name, file).write_text(sql, encoding="utf-8")
                self._files[file] = name
            self._proc = subprocess.Popen(
                [*argv, *self._files],
                cwd=self._folder.name,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        except OSError as exc:
            self._folder.cleanup()
            raise SquawkError(f"squawk cannot be started: {exc.strerror or exc}") from None

    def result(self) -> dict[str, list[SquawkHit]]:
        hits: dict[str, list[SquawkHit]] = {name: [] for name in self._sqls}
        if self._proc is None or self._folder is None:
            return hits
        try:
            try:
                out, err = self._proc.communicate(timeout=self._timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.communicate()
                raise SquawkError(f"squawk did not finish within {self._timeout:g} s.") from None
            try:
                for item in _report(self._proc.returncode, out, err):
                    hits[self._files[str(item["file"])]].append(_hit(item))
            except (SquawkError, KeyError, TypeError):
                return self._one_by_one()
            return hits
        finally:
            self._folder.cleanup()

    def _one_by_one(self) -> dict[str, list[SquawkHit]]:
        hits: dict[str, list[SquawkHit]] = {}
        for name, sql in self._sqls.items():
            try:
                hits[name] = lint(sql, pg_version=self._pg_version, timeout=self._timeout)
            except SquawkError as exc:
                hits[name] = []
                self.failed[name] = exc
        return hits


def _argv(pg_version: str | None) -> list[str]:
    argv = [binary(), "--reporter", "json", "-c", "/dev/null"]
    if pg_version is not None:
        version = str(pg_version).strip()
        if not _PG_VERSION.match(version):
            raise SquawkError(
                f"{pg_version!r} is not a PostgreSQL version squawk understands (e.g. 15 or 15.4)."
            )
        argv += ["--pg-version", version]
    return argv


def _report(returncode: int, stdout: str, stderr: str) -> list[dict[str, Any]]:
    """squawk's JSON report: a list of findings; SquawkError when it is not one."""
    if returncode not in (0, 1):
        raise SquawkError(f"squawk failed (exit {returncode}): {_summary(stderr)}")
    try:
        report = json.loads(stdout)
    except json.JSONDecodeError:
        raise SquawkError(
            f"squawk printed no JSON report (exit {returncode}): {_summary(stderr or stdout)}"
        ) from None
    if not isinstance(report, list) or not all(isinstance(item, dict) for item in report):
        raise SquawkError("squawk's JSON report is not a list of findings.")
    return report


def _hit(item: dict[str, Any]) -> SquawkHit:
    try:
        return SquawkHit(
            rule=str(item["rule_name"]),
            level=str(item.get("level") or ""),
            line=int(item.get("line") or 0),
            column=int(item.get("column") or 0),
            message=str(item.get("message") or ""),
            help=str(item.get("help") or ""),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SquawkError(f"squawk's JSON report has an unexpected shape: {exc!r}") from None


def _summary(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines[:3])[:500] or "no output"
