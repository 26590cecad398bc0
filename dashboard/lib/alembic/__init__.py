"""Everything Runway knows about Alembic: reading a script folder, its graph, running commands.

The only module in Runway that talks to Alembic. It imports no Django.

Reading (:func:`read_scripts`) never imports or executes a revision file: each file of each
version location (``versions/`` by default; see :mod:`.locations` for a project registered as
its ``alembic.ini``) is parsed with :mod:`ast`, so a broken file, a duplicate id, a missing
``down_revision`` or a cycle becomes a :class:`Problem` next to the usable revisions instead
of an exception (Alembic's own ``ScriptDirectory`` refuses the whole folder in those cases).

:func:`history` compares a :class:`ScriptTree` with the ``version_num`` rows of a database's
``alembic_version`` table: what is applied, what is pending (in the order it would run), what
looks like drift. Each row also carries a lane layout for drawing the graph, git-log style.

:func:`render_sql`, :func:`upgrade`, :func:`downgrade` and :func:`stamp` are thin wrappers
around ``alembic.command``. The database URL reaches the project's ``env.py`` both as
``-x url=...`` and as the ``sqlalchemy.url`` main option. URLs may hold a password: they are
never logged, and errors raised from here have them removed. Alembic keeps its migration
context in module globals: run at most one command per process at a time.
"""

from __future__ import annotations

import argparse
import ast
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

from dashboard.lib.alembic import render
from dashboard.lib.alembic.locations import (
    NotAnAlembicProject,
    ScriptConfig,
    check_config,
    read_config,
)
from dashboard.lib.alembic.revision_files import Failure

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "AlembicError",
    "Edge",
    "Failure",
    "History",
    "Lane",
    "NotAnAlembicProject",
    "Problem",
    "Revision",
    "Row",
    "ScriptConfig",
    "ScriptTree",
    "check_config",
    "check_project",
    "downgrade",
    "history",
    "read_config",
    "read_scripts",
    "render_offline",
    "render_sql",
    "stamp",
    "upgrade",
]

OFFLINE_URL = "postgresql+psycopg://offline@localhost/offline"
DRIVER = "postgresql+psycopg"


class AlembicError(RuntimeError):
    """An Alembic command failed. The message never contains the database URL or password."""


# --- The data ---


@dataclass(frozen=True)
class Problem:
    """Something wrong in the script folder. ``file`` is like :attr:`Revision.path`.

    Kinds: ``unreadable``, ``syntax_error``, ``no_revision``, ``bad_value`` (the file is
    skipped, or the value ignored), ``duplicate_revision`` (the later file is skipped),
    ``duplicate_label``, ``missing_down_revision`` (the revision is kept, as a base),
    ``missing_dependency``, ``cycle`` (the cycle is cut open).
    """

    kind: str
    file: str
    revision: str | None
    message: str

    def to_json(self) -> dict[str, str | None]:
        return {
            "kind": self.kind,
            "file": self.file,
            "revision": self.revision,
            "message": self.message,
        }


@dataclass
class Revision:
    """One revision script, as written in its file.

    ``down_revisions`` and ``depends_on`` are what the file says; ``parents`` and
    ``dependencies`` are the ids among them that exist (a missing one is a :class:`Problem`,
    and a ``down_revision`` that closes a cycle is dropped from ``parents``).
    """

    id: str
    down_revisions: tuple[str, ...]
    branch_labels: tuple[str, ...]
    depends_on: tuple[str, ...]
    message: str
    # Relative to the script location when the file is inside it (e.g.
    # "versions/0001_create_plans.py"), else absolute: ``tree.location / path`` is the file.
    path: str
    has_downgrade: bool
    parents: tuple[str, ...] = ()
    dependencies: tuple[str, ...] = ()
    children: tuple[str, ...] = ()

    @property
    def is_merge(self) -> bool:
        return len(self.down_revisions) > 1

    @property
    def is_branch_point(self) -> bool:
        return len(self.children) > 1

    @property
    def is_head(self) -> bool:
        return not self.children

    @property
    def is_base(self) -> bool:
        return not self.parents

    @property
    def file_name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Edge:
    """A line from a revision's node down to one of its parents' lanes."""

    parent: str
    lane: int


@dataclass(frozen=True)
class Lane:
    """Where one row of the graph is drawn. Columns are 0-based, left to right.

    Within the row (its top, its middle where the node sits, its bottom):

    - ``incoming``: columns whose line comes from the top of the row into the node
      (the revision's children above end here);
    - ``passing``: columns whose line runs straight from top to bottom (other branches);
    - ``edges``: lines from the node to the bottom of the row, one per parent, each at the
      column where that parent's line continues.

    The bottom of one row matches the top of the next, so rows drawn one under the other
    join up. ``width`` is the number of columns the row needs.
    """

    lane: int
    width: int
    incoming: tuple[int, ...]
    passing: tuple[int, ...]
    edges: tuple[Edge, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "lane": self.lane,
            "width": self.width,
            "incoming": list(self.incoming),
            "passing": list(self.passing),
            "edges": [{"parent": e.parent, "lane": e.lane} for e in self.edges],
        }


@dataclass
class ScriptTree:
    """The revisions of one script folder, their graph, and what is wrong with them."""

    location: Path
    revisions: dict[str, Revision]  # by id, newest first
    problems: list[Problem]
    order: tuple[str, ...]  # newest first, deterministic; children before parents
    heads: tuple[str, ...]  # in display order
    bases: tuple[str, ...]  # in display order
    lanes: dict[str, Lane]
    labels: dict[str, str]  # branch label -> id of the revision that declares it
    config: ScriptConfig | None = None  # where the revisions were read from
    _shown: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def version_locations(self) -> tuple[Path, ...]:
        return self.config.version_locations if self.config else (self.location / "versions",)

    def shown_locations(self) -> list[str]:
        """The version locations as a person reads them (from the project's folder)."""
        if self.config is None:
            return ["versions"]
        return [self.config.shown(p) for p in self.config.version_locations]

    def shown_path(self, rev: Revision) -> str:
        """A revision's file as a person reads it (from the project's folder); remembered,
        as the history page asks for each row more than once."""
        if self.config is None:
            return rev.path
        shown = self._shown.get(rev.path)
        if shown is None:
            shown = self._shown[rev.path] = self.config.shown(self.location / rev.path)
        return shown

    def __contains__(self, rev: object) -> bool:
        return rev in self.revisions

    def __len__(self) -> int:
        return len(self.revisions)

    def __iter__(self) -> Iterator[Revision]:
        """Revisions newest first."""
        return iter(self.revisions.values())

    def oldest_first(self) -> list[str]:
        """The order in which ``alembic upgrade heads`` would run every revision."""
        return list(reversed(self.order))

    def resolve(self, name: str) -> str | None:
        """A revision id from an id or a branch label; None when neither."""
        if name in self.revisions:
            return name
        return self.labels.get(name)

    def ancestors(
        self, rev: str, *, include_self: bool = False, dependencies: bool = True
    ) -> set[str]:
        """Every revision ``rev`` builds on (through ``down_revision``, and ``depends_on``
        unless ``dependencies=False``). Empty for an unknown id."""
        return self._walk([rev], include_self, dependencies)

    def ancestors_of_all(self, revs: Iterable[str], *, include_self: bool = True) -> set[str]:
        return self._walk(list(revs), include_self, True)

    def _walk(self, starts: list[str], include_self: bool, dependencies: bool) -> set[str]:
        seen: set[str] = set()
        stack: list[str] = []
        for start in starts:
            rev = self.revisions.get(start)
            if rev is None:
                continue
            if include_self:
                seen.add(start)
            stack.extend(rev.parents)
            if dependencies:
                stack.extend(rev.dependencies)
        while stack:
            rid = stack.pop()
            if rid in seen:
                continue
            seen.add(rid)
            rev = self.revisions[rid]
            stack.extend(rev.parents)
            if dependencies:
                stack.extend(rev.dependencies)
        return seen


# --- Reading a script folder ---


def check_project(script_location: str | Path) -> Path:
    """The script folder of the project registered as ``script_location`` (the folder itself,
    or what its ``alembic.ini`` names); :class:`NotAnAlembicProject` when it is not one."""
    return check_config(script_location).script_location


def read_scripts(script_location: str | Path) -> ScriptTree:
    """Read the revision files of an Alembic project without executing anything.

    ``script_location`` is the script folder (revisions in its ``versions/``) or the project's
    ``alembic.ini`` / ``pyproject.toml`` (``alembic.ini#name`` for ``-n name``), whose
    ``version_locations`` (and ``recursive_version_locations``) say where they are.

    Raises :class:`NotAnAlembicProject` when the project, its ``env.py`` or a version location
    is missing; every other defect is reported in ``ScriptTree.problems``.
    """
    config = check_config(script_location)
    location = config.script_location
    problems: list[Problem] = []
    parsed: dict[str, Revision] = {}
    for entry in config.revision_files():
        rev = _parse_file(entry, config.relative(entry), problems)
        if rev is None:
            continue
        first = parsed.get(rev.id)
        if first is not None:
            # Two folders may hold files of the same name: then the paths tell them apart.
            a, b = (
                (first.file_name, rev.file_name)
                if first.file_name != rev.file_name
                else (config.shown(location / first.path), config.shown(location / rev.path))
            )
            problems.append(
                Problem(
                    "duplicate_revision",
                    rev.path,
                    rev.id,
                    f"{a} and {b} both define revision {rev.id!r}; {b} is ignored",
                )
            )
            continue
        parsed[rev.id] = rev
    tree = _build(location, parsed, problems)
    tree.config = config
    return tree


def _parse_file(path: Path, rel: str, problems: list[Problem]) -> Revision | None:
    name = path.name
    try:
        source = path.read_bytes()
    except OSError as exc:
        problems.append(Problem("unreadable", rel, None, f"{name}: cannot be read ({exc})"))
        return None
    try:
        module = ast.parse(source, filename=name)
    except SyntaxError as exc:
        where = f" (line {exc.lineno})" if exc.lineno else ""
        problems.append(
            Problem("syntax_error", rel, None, f"{name}: syntax error{where}: {exc.msg}; skipped")
        )
        return None
    except ValueError as exc:  # null bytes, undecodable source
        problems.append(Problem("unreadable", rel, None, f"{name}: cannot be parsed ({exc})"))
        return None

    values: dict[str, ast.expr] = {}
    downgrade_fn: ast.FunctionDef | ast.AsyncFunctionDef | None = None
    for node in module.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    values[target.id] = node.value
        elif isinstance(node, ast.AnnAssign):
            if isinstance(node.target, ast.Name) and node.value is not None:
                values[node.target.id] = node.value
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == "downgrade":
            downgrade_fn = node

    if "revision" not in values:
        problems.append(
            Problem("no_revision", rel, None, f"{name}: no `revision = ...` assignment; skipped")
        )
        return None
    rev_value = _literal(values["revision"])
    if not isinstance(rev_value, str) or not rev_value.strip():
        problems.append(
            Problem("bad_value", rel, None, f"{name}: `revision` is not a string; skipped")
        )
        return None
    rev_id = rev_value.strip()

    def ids(attr: str) -> tuple[str, ...]:
        if attr not in values:
            return ()
        value = _literal(values[attr])
        result = _to_ids(value)
        if result is None:
            problems.append(
                Problem(
                    "bad_value",
                    rel,
                    rev_id,
                    f"{name}: `{attr}` is not a string, a tuple of strings or None; ignored",
                )
            )
            return ()
        return result

    docstring = ast.get_docstring(module, clean=True) or ""
    message = next(
        (
            line.strip()
            for line in docstring.splitlines()
            if line.strip() and not line.startswith(_TEMPLATE_LINES)
        ),
        "",
    )
    return Revision(
        id=rev_id,
        down_revisions=ids("down_revision"),
        branch_labels=ids("branch_labels"),
        depends_on=ids("depends_on"),
        message=message,
        path=rel,
        has_downgrade=downgrade_fn is not None and _works(downgrade_fn),
    )


_UNREADABLE = object()
# Lines Alembic's script.py.mako writes under the message: not the message themselves.
_TEMPLATE_LINES = ("Revision ID:", "Revises:", "Create Date:")


def _literal(node: ast.expr) -> object:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _UNREADABLE


def _to_ids(value: object) -> tuple[str, ...] | None:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value.strip(),) if value.strip() else ()
    if isinstance(value, tuple | list | set | frozenset):
        items = sorted(value) if isinstance(value, set | frozenset) else list(value)
        if not all(isinstance(v, str) for v in items):
            return None
        out: list[str] = []
        for v in items:
            v = v.strip()
            if v and v not in out:
                out.append(v)
        return tuple(out)
    return None


def _works(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Whether a ``downgrade()`` does something: not only pass/.../a docstring, and no
    unconditional ``raise`` (``raise NotImplementedError`` and friends) in its body."""
    useful = False
    for stmt in fn.body:
        if isinstance(stmt, ast.Pass):
            continue
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # docstring, `...`, a stray constant
        if isinstance(stmt, ast.Raise):
            return False
        useful = True
    return useful


# --- The graph ---


def _build(location: Path, parsed: dict[str, Revision], problems: list[Problem]) -> ScriptTree:
    labels: dict[str, str] = {}
    for rev in parsed.values():
        for label in rev.branch_labels:
            if label in labels and labels[label] != rev.id:
                problems.append(
                    Problem(
                        "duplicate_label",
                        rev.path,
                        rev.id,
                        f"{rev.file_name}: branch label {label!r} is already used by "
                        f"{parsed[labels[label]].file_name}; ignored",
                    )
                )
                continue
            labels.setdefault(label, rev.id)

    for rev in parsed.values():
        parents: list[str] = []
        for down in rev.down_revisions:
            if down == rev.id:
                problems.append(
                    Problem(
                        "cycle",
                        rev.path,
                        rev.id,
                        f"{rev.file_name}: revision {rev.id!r} names itself as its "
                        "down_revision; treated as a base",
                    )
                )
            elif down in parsed:
                parents.append(down)
            else:
                problems.append(
                    Problem(
                        "missing_down_revision",
                        rev.path,
                        rev.id,
                        f"{rev.file_name}: down_revision {down!r} names a revision that does "
                        "not exist"
                        + ("; the chain is broken here" if len(rev.down_revisions) == 1 else ""),
                    )
                )
        rev.parents = tuple(parents)
        deps: list[str] = []
        for dep in rev.depends_on:
            target = dep if dep in parsed else labels.get(dep)
            if target is None:
                problems.append(
                    Problem(
                        "missing_dependency",
                        rev.path,
                        rev.id,
                        f"{rev.file_name}: depends_on {dep!r} names a revision that does not "
                        "exist; ignored",
                    )
                )
            elif target != rev.id and target not in parents and target not in deps:
                deps.append(target)
        rev.dependencies = tuple(deps)

    _break_cycles(parsed, problems)

    children: dict[str, list[str]] = {rid: [] for rid in parsed}
    for rev in parsed.values():
        for parent in rev.parents:
            children[parent].append(rev.id)
    for rid, kids in children.items():
        parsed[rid].children = tuple(sorted(kids, key=lambda k: parsed[k].path))

    order = _newest_first(parsed)
    revisions = {rid: parsed[rid] for rid in order}
    return ScriptTree(
        location=location,
        revisions=revisions,
        problems=problems,
        order=tuple(order),
        heads=tuple(rid for rid in order if not revisions[rid].children),
        bases=tuple(rid for rid in order if not revisions[rid].parents),
        lanes=_layout(revisions, order),
        labels=labels,
    )


def _requires(rev: Revision) -> tuple[str, ...]:
    """What must run before ``rev``: its parents, then its dependencies."""
    return rev.parents + rev.dependencies


def _break_cycles(parsed: dict[str, Revision], problems: list[Problem]) -> None:
    """Find cycles (through down_revision and depends_on) and cut each one open.

    Each cycle is reported once and cut at its member with the smallest file name: that
    revision's link to the next one in the cycle is dropped (through down_revision, it
    becomes a base of what remains).
    """
    while True:
        left = _unsortable(parsed)
        if not left:
            return
        start = min(left, key=lambda r: parsed[r].path)
        # Walk requirements inside the unsortable set until a revision repeats.
        path: list[str] = []
        position: dict[str, int] = {}
        node = start
        while node not in position:
            position[node] = len(path)
            path.append(node)
            node = min(
                (r for r in _requires(parsed[node]) if r in left),
                key=lambda r: parsed[r].path,
            )
        cycle = path[position[node] :]
        cut = min(cycle, key=lambda r: parsed[r].path)
        after = cycle[(cycle.index(cut) + 1) % len(cycle)]
        rev = parsed[cut]
        rev.parents = tuple(p for p in rev.parents if p != after)
        rev.dependencies = tuple(d for d in rev.dependencies if d != after)
        at = cycle.index(cut)
        chain = " → ".join(repr(r) for r in [*cycle[at:], *cycle[:at], cut])
        files = ", ".join(parsed[r].file_name for r in sorted(cycle, key=lambda r: parsed[r].path))
        problems.append(
            Problem(
                "cycle",
                rev.path,
                cut,
                f"{files}: the revisions form a cycle ({chain}, each naming the next as its "
                f"down_revision or dependency); the link from {cut!r} to {after!r} is ignored",
            )
        )


def _unsortable(parsed: dict[str, Revision]) -> set[str]:
    """Revisions on a cycle (empty when a topological sort places every revision)."""
    waiting = {rid: 0 for rid in parsed}
    dependents: dict[str, list[str]] = {rid: [] for rid in parsed}
    for rev in parsed.values():
        for req in _requires(rev):
            waiting[rev.id] += 1
            dependents[req].append(rev.id)
    ready = [rid for rid, n in waiting.items() if n == 0]
    done = 0
    while ready:
        rid = ready.pop()
        done += 1
        for dep in dependents[rid]:
            waiting[dep] -= 1
            if waiting[dep] == 0:
                ready.append(dep)
    if done == len(parsed):
        return set()
    # Keep only revisions that can reach themselves, not those merely built on a cycle.
    left = {rid for rid, n in waiting.items() if n > 0}
    on_cycle: set[str] = set()
    for rid in left:
        if rid in on_cycle:
            continue
        seen: set[str] = set()
        stack = [r for r in _requires(parsed[rid]) if r in left]
        while stack:
            cur = stack.pop()
            if cur == rid:
                on_cycle.add(rid)
                break
            if cur in seen:
                continue
            seen.add(cur)
            stack.extend(r for r in _requires(parsed[cur]) if r in left)
    return on_cycle


def _newest_first(revisions: dict[str, Revision]) -> list[str]:
    """A deterministic order with every revision before what it builds on.

    Like ``git log --topo-order``: from the heads (latest file name first), follow first
    parents as far as possible before showing another line, so branches stay contiguous.
    """
    pending = {rid: 0 for rid in revisions}
    for rev in revisions.values():
        for req in _requires(rev):
            pending[req] += 1
    # A stack of ready revisions; heads pushed so the latest file name is on top.
    ready = sorted((rid for rid, n in pending.items() if n == 0), key=lambda r: revisions[r].path)
    order: list[str] = []
    while ready:
        rid = ready.pop()
        order.append(rid)
        reqs = _requires(revisions[rid])
        for req in reversed(reqs):  # first parent ends on top of the stack
            pending[req] -= 1
            if pending[req] == 0:
                ready.append(req)
    if len(order) != len(revisions):  # cannot happen after _break_cycles; never lose a row
        placed = set(order)
        order.extend(
            sorted((r for r in revisions if r not in placed), key=lambda r: revisions[r].path)
        )
    return order


def _layout(revisions: dict[str, Revision], order: list[str]) -> dict[str, Lane]:
    """Columns for drawing the graph newest first, as ``git log --graph`` does.

    ``slots[c]`` is the revision the line in column c is heading down to (None: free).
    A revision takes the leftmost column heading to it (a new head takes the leftmost free
    one); its first parent continues in that column; other parents reuse the column already
    heading to them or take the leftmost free one. Columns never shift sideways.
    """
    slots: list[str | None] = []
    lanes: dict[str, Lane] = {}
    for rid in order:
        width_before = len(slots)
        mine = [c for c, s in enumerate(slots) if s == rid]
        passing = tuple(c for c, s in enumerate(slots) if s is not None and s != rid)
        lane = mine[0] if mine else _free(slots)
        for c in mine:
            slots[c] = None
        edges: list[Edge] = []
        for parent in revisions[rid].parents:
            if parent in slots:
                col = slots.index(parent)
            elif slots[lane] is None:
                col = lane
            else:
                col = _free(slots)
            slots[col] = parent
            edges.append(Edge(parent, col))
        while slots and slots[-1] is None:
            slots.pop()
        width = max(width_before, len(slots), lane + 1)
        lanes[rid] = Lane(lane, width, tuple(mine), passing, tuple(edges))
    return lanes


def _free(slots: list[str | None]) -> int:
    """The leftmost free column (a new one at the right when none is free)."""
    for c, s in enumerate(slots):
        if s is None:
            return c
    slots.append(None)
    return len(slots) - 1


# --- A database's status against the scripts ---


@dataclass(frozen=True)
class Row:
    """One revision in the history, newest first, with its status and its lane."""

    revision: Revision
    lane: Lane
    is_head: bool
    is_current: bool
    is_applied: bool
    is_pending: bool

    def to_json(self) -> dict[str, Any]:
        rev = self.revision
        return {
            "id": rev.id,
            "message": rev.message,
            "down_revisions": list(rev.down_revisions),
            "parents": list(rev.parents),
            "children": list(rev.children),
            "branch_labels": list(rev.branch_labels),
            "depends_on": list(rev.depends_on),
            "is_head": self.is_head,
            "is_base": rev.is_base,
            "is_current": self.is_current,
            "is_applied": self.is_applied,
            "is_pending": self.is_pending,
            "is_merge": rev.is_merge,
            "is_branch_point": rev.is_branch_point,
            "has_downgrade": rev.has_downgrade,
            "file": rev.path,
            **self.lane.to_json(),
        }


@dataclass
class History:
    """A script tree seen from one database (``current``: its ``alembic_version`` rows)."""

    tree: ScriptTree
    current: list[str]  # as read from the database, de-duplicated
    applied: set[str]
    pending: list[str]  # oldest first: the order `alembic upgrade heads` would run them
    heads: list[str]
    merges: list[str]
    drift: list[str]
    rows: list[Row]  # newest first

    @property
    def problems(self) -> list[Problem]:
        return self.tree.problems

    @property
    def stamped(self) -> bool:
        """Whether the database has any ``alembic_version`` row."""
        return bool(self.current)

    @property
    def unknown_current(self) -> list[str]:
        return [c for c in self.current if c not in self.tree]

    @property
    def width(self) -> int:
        """Columns the whole graph needs."""
        return max((row.lane.width for row in self.rows), default=0)

    def to_json(self) -> dict[str, Any]:
        return {
            "current": list(self.current),
            "heads": list(self.heads),
            "pending": list(self.pending),
            "merges": list(self.merges),
            "drift": list(self.drift),
            "problems": [p.to_json() for p in self.problems],
            "width": self.width,
            "version_locations": self.tree.shown_locations(),
            "versions_named_in": self.tree.config.versions_named_in if self.tree.config else None,
            "recursive": bool(self.tree.config and self.tree.config.recursive),
            "revisions": [self._row_json(row) for row in self.rows],
        }

    def _row_json(self, row: Row) -> dict[str, Any]:
        """A row, with what needs the whole tree: where each ``depends_on`` leads (an id or a
        branch label, resolved; None when it names nothing) and the file as a person reads it."""
        rev = row.revision
        return row.to_json() | {
            "depends": [{"name": d, "target": self.tree.resolve(d)} for d in rev.depends_on],
            "shown_file": self.tree.shown_path(rev),
            "file_name": rev.file_name,
            "folder": self.tree.shown_path(rev).rpartition("/")[0],
        }


def _heads_message(tree: ScriptTree, heads: list[str]) -> str:
    """Several heads: when each is the tip of its own labelled branch (independent branches,
    as Alembic's multiple bases are meant), say so; it is still one target too many."""
    labels: dict[str, list[str]] = {}
    for head in heads:
        line = tree.ancestors(head, include_self=True, dependencies=False)
        labels[head] = [label for label, rid in tree.labels.items() if rid in line]
    owned = [label for head in heads for label in labels[head]]
    if all(labels.values()) and len(owned) == len(set(owned)):
        branches = ", ".join(f"{'/'.join(labels[h])} at {h}" for h in heads)
        return (
            f"{len(heads)} heads, one per branch label: {branches}. Alembic runs them all with "
            "upgrade heads, but a rehearsal needs a single head: merge them (alembic merge heads)"
        )
    return f"{len(heads)} heads: {', '.join(heads)} — merge them"


def history(tree: ScriptTree, current: Iterable[str]) -> History:
    """Compare the scripts with a database's ``alembic_version`` rows (none, one or more)."""
    seen: list[str] = []
    for raw in current:
        rid = str(raw).strip()
        if rid and rid not in seen:
            seen.append(rid)
    known = [c for c in seen if c in tree]
    drift: list[str] = []
    for c in seen:
        if c not in tree:
            drift.append(f"the database is at {c!r}, which no script defines — renamed or deleted?")
    for c in known:
        for other in known:
            if other != c and other in tree.ancestors(c):
                drift.append(
                    f"alembic_version lists both {other!r} and {c!r}, but {other!r} is an "
                    f"ancestor of {c!r}"
                )
    heads = list(tree.heads)
    if len(heads) > 1:
        drift.append(_heads_message(tree, heads))

    applied = tree.ancestors_of_all(known, include_self=True)
    pending = [rid for rid in tree.oldest_first() if rid not in applied]
    pending_set = set(pending)
    current_set = set(known)
    rows = [
        Row(
            revision=rev,
            lane=tree.lanes[rev.id],
            is_head=rev.is_head,
            is_current=rev.id in current_set,
            is_applied=rev.id in applied,
            is_pending=rev.id in pending_set,
        )
        for rev in tree.revisions.values()
    ]
    return History(
        tree=tree,
        current=seen,
        applied=applied,
        pending=pending,
        heads=heads,
        merges=[rid for rid in tree.order if tree.revisions[rid].is_merge],
        drift=drift,
        rows=rows,
    )


# --- Running Alembic ---


def psycopg_url(url: str) -> str:
    """``postgresql://``/``postgres://``/``postgresql+psycopg2://`` → ``postgresql+psycopg://``.

    Other URLs (another driver, another database) are returned unchanged."""
    scheme, sep, rest = url.strip().partition("://")
    if sep and scheme.lower() in {"postgres", "postgresql", "postgresql+psycopg2"}:
        return f"{DRIVER}://{rest}"
    return url.strip()


def _config(script_location: str | Path, url: str, output: io.StringIO | None = None) -> Config:
    from alembic.config import Config  # imported lazily: reading scripts needs no Alembic

    project = check_config(script_location)
    cfg = Config(output_buffer=output) if output is not None else Config()
    # Paths reach ConfigParser, which interpolates "%".
    cfg.set_main_option("script_location", str(project.script_location).replace("%", "%%"))
    cfg.set_main_option("path_separator", "newline")
    if project.explicit_versions:
        cfg.set_main_option(
            "version_locations",
            "\n".join(str(p).replace("%", "%%") for p in project.version_locations),
        )
    if project.recursive:
        cfg.set_main_option("recursive_version_locations", "true")
    # ConfigParser interpolates "%": a URL-quoted password holds some.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.cmd_opts = argparse.Namespace(x=[f"url={url}"])
    cfg.attributes["configure_logger"] = False
    return cfg


def _secrets_of(url: str) -> list[str]:
    """The strings an error message must not show: the URL and its password."""
    secrets = [url]
    try:
        parts = urlsplit(url)
        if parts.password:
            secrets += [parts.password, unquote(parts.password), quote(parts.password, safe="")]
    except ValueError:
        pass
    return sorted({s for s in secrets if s}, key=len, reverse=True)


def _run(what: str, url: str, action: Any) -> None:
    try:
        action()
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        for secret in _secrets_of(url):
            message = message.replace(secret, "***")
        # Not chained: the original exception's text and traceback may repeat the URL.
        raise AlembicError(f"alembic {what} failed: {message}") from None


def render_sql(
    script_location: str | Path,
    from_rev: str | None,
    to_rev: str,
    url: str = OFFLINE_URL,
) -> str:
    """The SQL ``alembic upgrade from_rev:to_rev --sql`` prints (from the base when
    ``from_rev`` is None), rendered offline: no database is contacted."""
    url = psycopg_url(url)
    output = io.StringIO()
    cfg = _config(script_location, url, output)
    spec = f"{from_rev}:{to_rev}" if from_rev else to_rev
    from alembic import command

    _run(f"upgrade {spec} --sql", url, lambda: command.upgrade(cfg, spec, sql=True))
    return output.getvalue()


def upgrade(script_location: str | Path, url: str, target: str = "heads") -> None:
    """``alembic upgrade target`` against the database at ``url``."""
    url = psycopg_url(url)
    cfg = _config(script_location, url)
    from alembic import command

    _run(f"upgrade {target}", url, lambda: command.upgrade(cfg, target))


def downgrade(script_location: str | Path, url: str, target: str) -> None:
    """``alembic downgrade target`` against the database at ``url``."""
    url = psycopg_url(url)
    cfg = _config(script_location, url)
    from alembic import command

    _run(f"downgrade {target}", url, lambda: command.downgrade(cfg, target))


def stamp(
    script_location: str | Path, url: str, target: str | list[str], *, purge: bool = False
) -> None:
    """``alembic stamp target`` (``--purge`` first empties ``alembic_version``)."""
    url = psycopg_url(url)
    cfg = _config(script_location, url)
    from alembic import command

    shown = " ".join(target) if isinstance(target, list) else target
    _run(f"stamp {shown}", url, lambda: command.stamp(cfg, target, purge=purge))


# --- Rendering one revision at a time (risk analysis) ---


def render_offline(
    tree: ScriptTree,
    revisions: Iterable[Revision],
    *,
    downgrade: bool = False,
    timeout: float = render.DEFAULT_TIMEOUT,
) -> tuple[dict[str, render.RevisionRender], render.EnvFacts]:
    """Each revision's upgrade SQL (and its downgrade's, with ``downgrade``), rendered offline
    from its own file in a context Runway configures: the project's ``env.py`` never runs, and
    a broken link elsewhere in the chain hides nothing (see :mod:`.render`)."""
    location = tree.location.resolve()
    jobs = [
        render.Job(
            rev.id,
            location / rev.path,
            rev.down_revisions,
            downgrade=downgrade and rev.has_downgrade,
        )
        for rev in revisions
    ]
    return render.render_revisions(location, jobs, timeout=timeout)
