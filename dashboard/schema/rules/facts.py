"""The facts Runway's rules work with: locks, findings, statements, the schema seen so far."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pglast import ast

# PostgreSQL's table lock modes, weakest first.
LOCKS = (
    "ACCESS SHARE",
    "ROW SHARE",
    "ROW EXCLUSIVE",
    "SHARE UPDATE EXCLUSIVE",
    "SHARE",
    "SHARE ROW EXCLUSIVE",
    "EXCLUSIVE",
    "ACCESS EXCLUSIVE",
)
_RANK = {name: i for i, name in enumerate(LOCKS)}
_BLOCKS = {
    "ACCESS SHARE": "blocks only ACCESS EXCLUSIVE (most ALTER TABLE forms)",
    "ROW SHARE": "blocks only EXCLUSIVE and ACCESS EXCLUSIVE",
    "ROW EXCLUSIVE": "blocks schema changes (CREATE INDEX, ALTER TABLE), not reads or writes",
    "SHARE UPDATE EXCLUSIVE": "blocks other schema changes and VACUUM, not reads or writes",
    "SHARE": "blocks writes (INSERT, UPDATE, DELETE); reads go on",
    "SHARE ROW EXCLUSIVE": "blocks writes (INSERT, UPDATE, DELETE); reads go on",
    "EXCLUSIVE": "blocks writes and SELECT ... FOR UPDATE; plain reads go on",
    "ACCESS EXCLUSIVE": "blocks every read and write",
}
SHARE = "SHARE"
ACCESS_EXCLUSIVE = "ACCESS EXCLUSIVE"

BOOKKEEPING_TABLE = "alembic_version"
AUTOCOMMIT = "with op.get_context().autocommit_block():"

# Functions a column default may call without forcing a table rewrite (not volatile).
_NOT_VOLATILE = frozenset(
    [
        "now",
        "transaction_timestamp",
        "statement_timestamp",
        "current_date",
        "current_time",
        "current_timestamp",
        "localtime",
        "localtimestamp",
        "timezone",
        "lower",
        "upper",
        "coalesce",
        "nullif",
        "greatest",
        "least",
        "concat",
        "length",
        "md5",
        "abs",
        "round",
        "floor",
        "ceil",
        "trunc",
        "to_char",
        "to_date",
        "to_timestamp",
        "to_number",
        "date_trunc",
        "make_date",
        "make_time",
        "make_timestamp",
        "make_timestamptz",
        "make_interval",
        "jsonb_build_object",
        "jsonb_build_array",
        "json_build_object",
        "json_build_array",
        "to_json",
        "to_jsonb",
        "array_fill",
        "current_setting",
        "inet_client_addr",
        "current_user",
        "session_user",
        "current_schema",
    ]
)
_VOLATILE = frozenset(
    [
        "random",
        "gen_random_uuid",
        "uuid_generate_v1",
        "uuid_generate_v1mc",
        "uuid_generate_v4",
        "uuidv4",
        "uuidv7",
        "clock_timestamp",
        "timeofday",
        "nextval",
        "setval",
        "txid_current",
        "pg_current_xact_id",
        "random_normal",
    ]
)
_SERIAL_TYPES = frozenset({"serial", "serial4", "bigserial", "serial8", "smallserial", "serial2"})


def stronger(a: str, b: str) -> str:
    """The stronger of two lock modes ("" is no lock)."""
    return a if _RANK.get(a, -1) >= _RANK.get(b, -1) else b


def blocks(lock: str) -> str:
    """What a lock mode blocks, in words."""
    return _BLOCKS.get(lock, "")


# --- The data ---


@dataclass
class RuleFinding:
    """One hazard Runway's rules see in one statement."""

    rule: str
    severity: str  # "note" | "medium" | "high"
    message: str
    safe_way: str
    lock: str
    table: str
    rewrites: bool = False
    scans: bool = False
    fails_on_data: bool = False
    breaks_app: bool = False
    # Whether the severity depends on the table's size: a blocking scan or rewrite is brief
    # on a small table. The grading (risk.py) turns "high" into "medium" for a small table.
    size_sensitive: bool = False
    squawk_rules: tuple[str, ...] = ()  # squawk's names for the same hazard
    tables: tuple[str, ...] = ()  # every table the hazard concerns (table first)
    # Kept only if a stronger lock held by the same transaction makes it a hazard.
    provisional: bool = False


@dataclass
class Statement:
    """One statement of the rendered SQL (bookkeeping and BEGIN/COMMIT left out)."""

    index: int
    sql: str
    line: int  # 0-based line where the statement starts in the rendered SQL
    end_line: int
    in_transaction: bool
    transaction: int | None  # which BEGIN ... COMMIT block (None: autocommit)
    kind: str  # the parse node's name, e.g. "AlterTableStmt"; "" when unparsable
    locks: dict[str, str] = field(default_factory=dict)  # table -> lock mode
    lock: str = ""  # the strongest lock on a table the running application uses
    tables: list[str] = field(default_factory=list)
    rewrites: bool = False
    scans: bool = False
    fails_on_data: bool = False
    breaks_app: bool = False
    data_migration: bool = False
    findings: list[RuleFinding] = field(default_factory=list)

    def take(self, table: str, lock: str) -> None:
        if not table:
            return
        self.locks[table] = stronger(self.locks.get(table, ""), lock)
        if table not in self.tables:
            self.tables.append(table)

    def add(self, finding: RuleFinding) -> None:
        self.findings.append(finding)
        self.rewrites |= finding.rewrites
        self.scans |= finding.scans
        self.fails_on_data |= finding.fails_on_data
        self.breaks_app |= finding.breaks_app


ColumnType = tuple[str, tuple[int, ...]]  # base type name, type modifiers: ("varchar", (255,))


@dataclass
class Schema:
    """What the SQL analysed so far created or proved, carried from revision to revision.

    ``new_tables`` maps each table created within the analysed range to the revision that
    created it. ``checks`` maps a CHECK (col IS NOT NULL) constraint's name to (table, column,
    validated).
    """

    new_tables: dict[str, str] = field(default_factory=dict)
    columns: dict[str, dict[str, ColumnType]] = field(default_factory=dict)
    indexes: dict[str, str] = field(default_factory=dict)  # index -> table
    checks: dict[str, tuple[str, str, bool]] = field(default_factory=dict)

    def copy(self) -> Schema:
        return Schema(
            dict(self.new_tables),
            {t: dict(cols) for t, cols in self.columns.items()},
            dict(self.indexes),
            dict(self.checks),
        )

    @classmethod
    def merged(cls, schemas: Iterable[Schema]) -> Schema:
        out = cls()
        for s in schemas:
            out.new_tables.update(s.new_tables)
            for t, cols in s.columns.items():
                out.columns.setdefault(t, {}).update(cols)
            out.indexes.update(s.indexes)
            out.checks.update(s.checks)
        return out

    def validated_not_null(self, table: str, column: str) -> bool:
        return any(v == (table, column, True) for v in self.checks.values())


@dataclass
class Analysis:
    statements: list[Statement]
    schema: Schema  # the schema after this SQL
    errors: list[str]  # statements that could not be parsed


@dataclass
class _Context:
    revision: str
    schema: Schema
    pg_major: int | None
    created_here: set[str] = field(default_factory=set)
    dropped: set[str] = field(default_factory=set)

    def new_by(self, table: str) -> str | None:
        """The revision that created ``table`` in the analysed range ("" for this SQL)."""
        if table in self.created_here:
            return ""
        return self.schema.new_tables.get(table)


def _short(sql: str, limit: int = 60) -> str:
    flat = " ".join(sql.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _name(rv: Any) -> str:
    """A table's name as written, without the default ``public.``."""
    if rv is None:
        return ""
    if rv.schemaname and rv.schemaname != "public":
        return f"{rv.schemaname}.{rv.relname}"
    return str(rv.relname)


def _names(items: Any) -> str:
    """A dotted name from a list of String nodes (DROP INDEX's objects)."""
    parts = [getattr(i, "sval", "") for i in items or ()]
    if len(parts) == 2 and parts[0] == "public":
        parts = parts[1:]
    return ".".join(p for p in parts if p)


def _walk(node: Any) -> Iterator[Any]:
    if isinstance(node, ast.Node):
        yield node
        for attr in node.__slots__:  # type: ignore[attr-defined]
            yield from _walk(getattr(node, attr, None))
    elif isinstance(node, tuple | list):
        for item in node:
            yield from _walk(item)


def _type_of(type_name: Any) -> ColumnType:
    names = [n.sval for n in type_name.names or ()]
    base = names[-1].lower() if names else ""
    mods: list[int] = []
    for mod in type_name.typmods or ():
        value = getattr(getattr(mod, "val", None), "ival", None)
        if isinstance(value, int):
            mods.append(value)
    if type_name.arrayBounds:
        base += "[]"
    return base, tuple(mods)


def _type_text(col_type: ColumnType) -> str:
    base, mods = col_type
    return f"{base}({', '.join(map(str, mods))})" if mods else base
