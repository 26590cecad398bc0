"""What a revision's stored analysis is keyed by. Pure: no Django, no database.

A revision's analysis (:func:`.risk.analyse` before live table sizes and acceptances are
applied: they change on their own and are cheap to apply again) depends on, and so is keyed by:

- the bytes of its file, and the file's path in the project;
- what the analysis carries into it from earlier revisions of the analysed range (column types,
  checks, indexes, the tables those revisions created): the keys of its parents and
  dependencies in the range, so that a change anywhere above changes every key below it, as in a
  hash chain;
- whether it is analysed as pending on a database (the new-table relief);
- the server's major version (some rules and squawk's depend on it);
- the project around it: its ``env.py`` (the plugins it loads) and where it is (whether a module
  a revision imports is the application's own);
- Runway's version (:func:`runway_version`): a hash of the source of the renderer, the rules,
  squawk's wrapper and the grading, of every package installed beside Runway (Alembic,
  SQLAlchemy, pglast, squawk-cli, the plugins, by name and version) and of Python's version. A
  rule that changes can never serve a grade the old rule gave.

Never the SQL text: rendering the same file can order what it emits differently (index order)
while meaning the same, and the SQL is what is being analysed, not what it depends on.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from dashboard.lib import alembic
from dashboard.schema import rules

__all__ = ["Keyed", "revision_keys", "runway_version", "schema_from_json", "schema_to_json"]

_DASHBOARD = Path(__file__).resolve().parent.parent
# The source of everything that turns a revision file into findings.
_SOURCES = (
    "lib/alembic/*.py",
    "lib/squawk.py",
    "schema/rules/*.py",
    "schema/risk.py",
    "schema/risk_cache.py",
)
_LAYOUT = "1"  # the key's own layout; bump when what goes into a key changes shape


@dataclass(frozen=True)
class Keyed:
    """A revision's cache key, and its file's text (read once: inline acceptances are in it)."""

    key: str
    text: str


@cache
def runway_version() -> str:
    """A hash of the code and the packages an analysis comes from (see the module's docstring).
    Read once per process: it changes only when Runway is deployed again."""
    digest = hashlib.sha256(f"runway-analysis {_LAYOUT} {sys.version}\n".encode())
    for pattern in _SOURCES:
        for path in sorted(_DASHBOARD.glob(pattern)):
            digest.update(f"{path.relative_to(_DASHBOARD)}\n".encode())
            digest.update(path.read_bytes())
    for name in sorted(_installed()):
        digest.update(f"{name}\n".encode())
    return digest.hexdigest()


def _installed() -> set[str]:
    """Every installed distribution as its metadata folder's name (``name-version.dist-info``):
    a listing, far quicker than reading each one's metadata."""
    found: set[str] = set()
    for key in ("purelib", "platlib"):
        folder = Path(sysconfig.get_paths()[key])
        try:
            found |= {p.name for p in folder.iterdir() if p.name.endswith(".dist-info")}
        except OSError:
            continue
    return found


def _project_key(location: Path) -> str:
    try:
        env_py = (location / "env.py").read_bytes()
    except OSError:
        env_py = b""
    digest = hashlib.sha256(str(location.resolve()).encode() + b"\n")
    digest.update(env_py)
    return digest.hexdigest()


def revision_keys(
    tree: alembic.ScriptTree,
    revisions: Sequence[alembic.Revision],
    *,
    pg_major: int | None,
    pending: bool,
) -> dict[str, Keyed]:
    """Each revision's key, by id, for analysing ``revisions`` in this order (oldest first):
    as :func:`.risk.analyse` does, a parent counts only when it comes earlier in the list."""
    location = Path(tree.location)
    folder = str(location)
    common = [runway_version(), _project_key(location), pg_major, pending]
    keys: dict[str, Keyed] = {}
    for rev in revisions:
        try:  # os.path, not pathlib: this runs for every revision of every page view
            with open(os.path.join(folder, rev.path), "rb") as file:
                data = file.read()
        except OSError:
            data = b""
        carried = [keys[p].key for p in (*rev.parents, *rev.dependencies) if p in keys]
        material = json.dumps([*common, rev.id, rev.path, carried], separators=(",", ":"))
        digest = hashlib.sha256(material.encode())
        digest.update(b"\n")
        digest.update(data)
        keys[rev.id] = Keyed(digest.hexdigest(), data.decode("utf-8", errors="replace"))
    return keys


# --- The schema facts carried from a revision to its children, as JSON ---


def schema_to_json(schema: rules.Schema) -> dict[str, Any]:
    return {
        "new_tables": dict(schema.new_tables),
        "columns": {
            table: {column: [base, list(mods)] for column, (base, mods) in cols.items()}
            for table, cols in schema.columns.items()
        },
        "indexes": dict(schema.indexes),
        "checks": {name: list(check) for name, check in schema.checks.items()},
    }


def schema_from_json(data: dict[str, Any]) -> rules.Schema:
    return rules.Schema(
        new_tables=dict(data.get("new_tables", {})),
        columns={
            table: {column: (str(t[0]), tuple(int(m) for m in t[1])) for column, t in cols.items()}
            for table, cols in data.get("columns", {}).items()
        },
        indexes=dict(data.get("indexes", {})),
        checks={
            name: (str(c[0]), str(c[1]), bool(c[2])) for name, c in data.get("checks", {}).items()
        },
    )
