"""A database's schema before and after a change, as a description and as a diff (pure).

:func:`normalize` turns ``pg_dump --schema-only --no-owner --no-privileges`` output into the
description a rehearsal stores (``Rehearsal.schema_before`` / ``schema_after``): each object's
statements under pg_dump's own header line, without the ``Owner`` part, and without what differs
between two dumps of the same schema (pg_dump's other comments, the ``SET`` and ``set_config``
lines, the random ``\\restrict`` key, the server and pg_dump versions). :func:`bounded` caps it
at :data:`LIMIT_BYTES`, saying so in its last line.

:func:`schema_diff` compares two descriptions object by object: each table (with its columns'
defaults and comments, and its sequences' ownership), index, constraint, view, function... that
was added, removed or changed becomes an ``object`` line naming it, followed by its lines: all
``added`` or all ``removed``, or a unified diff (``added``, ``removed``, ``context``, and ``gap``
between distant hunks). :func:`summarize` counts them: "2 tables changed, 1 index added".
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from dataclasses import dataclass

LIMIT_BYTES = 2 * 1024 * 1024
CONTEXT_LINES = 3
OTHER = "(statements outside any object)"

# pg_dump's object header, e.g. "-- Name: users users_pkey; Type: CONSTRAINT; Schema: public;
# Owner: -" ("Owner: -" with --no-owner; no Owner part in some versions' headers).
_HEADER = re.compile(r"^-- Name: (?P<name>.*); Type: (?P<type>[^;]+); Schema: (?P<schema>[^;]+)")
_NOISE = (
    re.compile(r"^SET [A-Za-z_.]+ = .*;$"),
    re.compile(r"^SELECT pg_catalog\.set_config\(.*\);$"),
    re.compile(r"^\\(un)?restrict\b"),  # psql meta-commands of pg_dump 17.6+, a random key
)
_DOLLAR = re.compile(r"\$(?:[A-Za-z_][A-Za-z_0-9]*)?\$")


@dataclass(frozen=True)
class DiffLine:
    """One line of a schema diff. ``kind``: ``object`` (a heading: ``text`` names the object
    the lines after it belong to, ``change`` is ``added``, ``removed`` or ``changed``, ``label``
    what it is in the summary, e.g. "table"), ``added``, ``removed``, ``context`` (an unchanged
    line near a change) or ``gap`` (unchanged lines left out)."""

    kind: str
    text: str
    change: str = ""
    label: str = ""


@dataclass(frozen=True)
class SchemaChange:
    """What a template shows: the lines and their summary (see templates/schema/_schema_diff)."""

    lines: list[DiffLine]
    summary: str


# --- The description ---


def normalize(dump: str) -> str:
    """pg_dump's plain schema-only output as a stable description: each object's statements
    under ``-- Name: ...; Type: ...; Schema: ...``, one blank line between objects."""
    blocks: list[tuple[str, list[str]]] = []
    header = ""
    lines: list[str] = []
    quote = ""  # the dollar quote a statement is inside, e.g. "$$" in a function's body
    in_statement = False
    for line in dump.splitlines():
        if in_statement:
            lines.append(line)
            quote = _dollar_state(line, quote)
            if not quote and line.rstrip().endswith(";"):
                in_statement = False
            continue
        found = _HEADER.match(line)
        if found:
            if lines:
                blocks.append((header, lines))
            schema = found["schema"].strip()
            header = f"-- Name: {found['name']}; Type: {found['type']}; Schema: {schema}"
            lines = []
            continue
        if not line.strip() or line.startswith("--") or any(n.match(line) for n in _NOISE):
            continue
        lines.append(line)
        quote = _dollar_state(line, "")
        in_statement = bool(quote) or not line.rstrip().endswith(";")
    if lines:
        blocks.append((header, lines))
    return "".join(
        (f"{head}\n" if head else "") + "\n".join(body) + "\n\n" for head, body in blocks
    )


def _dollar_state(line: str, quote: str) -> str:
    """The dollar quote still open after ``line``, given the one open before it."""
    for token in _DOLLAR.findall(line):
        if not quote:
            quote = token
        elif token == quote:
            quote = ""
    return quote


def bounded(text: str, limit: int = LIMIT_BYTES) -> str:
    """``text`` when it fits in ``limit`` bytes (UTF-8), else its first whole lines that do and
    a last line saying it was cut and how long it was."""
    data = text.encode()
    if len(data) <= limit:
        return text
    kept = data[:limit].decode(errors="ignore")
    kept = kept[: kept.rfind("\n") + 1] if "\n" in kept else ""
    return kept + (
        f"-- Runway: truncated here: the schema is {len(data):,} bytes, "
        f"only the first {limit // (1024 * 1024)} MB are kept.\n"
    )


# --- The diff ---


@dataclass
class _Group:
    heading: str
    label: str
    lines: list[str]


def _parse(text: str) -> dict[str, _Group]:
    """The description's objects in order, a table's defaults and comments and a sequence's
    ownership in the table's or sequence's group."""
    blocks: list[tuple[re.Match[str] | None, list[str]]] = [(None, [])]
    previous_blank = True
    for line in text.splitlines():
        found = _HEADER.match(line) if previous_blank else None
        previous_blank = not line.strip()
        if found:
            blocks.append((found, []))
        else:
            blocks[-1][1].append(line)
    groups: dict[str, _Group] = {}
    for found, body in blocks:
        while body and not body[-1].strip():
            body.pop()
        while body and not body[0].strip():
            body.pop(0)
        if found is None and not body:
            continue
        key, heading, label = (
            (OTHER, OTHER, "statement")
            if found is None
            else _owner(found["type"], found["name"], found["schema"].strip())
        )
        group = groups.setdefault(key, _Group(heading, label, []))
        group.lines += [""] + body if group.lines else body
    return groups


_LABELS = {
    "TABLE": "table",
    "INDEX": "index",
    "CONSTRAINT": "constraint",
    "FK CONSTRAINT": "foreign key",
    "CHECK CONSTRAINT": "constraint",
    "SEQUENCE": "sequence",
    "VIEW": "view",
    "MATERIALIZED VIEW": "materialized view",
    "FUNCTION": "function",
    "PROCEDURE": "procedure",
    "TRIGGER": "trigger",
    "TYPE": "type",
    "DOMAIN": "domain",
    "EXTENSION": "extension",
    "SCHEMA": "schema",
    "POLICY": "policy",
    "RULE": "rule",
    "COMMENT": "comment",
}
_ON_A_TABLE = ("CONSTRAINT", "FK CONSTRAINT", "CHECK CONSTRAINT", "TRIGGER", "POLICY", "RULE")
_PLURALS = {"index": "indexes", "policy": "policies", "schema": "schemas"}


def _qualified(schema: str, name: str) -> str:
    return name if schema in ("", "-") else f"{schema}.{name}"


def _owner(kind: str, name: str, schema: str) -> tuple[str, str, str]:
    """(group key, heading, summary label) of one pg_dump object."""
    kind = kind.strip()
    table = name.split(" ", 1)[0]
    if kind == "DEFAULT" or kind == "SEQUENCE OWNED BY":
        owner = "TABLE" if kind == "DEFAULT" else "SEQUENCE"
        return _owner(owner, table, schema)
    if kind == "COMMENT":
        what, _, rest = name.partition(" ")
        if what in ("TABLE", "COLUMN") and rest:
            return _owner("TABLE", rest.split(".", 1)[0], schema)
        return (
            f"COMMENT {schema} {name}",
            f"COMMENT ON {what} {_qualified(schema, rest)}",
            "comment",
        )
    label = _LABELS.get(kind, kind.lower())
    own, _, of = name.partition(" ")
    if kind in _ON_A_TABLE and of:  # pg_dump names these "table constraint"
        return f"{kind} {schema} {name}", f"{kind} {of} ON {_qualified(schema, own)}", label
    heading = f"{kind} {_qualified(schema, name)}"
    return heading, heading, label


def schema_diff(before: str, after: str) -> list[DiffLine]:
    """The objects that differ between two descriptions (:func:`normalize`), in the order of
    ``after`` (a removed one where it stood in ``before``): an ``object`` line for each, then
    its lines."""
    old, new = _parse(before), _parse(after)
    keys = list(new)
    for position, key in enumerate(old):
        if key in new:
            continue
        earlier = [k for k in list(old)[:position] if k in keys]
        keys.insert(keys.index(earlier[-1]) + 1 if earlier else 0, key)
    result: list[DiffLine] = []
    for key in keys:
        was, now = old.get(key), new.get(key)
        if was is not None and now is not None and was.lines == now.lines:
            continue
        group = now or was
        assert group is not None
        change = "added" if was is None else "removed" if now is None else "changed"
        result.append(DiffLine("object", group.heading, change, group.label))
        if was is None or now is None:
            result += [DiffLine(change, line) for line in group.lines]
        else:
            result += _hunks(was.lines, now.lines)
    return result


def _hunks(before: list[str], after: list[str]) -> list[DiffLine]:
    """A unified diff's lines, with a ``gap`` where unchanged lines are left out."""
    lines: list[DiffLine] = []
    shown_to = 0  # how far into ``before`` the lines shown so far reach
    matcher = difflib.SequenceMatcher(None, before, after, autojunk=False)
    for group in matcher.get_grouped_opcodes(CONTEXT_LINES):
        if group[0][1] > shown_to:
            lines.append(DiffLine("gap", "…"))
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                lines += [DiffLine("context", line) for line in before[i1:i2]]
            else:
                lines += [DiffLine("removed", line) for line in before[i1:i2]]
                lines += [DiffLine("added", line) for line in after[j1:j2]]
        shown_to = group[-1][2]
    if shown_to < len(before):
        lines.append(DiffLine("gap", "…"))
    return lines


def summarize(lines: list[DiffLine]) -> str:
    """ "2 tables changed, 1 index added": tables first, then indexes, constraints...; for each,
    changed, added, removed. "No schema change." when nothing differs."""
    counts = Counter((line.label, line.change) for line in lines if line.kind == "object")
    if not counts:
        return "No schema change."
    labels = list(dict.fromkeys(_LABELS.values()))
    changes = ["changed", "added", "removed"]

    def order(item: tuple[tuple[str, str], int]) -> tuple[int, str, int]:
        (label, change), _ = item
        rank = labels.index(label) if label in labels else len(labels)
        return rank, label, changes.index(change)

    parts = []
    for (label, change), n in sorted(counts.items(), key=order):
        noun = label if n == 1 else _PLURALS.get(label, f"{label}s")
        parts.append(f"{n} {noun} {change}")
    return ", ".join(parts)


def compare(before: str, after: str) -> SchemaChange:
    """The diff and its summary, for a template."""
    lines = schema_diff(before, after)
    return SchemaChange(lines, summarize(lines))
