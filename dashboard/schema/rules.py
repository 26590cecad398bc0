"""Runway's own rules on the SQL a revision renders: the only module that imports pglast.

:func:`analyse_sql` splits Alembic's offline SQL into statements, drops Alembic's bookkeeping
(``alembic_version``) and the transaction control around it, and gives each statement its
facts: the lock it takes on each table (PostgreSQL's names), whether it rewrites or scans a
table, can fail on existing data, breaks the application still running, is a data migration;
and the findings, each with the safe way to write it.

A statement knows whether it runs inside a transaction block: Alembic's offline output wraps
each revision in ``BEGIN;``/``COMMIT;``, and ``autocommit_block()`` shows as ``COMMIT; ...
BEGIN;``. Locks taken in a transaction are held until it ends, so a long statement after a
stronger lock on the same table runs under that stronger lock.

Tables created by the SQL being analysed are new: the application running during the
deployment does not use them, so nothing done to them is risky. :class:`Schema` carries what
earlier revisions of the same range created, so their tables count as new too (findings on them
become notes). Pure: no Django, no database.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from pglast import ast, parse_sql, parser
from pglast.enums import (
    AlterTableType,
    ConstrType,
    ObjectType,
    ReindexObjectType,
    TransactionStmtKind,
)

__all__ = [
    "LOCKS",
    "Analysis",
    "RuleFinding",
    "Schema",
    "Statement",
    "analyse_sql",
    "blocks",
    "stronger",
]

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


# --- Splitting ---


@dataclass
class _Piece:
    text: str
    start: int  # character offset in the SQL
    node: Any  # the parsed statement, or None
    error: str = ""


def _split(sql: str) -> list[_Piece]:
    """The statements of ``sql``. Parsed whole when it parses; otherwise split at top-level
    semicolons and parsed one by one, so one bad statement does not hide the others."""
    try:
        raws = parse_sql(sql)
    except parser.ParseError:
        return _split_tolerant(sql)
    pieces = []
    for raw in raws:
        start = raw.stmt_location or 0
        end = start + raw.stmt_len if raw.stmt_len else len(sql)
        text = sql[start:end].strip().rstrip(";").strip()
        pieces.append(_Piece(text, start + _lead(sql[start:end]), raw.stmt))
    return pieces


def _split_tolerant(sql: str) -> list[_Piece]:
    pieces: list[_Piece] = []
    begin: int | None = None
    for token in [*parser.scan(sql), None]:
        if token is not None and token.name in ("SQL_COMMENT", "C_COMMENT"):
            continue
        if token is None or token.name == "ASCII_59":
            if begin is not None:
                end = token.start if token is not None else len(sql)
                text = sql[begin:end].strip()
                try:
                    raws = parse_sql(text)
                except parser.ParseError as exc:
                    line = sql.count("\n", 0, begin) + 1
                    pieces.append(_Piece(text, begin, None, f"line {line}: {exc.args[0]}"))
                else:
                    pieces.extend(_Piece(text, begin, raw.stmt) for raw in raws)
            begin = None
            continue
        if begin is None:
            begin = token.start
    return pieces


def _lead(text: str) -> int:
    """Characters of whitespace and comments before a statement's first token."""
    stripped = text.lstrip()
    return len(text) - len(stripped)


def _is_bookkeeping(node: Any) -> bool:
    if isinstance(node, ast.CreateStmt | ast.InsertStmt | ast.UpdateStmt | ast.DeleteStmt):
        return node.relation is not None and node.relation.relname == BOOKKEEPING_TABLE
    return False


# --- The analysis ---


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


def analyse_sql(
    sql: str,
    *,
    revision: str = "",
    schema: Schema | None = None,
    pg_major: int | None = None,
) -> Analysis:
    """The statements of one revision's rendered SQL, each with its facts and findings.

    ``schema`` is what earlier revisions of the analysed range created (it is not changed:
    the schema after this SQL is returned). ``pg_major`` is the server's major version when
    known; rules that depend on it assume a current server otherwise.
    """
    ctx = _Context(revision, schema.copy() if schema else Schema(), pg_major)
    statements: list[Statement] = []
    errors: list[str] = []
    in_tx = False
    tx_count = 0
    for piece in _split(sql):
        node = piece.node
        if isinstance(node, ast.TransactionStmt):
            kind = node.kind
            if kind in (TransactionStmtKind.TRANS_STMT_BEGIN, TransactionStmtKind.TRANS_STMT_START):
                in_tx = True
                tx_count += 1
            elif kind in (
                TransactionStmtKind.TRANS_STMT_COMMIT,
                TransactionStmtKind.TRANS_STMT_ROLLBACK,
                TransactionStmtKind.TRANS_STMT_COMMIT_PREPARED,
                TransactionStmtKind.TRANS_STMT_ROLLBACK_PREPARED,
                TransactionStmtKind.TRANS_STMT_PREPARE,
            ):
                in_tx = False
            continue
        if node is not None and _is_bookkeeping(node):
            continue
        line = sql.count("\n", 0, piece.start)
        st = Statement(
            index=len(statements),
            sql=piece.text,
            line=line,
            end_line=line + piece.text.count("\n"),
            in_transaction=in_tx,
            transaction=tx_count if in_tx else None,
            kind=type(node).__name__ if node is not None else "",
        )
        statements.append(st)
        if node is None:
            errors.append(piece.error)
            st.add(_unparsable(piece.error))
            continue
        handler = _HANDLERS.get(type(node))
        if handler is not None:
            handler(node, st, ctx)
    _apply_held_locks(statements, ctx)
    _apply_new_tables(statements, ctx)
    for st in statements:
        st.lock = ""
        for table, lock in st.locks.items():
            if ctx.new_by(table) is None:
                st.lock = stronger(st.lock, lock)
    schema_after = ctx.schema
    for table in ctx.created_here:
        schema_after.new_tables[table] = revision
    for table in ctx.dropped:
        schema_after.new_tables.pop(table, None)
        schema_after.columns.pop(table, None)
    return Analysis(statements, schema_after, errors)


def _apply_held_locks(statements: list[Statement], ctx: _Context) -> None:
    """A long statement in a transaction runs under every lock the transaction already holds
    on its table: a stronger one makes its finding the stronger lock's."""
    held: dict[str, tuple[str, Statement]] = {}
    current: int | None = None
    for st in statements:
        if st.transaction != current:
            held = {}
            current = st.transaction
        for finding in st.findings if st.transaction is not None else ():
            long = finding.scans or finding.rewrites or finding.rule == "data-migration"
            previous = held.get(finding.table)
            if not long or previous is None or ctx.new_by(finding.table) is not None:
                continue
            lock, where = previous
            if _RANK[lock] <= _RANK.get(finding.lock, -1):
                continue
            finding.lock = lock
            finding.provisional = False
            finding.message += (
                f" It runs in the same transaction as the earlier `{_short(where.sql)}`, whose "
                f"{lock} lock on {finding.table} is held until COMMIT: it {blocks(lock)} for as "
                "long as this statement runs."
            )
            if _RANK[lock] >= _RANK[SHARE] and finding.severity != "high":
                finding.severity = "high"
                finding.size_sensitive = True
                finding.safe_way += (
                    " Commit before it: a separate revision, or an autocommit block."
                )
        st.findings = [f for f in st.findings if not f.provisional]
        if st.transaction is not None:
            for table, lock in st.locks.items():
                before = held.get(table)
                if before is None or _RANK[lock] > _RANK[before[0]]:
                    held[table] = (lock, st)


def _apply_new_tables(statements: list[Statement], ctx: _Context) -> None:
    """Tables the running application does not use yet: nothing done to them is risky."""
    for st in statements:
        kept: list[RuleFinding] = []
        for finding in st.findings:
            if not finding.table:
                kept.append(finding)
                continue
            by = ctx.new_by(finding.table)
            if by is None:
                kept.append(finding)
            elif by:  # created by an earlier revision of the analysed range: a note
                kept.append(
                    replace(
                        finding,
                        severity="note",
                        size_sensitive=False,
                        message=(
                            f"{finding.table} is created by revision {by} earlier in the analysed "
                            "range, so the application running during the deployment does not "
                            f"use it yet. On a table in use: {finding.message}"
                        ),
                    )
                )
        st.findings = kept
        if st.tables and all(ctx.new_by(t) is not None for t in st.tables):
            st.rewrites = st.scans = st.fails_on_data = st.breaks_app = False


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


# --- Handlers, one per statement kind ---


def _create_table(node: Any, st: Statement, ctx: _Context) -> None:
    table = _name(node.relation)
    ctx.created_here.add(table)
    ctx.dropped.discard(table)
    st.take(table, ACCESS_EXCLUSIVE)
    columns: dict[str, ColumnType] = {}
    for element in node.tableElts or ():
        if isinstance(element, ast.ColumnDef):
            if element.typeName is not None and element.colname:
                columns[element.colname] = _type_of(element.typeName)
            for con in element.constraints or ():
                _created_constraint(con, table, st, ctx)
        elif isinstance(element, ast.Constraint):
            _created_constraint(element, table, st, ctx)
    ctx.schema.columns[table] = columns
    if node.inhRelations and node.partbound is not None:  # PARTITION OF parent
        for parent in node.inhRelations:
            st.take(_name(parent), ACCESS_EXCLUSIVE)


def _created_constraint(con: Any, table: str, st: Statement, ctx: _Context) -> None:
    if con.contype == ConstrType.CONSTR_FOREIGN and con.pktable is not None:
        st.take(_name(con.pktable), "SHARE ROW EXCLUSIVE")
    elif con.contype in (ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_UNIQUE) and con.conname:
        ctx.schema.indexes[con.conname] = table


def _create_table_as(node: Any, st: Statement, ctx: _Context) -> None:
    into = node.into
    table = _name(into.rel) if into is not None else ""
    sources = _sources(node.query, ctx)
    for source in sources:
        st.take(source, "ACCESS SHARE")
    if table:
        ctx.created_here.add(table)
        st.take(table, ACCESS_EXCLUSIVE)
    used = [s for s in sources if ctx.new_by(s) is None]
    if used:
        st.data_migration = True
        st.add(
            RuleFinding(
                "data-migration",
                "medium",
                f"CREATE TABLE {table} AS copies rows of {', '.join(used)} in the revision: a "
                "data migration whose duration grows with the source's size.",
                "Create the table empty, then copy in batches in an autocommit block, each batch "
                "its own short transaction.",
                "ACCESS SHARE",
                used[0],
                scans=True,
                tables=tuple(used),
            )
        )


def _sources(node: Any, ctx: _Context) -> list[str]:
    """Tables a query reads (FROM clauses, joins, sub-selects)."""
    out: list[str] = []
    for item in _walk(node):
        if isinstance(item, ast.RangeVar):
            name = _name(item)
            if name and name not in out:
                out.append(name)
    return out


def _create_index(node: Any, st: Statement, ctx: _Context) -> None:
    table = _name(node.relation)
    if node.idxname:
        ctx.schema.indexes[node.idxname] = table
    if node.concurrent:
        st.take(table, "SHARE UPDATE EXCLUSIVE")
        if st.in_transaction:
            st.add(_concurrently_in_transaction("CREATE INDEX CONCURRENTLY", table, st))
        return
    st.take(table, SHARE)
    what = "CREATE UNIQUE INDEX" if node.unique else "CREATE INDEX"
    concurrent_sql = re.sub(
        r"^\s*CREATE\s+(UNIQUE\s+)?INDEX\b",
        lambda m: f"CREATE {(m.group(1) or '').upper()}INDEX CONCURRENTLY",
        st.sql,
        count=1,
        flags=re.IGNORECASE,
    )
    st.add(
        RuleFinding(
            "create-index-blocking",
            "high",
            f"{what} without CONCURRENTLY takes a SHARE lock on {table}: every INSERT, UPDATE "
            f"and DELETE on {table} waits until the whole table has been read and the index "
            "built." + (" Duplicate values make it fail." if node.unique else ""),
            f"Build it with CONCURRENTLY, outside the revision's transaction: `{AUTOCOMMIT} "
            "op.create_index(..., postgresql_concurrently=True)`, which renders as "
            f"`{concurrent_sql}` between COMMIT and BEGIN. Reads and writes go on; if the build "
            "fails it leaves an INVALID index: drop it and retry.",
            SHARE,
            table,
            scans=True,
            fails_on_data=bool(node.unique),
            size_sensitive=True,
            squawk_rules=("require-concurrent-index-creation",),
            tables=(table,),
        )
    )


def _concurrently_in_transaction(what: str, table: str, st: Statement) -> RuleFinding:
    return RuleFinding(
        "concurrently-in-transaction",
        "high",
        f"{what} cannot run inside a transaction block: PostgreSQL rejects it and the revision "
        "fails (the revision's BEGIN ... COMMIT wraps it).",
        f"Run it outside the revision's transaction: `{AUTOCOMMIT}` around the operation.",
        "SHARE UPDATE EXCLUSIVE",
        table,
        squawk_rules=("ban-concurrent-index-creation-in-transaction",),
        tables=(table,) if table else (),
    )


def _drop(node: Any, st: Statement, ctx: _Context) -> None:
    kind = node.removeType
    if kind == ObjectType.OBJECT_INDEX:
        for obj in node.objects or ():
            index = _names(obj)
            table = ctx.schema.indexes.pop(index, "")
            if node.concurrent:
                st.take(table, "SHARE UPDATE EXCLUSIVE")
                if st.in_transaction:
                    st.add(_concurrently_in_transaction("DROP INDEX CONCURRENTLY", table, st))
                continue
            st.take(table, ACCESS_EXCLUSIVE)
            on = table or "the index's table"
            st.add(
                RuleFinding(
                    "drop-index-blocking",
                    "medium",
                    f"DROP INDEX {index} without CONCURRENTLY takes an ACCESS EXCLUSIVE lock on "
                    f"{on}: brief, but it waits behind every running query on {on}, and every "
                    "query on it waits behind the DROP.",
                    f"`{AUTOCOMMIT} op.drop_index(..., postgresql_concurrently=True)`: DROP INDEX "
                    "CONCURRENTLY takes only SHARE UPDATE EXCLUSIVE.",
                    ACCESS_EXCLUSIVE,
                    table,
                    squawk_rules=("require-concurrent-index-deletion",),
                    tables=(table,) if table else (),
                )
            )
    elif kind == ObjectType.OBJECT_TABLE:
        for obj in node.objects or ():
            table = _names(obj)
            st.take(table, ACCESS_EXCLUSIVE)
            st.add(
                RuleFinding(
                    "drop-table",
                    "high",
                    f"DROP TABLE {table} deletes the table and its data; the application still "
                    "running reads and writes it, so its queries fail.",
                    "Contract only after the application stopped using the table: release code "
                    "that no longer touches it, keep it (or a renamed copy) for a release, and "
                    "drop it in a later revision once a validated backup holds its data.",
                    ACCESS_EXCLUSIVE,
                    table,
                    fails_on_data=False,
                    breaks_app=True,
                    squawk_rules=("ban-drop-table",),
                    tables=(table,),
                )
            )
            ctx.dropped.add(table)


def _alter_table(node: Any, st: Statement, ctx: _Context) -> None:
    if node.objtype not in (ObjectType.OBJECT_TABLE, ObjectType.OBJECT_MATVIEW):
        return
    table = _name(node.relation)
    for cmd in node.cmds or ():
        handler = _ALTER_HANDLERS.get(cmd.subtype)
        if handler is None:
            st.take(table, _ALTER_LOCKS.get(cmd.subtype, ACCESS_EXCLUSIVE))
        else:
            handler(cmd, table, st, ctx)


_ALTER_LOCKS = {
    AlterTableType.AT_SetStatistics: "SHARE UPDATE EXCLUSIVE",
    AlterTableType.AT_SetOptions: "SHARE UPDATE EXCLUSIVE",
    AlterTableType.AT_ResetOptions: "SHARE UPDATE EXCLUSIVE",
    AlterTableType.AT_SetRelOptions: "SHARE UPDATE EXCLUSIVE",
    AlterTableType.AT_ResetRelOptions: "SHARE UPDATE EXCLUSIVE",
    AlterTableType.AT_ClusterOn: "SHARE UPDATE EXCLUSIVE",
    AlterTableType.AT_DropCluster: "SHARE UPDATE EXCLUSIVE",
    AlterTableType.AT_AttachPartition: "SHARE UPDATE EXCLUSIVE",
    AlterTableType.AT_EnableTrig: "SHARE ROW EXCLUSIVE",
    AlterTableType.AT_EnableAlwaysTrig: "SHARE ROW EXCLUSIVE",
    AlterTableType.AT_EnableReplicaTrig: "SHARE ROW EXCLUSIVE",
    AlterTableType.AT_DisableTrig: "SHARE ROW EXCLUSIVE",
    AlterTableType.AT_EnableTrigAll: "SHARE ROW EXCLUSIVE",
    AlterTableType.AT_DisableTrigAll: "SHARE ROW EXCLUSIVE",
    AlterTableType.AT_EnableTrigUser: "SHARE ROW EXCLUSIVE",
    AlterTableType.AT_DisableTrigUser: "SHARE ROW EXCLUSIVE",
}


def _add_column(cmd: Any, table: str, st: Statement, ctx: _Context) -> None:
    st.take(table, ACCESS_EXCLUSIVE)
    col = cmd.def_
    name = col.colname
    col_type = _type_of(col.typeName) if col.typeName is not None else ("", ())
    ctx.schema.columns.setdefault(table, {})[name] = col_type
    default = None
    not_null = bool(col.is_not_null)
    filled = ""  # why every existing row gets a computed value (a rewrite)
    if col_type[0] in _SERIAL_TYPES:
        filled = f"the {col_type[0]} type (a nextval() default, evaluated per row)"
    if col.identity and col.identity != "\x00":
        filled = "GENERATED ... AS IDENTITY (a value per row)"
    for con in col.constraints or ():
        ct = con.contype
        if ct == ConstrType.CONSTR_DEFAULT:
            default = con.raw_expr
        elif ct == ConstrType.CONSTR_NOTNULL:
            not_null = True
        elif ct == ConstrType.CONSTR_IDENTITY:
            filled = "GENERATED ... AS IDENTITY (a value per row)"
        elif ct == ConstrType.CONSTR_GENERATED:
            filled = "GENERATED ALWAYS AS (...) STORED (computed per row)"
        elif ct in (ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_UNIQUE):
            st.add(_unique_finding(table, con, st, inline=name))
        elif ct == ConstrType.CONSTR_CHECK:
            st.add(_check_finding(table, con, inline=name))
        elif ct == ConstrType.CONSTR_FOREIGN:
            st.add(_foreign_key_finding(table, con, st, inline=name))

    if not filled and default is not None:
        volatile, unknown = _volatility(default)
        if volatile:
            filled = f"the volatile default {volatile}() (evaluated per row)"
        elif ctx.pg_major is not None and ctx.pg_major < 11:
            filled = f"a default on PostgreSQL {ctx.pg_major} (catalog-only only from 11)"
        elif unknown:
            st.add(
                RuleFinding(
                    "add-column-volatile-default",
                    "medium",
                    f"ADD COLUMN {name} on {table} has a default calling {unknown}(), which "
                    "Runway cannot classify: if it is volatile, PostgreSQL rewrites every row "
                    "under an ACCESS EXCLUSIVE lock; if not, the default is stored once.",
                    "Prefer a constant default; for per-row values add the column without a "
                    "default, SET DEFAULT for new rows, and backfill existing rows in batches "
                    "in an autocommit block.",
                    ACCESS_EXCLUSIVE,
                    table,
                    squawk_rules=("adding-field-with-default",),
                    tables=(table,),
                )
            )
    if filled:
        st.add(
            RuleFinding(
                "add-column-volatile-default",
                "high",
                f"ADD COLUMN {name} on {table} with {filled} rewrites every row of {table} "
                "under an ACCESS EXCLUSIVE lock: reads and writes wait for the whole rewrite.",
                "Add the column without a default (or with a constant one: catalog-only on "
                "PostgreSQL 11+), set the default for new rows with ALTER COLUMN ... SET DEFAULT, "
                "and backfill existing rows in batches in an autocommit block.",
                ACCESS_EXCLUSIVE,
                table,
                rewrites=True,
                scans=True,
                size_sensitive=True,
                squawk_rules=("adding-field-with-default", "adding-serial-primary-key-field"),
                tables=(table,),
            )
        )
    elif not_null and default is None:
        st.add(
            RuleFinding(
                "add-column-not-null-no-default",
                "high",
                f"ADD COLUMN {name} NOT NULL without a default on {table} fails as soon as "
                f"{table} holds a row; and once added, the running application's INSERTs, which "
                f"do not name {name}, fail.",
                "Give it a constant default (catalog-only on PostgreSQL 11+); or add it "
                "nullable, backfill in batches, then CHECK (col IS NOT NULL) NOT VALID, "
                "VALIDATE, SET NOT NULL.",
                ACCESS_EXCLUSIVE,
                table,
                fails_on_data=True,
                breaks_app=True,
                squawk_rules=("adding-required-field", "adding-not-nullable-field"),
                tables=(table,),
            )
        )


def _volatility(expr: Any) -> tuple[str, str]:
    """(a volatile function the expression calls, a function Runway cannot classify)."""
    unknown = ""
    for node in _walk(expr):
        if isinstance(node, ast.FuncCall):
            name = node.funcname[-1].sval.lower() if node.funcname else ""
            if name in _VOLATILE:
                return name, ""
            if name not in _NOT_VOLATILE and not unknown:
                unknown = name
        elif isinstance(node, ast.SubLink):
            return "a sub-select", ""
    return "", unknown


def _drop_column(cmd: Any, table: str, st: Statement, ctx: _Context) -> None:
    st.take(table, ACCESS_EXCLUSIVE)
    ctx.schema.columns.get(table, {}).pop(cmd.name, None)
    st.add(
        RuleFinding(
            "drop-column",
            "high",
            f"DROP COLUMN {cmd.name} on {table}: the application still running selects and "
            f"writes {cmd.name} (an ORM lists every mapped column), so its queries fail; the "
            "data is gone.",
            "Contract only after the application stopped using the column: release code that "
            "no longer reads or writes it, then drop it in a later revision, with a validated "
            "backup taken.",
            ACCESS_EXCLUSIVE,
            table,
            breaks_app=True,
            squawk_rules=("ban-drop-column",),
            tables=(table,),
        )
    )


def _alter_type(cmd: Any, table: str, st: Statement, ctx: _Context) -> None:
    st.take(table, ACCESS_EXCLUSIVE)
    col = cmd.def_
    new = _type_of(col.typeName)
    old = ctx.schema.columns.get(table, {}).get(cmd.name)
    ctx.schema.columns.setdefault(table, {})[cmd.name] = new
    using = col.raw_default is not None
    if old is not None and not using and _binary_compatible(old, new):
        st.add(
            RuleFinding(
                "alter-column-type",
                "note",
                f"ALTER COLUMN {cmd.name} TYPE {_type_text(new)} on {table} changes "
                f"{_type_text(old)} without a rewrite (catalog only): a brief ACCESS EXCLUSIVE "
                "lock.",
                "Fine as it is; keep lock_timeout set so it does not queue behind long queries.",
                ACCESS_EXCLUSIVE,
                table,
                squawk_rules=("changing-column-type", "prefer-text-field"),
                tables=(table,),
            )
        )
        return
    maybe = ""
    if old is None and new[0] in ("varchar", "text", "numeric", "bpchar"):
        maybe = (
            " (Widening a varchar or numeric, or varchar to text, needs no rewrite, but the "
            "column's current type is not in the SQL analysed.)"
        )
    was = f" from {_type_text(old)}" if old else ""
    st.add(
        RuleFinding(
            "alter-column-type",
            "high",
            f"ALTER COLUMN {cmd.name} TYPE {_type_text(new)}{was} on {table} rewrites the table "
            "and rebuilds its indexes under an ACCESS EXCLUSIVE lock: reads and writes wait for "
            f"the whole rewrite, and a value that does not convert makes it fail.{maybe}",
            "Expand/contract: add a new column of the new type, backfill it in batches in an "
            "autocommit block (keep it in sync for new writes), switch the application to it, "
            "then drop the old column in a later release.",
            ACCESS_EXCLUSIVE,
            table,
            rewrites=True,
            scans=True,
            fails_on_data=True,
            size_sensitive=True,
            squawk_rules=("changing-column-type", "prefer-text-field"),
            tables=(table,),
        )
    )


def _binary_compatible(old: ColumnType, new: ColumnType) -> bool:
    """Type changes PostgreSQL makes without rewriting the table."""
    (ob, om), (nb, nm) = old, new
    if ob in ("varchar", "text") and nb == "text":
        return True
    if ob in ("varchar", "text") and nb == "varchar" and not nm:
        return True
    if ob == nb == "varchar":
        return not nm or (bool(om) and nm[0] >= om[0])
    if ob == nb == "numeric":
        if not nm:
            return True
        if not om:
            return False
        scale_old = om[1] if len(om) > 1 else 0
        scale_new = nm[1] if len(nm) > 1 else 0
        return scale_new == scale_old and nm[0] >= om[0]
    return ob == nb and om == nm


def _set_not_null(cmd: Any, table: str, st: Statement, ctx: _Context) -> None:
    st.take(table, ACCESS_EXCLUSIVE)
    proved = ctx.schema.validated_not_null(table, cmd.name)
    if proved and (ctx.pg_major is None or ctx.pg_major >= 12):
        return  # PostgreSQL uses the validated CHECK: no scan
    st.add(
        RuleFinding(
            "set-not-null",
            "high",
            f"SET NOT NULL on {table}.{cmd.name} reads the whole table under an ACCESS "
            "EXCLUSIVE lock (reads and writes wait) and fails if any row holds NULL.",
            f"ADD CONSTRAINT {cmd.name}_not_null CHECK ({cmd.name} IS NOT NULL) NOT VALID; "
            "VALIDATE CONSTRAINT in a later transaction (SHARE UPDATE EXCLUSIVE: reads and writes "
            "go on); then SET NOT NULL, which PostgreSQL 12+ proves from the validated check "
            "without a scan; then DROP the check.",
            ACCESS_EXCLUSIVE,
            table,
            scans=True,
            fails_on_data=True,
            size_sensitive=True,
            squawk_rules=("adding-not-nullable-field",),
            tables=(table,),
        )
    )


def _add_constraint(cmd: Any, table: str, st: Statement, ctx: _Context) -> None:
    con: Any = cmd.def_
    ct = con.contype
    if ct == ConstrType.CONSTR_FOREIGN:
        st.take(table, "SHARE ROW EXCLUSIVE")
        st.take(_name(con.pktable), "SHARE ROW EXCLUSIVE")
        if not con.skip_validation:
            st.add(_foreign_key_finding(table, con, st))
        return
    st.take(table, ACCESS_EXCLUSIVE)
    if ct == ConstrType.CONSTR_CHECK:
        column = _not_null_column(con.raw_expr)
        if column and con.conname:
            ctx.schema.checks[con.conname] = (table, column, not con.skip_validation)
        if not con.skip_validation:
            st.add(_check_finding(table, con))
    elif ct in (ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_EXCLUSION):
        if con.indexname:
            if con.conname:
                ctx.schema.indexes[con.conname] = table
            return  # USING INDEX: catalog only
        if con.conname:
            ctx.schema.indexes[con.conname] = table
        st.add(_unique_finding(table, con, st))


def _not_null_column(expr: Any) -> str:
    if isinstance(expr, ast.NullTest) and expr.nulltesttype == 1:  # IS NOT NULL
        arg = expr.arg
        if isinstance(arg, ast.ColumnRef) and arg.fields:
            return str(getattr(arg.fields[-1], "sval", ""))
    return ""


def _foreign_key_finding(table: str, con: Any, st: Statement, *, inline: str = "") -> RuleFinding:
    ref = _name(con.pktable)
    st.take(ref, "SHARE ROW EXCLUSIVE")
    what = f"ADD COLUMN {inline} ... REFERENCES {ref}" if inline else "ADD FOREIGN KEY"
    return RuleFinding(
        "add-foreign-key-validating",
        "high",
        f"{what} without NOT VALID takes SHARE ROW EXCLUSIVE locks on {table} and {ref} "
        f"(writes to both wait) while it checks every row of {table}; a row without its "
        f"{ref} makes it fail.",
        "ADD CONSTRAINT ... NOT VALID (a brief lock; new rows are checked from then on), then "
        "VALIDATE CONSTRAINT in a separate transaction (a later revision, or an autocommit "
        "block): it takes only SHARE UPDATE EXCLUSIVE, so reads and writes go on.",
        "SHARE ROW EXCLUSIVE",
        table,
        scans=True,
        fails_on_data=True,
        size_sensitive=True,
        squawk_rules=("adding-foreign-key-constraint", "constraint-missing-not-valid"),
        tables=(table, ref),
    )


def _check_finding(table: str, con: Any, *, inline: str = "") -> RuleFinding:
    what = f"ADD COLUMN {inline} ... CHECK" if inline else "ADD CHECK"
    name = con.conname or "the check"
    return RuleFinding(
        "add-check-validating",
        "high",
        f"{what} without NOT VALID on {table} checks every row under an ACCESS EXCLUSIVE lock "
        "(reads and writes wait); a row that breaks the check makes it fail.",
        f"ADD CONSTRAINT {name} CHECK (...) NOT VALID (brief; new rows are checked), then "
        f"VALIDATE CONSTRAINT {name} in a separate transaction (SHARE UPDATE EXCLUSIVE: reads "
        "and writes go on).",
        ACCESS_EXCLUSIVE,
        table,
        scans=True,
        fails_on_data=True,
        size_sensitive=True,
        squawk_rules=("constraint-missing-not-valid",),
        tables=(table,),
    )


def _unique_finding(table: str, con: Any, st: Statement, *, inline: str = "") -> RuleFinding:
    kind = {
        ConstrType.CONSTR_PRIMARY: "PRIMARY KEY",
        ConstrType.CONSTR_UNIQUE: "UNIQUE",
        ConstrType.CONSTR_EXCLUSION: "EXCLUDE",
    }[con.contype]
    cols = ", ".join(getattr(k, "sval", "") for k in con.keys or ()) or inline or "..."
    name = con.conname or f"{table}_{cols.replace(', ', '_')}_key"
    index_sql = f"CREATE UNIQUE INDEX CONCURRENTLY {name}_idx ON {table} ({cols})"
    using = "PRIMARY KEY" if kind == "PRIMARY KEY" else "UNIQUE"
    return RuleFinding(
        "add-unique-blocking",
        "high",
        f"ADD {kind} on {table} builds its index under an ACCESS EXCLUSIVE lock: reads and "
        "writes wait while the whole table is read; duplicate values"
        + (" or NULLs" if kind == "PRIMARY KEY" else "")
        + " make it fail.",
        f"`{index_sql}` in an autocommit block, then `ALTER TABLE {table} ADD CONSTRAINT {name} "
        f"{using} USING INDEX {name}_idx` (catalog only)."
        if kind != "EXCLUDE"
        else "Exclusion constraints have no USING INDEX form: add it while the table is small, "
        "or in a maintenance window.",
        ACCESS_EXCLUSIVE,
        table,
        scans=True,
        fails_on_data=True,
        size_sensitive=True,
        squawk_rules=(
            "disallowed-unique-constraint",
            "adding-serial-primary-key-field",
            "constraint-missing-not-valid",
        ),
        tables=(table,),
    )


def _validate(cmd: Any, table: str, st: Statement, ctx: _Context) -> None:
    st.take(table, "SHARE UPDATE EXCLUSIVE")
    st.scans = st.fails_on_data = True
    check = ctx.schema.checks.get(cmd.name)
    if check is not None:
        ctx.schema.checks[cmd.name] = (check[0], check[1], True)
    # In its own transaction VALIDATE is the safe half of NOT VALID + VALIDATE. The finding
    # stays only when the same transaction already holds a stronger lock on the table.
    st.add(
        RuleFinding(
            "validate-in-same-transaction",
            "high",
            f"VALIDATE CONSTRAINT {cmd.name} reads every row of {table}; on its own it takes "
            "SHARE UPDATE EXCLUSIVE (reads and writes go on).",
            "Validate in a separate transaction from ADD CONSTRAINT ... NOT VALID: a later "
            "revision, or an autocommit block.",
            "SHARE UPDATE EXCLUSIVE",
            table,
            scans=True,
            fails_on_data=True,
            size_sensitive=True,
            squawk_rules=("constraint-missing-not-valid",),
            tables=(table,),
            provisional=True,
        )
    )


def _set_tablespace(cmd: Any, table: str, st: Statement, ctx: _Context) -> None:
    st.take(table, ACCESS_EXCLUSIVE)
    st.add(
        RuleFinding(
            "set-tablespace",
            "high",
            f"SET TABLESPACE copies {table} file by file under an ACCESS EXCLUSIVE lock: reads "
            "and writes wait for the whole copy.",
            "Move it online with pg_repack --tablespace, or create new tables and indexes in the "
            "tablespace; never in a migration.",
            ACCESS_EXCLUSIVE,
            table,
            rewrites=True,
            size_sensitive=True,
            tables=(table,),
        )
    )


def _set_logged(cmd: Any, table: str, st: Statement, ctx: _Context) -> None:
    st.take(table, ACCESS_EXCLUSIVE)
    which = "LOGGED" if cmd.subtype == AlterTableType.AT_SetLogged else "UNLOGGED"
    st.add(
        RuleFinding(
            "set-logged",
            "high",
            f"SET {which} rewrites {table} under an ACCESS EXCLUSIVE lock: reads and writes wait "
            "for the whole rewrite.",
            "Do it in a maintenance window, or build a new table and switch to it.",
            ACCESS_EXCLUSIVE,
            table,
            rewrites=True,
            size_sensitive=True,
            tables=(table,),
        )
    )


def _detach(cmd: Any, table: str, st: Statement, ctx: _Context) -> None:
    concurrent = bool(getattr(cmd.def_, "concurrent", False))
    st.take(table, "SHARE UPDATE EXCLUSIVE" if concurrent else ACCESS_EXCLUSIVE)
    if concurrent and st.in_transaction:
        st.add(_concurrently_in_transaction("DETACH PARTITION CONCURRENTLY", table, st))


_ALTER_HANDLERS = {
    AlterTableType.AT_AddColumn: _add_column,
    AlterTableType.AT_DropColumn: _drop_column,
    AlterTableType.AT_AlterColumnType: _alter_type,
    AlterTableType.AT_SetNotNull: _set_not_null,
    AlterTableType.AT_AddConstraint: _add_constraint,
    AlterTableType.AT_ValidateConstraint: _validate,
    AlterTableType.AT_SetTableSpace: _set_tablespace,
    AlterTableType.AT_SetLogged: _set_logged,
    AlterTableType.AT_SetUnLogged: _set_logged,
    AlterTableType.AT_DetachPartition: _detach,
}


def _rename(node: Any, st: Statement, ctx: _Context) -> None:
    kind = node.renameType
    if kind == ObjectType.OBJECT_COLUMN and node.relationType == ObjectType.OBJECT_TABLE:
        table = _name(node.relation)
        st.take(table, ACCESS_EXCLUSIVE)
        cols = ctx.schema.columns.get(table, {})
        if node.subname in cols:
            cols[node.newname] = cols.pop(node.subname)
        st.add(
            RuleFinding(
                "rename-column",
                "high",
                f"RENAME COLUMN {node.subname} TO {node.newname} on {table}: the application "
                f"still running uses {node.subname}, so its queries fail until the new code is "
                "deployed, and the new code fails until the revision ran.",
                "Expand/contract: add the new column, write both (or sync with a trigger), "
                "backfill in batches, switch reads, drop the old column in a later release.",
                ACCESS_EXCLUSIVE,
                table,
                breaks_app=True,
                squawk_rules=("renaming-column",),
                tables=(table,),
            )
        )
    elif kind == ObjectType.OBJECT_TABLE:
        table = _name(node.relation)
        new_name = (
            f"{node.relation.schemaname}.{node.newname}"
            if node.relation.schemaname and node.relation.schemaname != "public"
            else node.newname
        )
        st.take(table, ACCESS_EXCLUSIVE)
        if table in ctx.schema.columns:
            ctx.schema.columns[new_name] = ctx.schema.columns.pop(table)
        was_new = ctx.new_by(table)
        st.add(
            RuleFinding(
                "rename-table",
                "high",
                f"RENAME {table} TO {node.newname}: the application still running queries "
                f"{table}, so its queries fail until the new code is deployed.",
                f"Expand/contract: create {node.newname} (or rename and leave a view named "
                f"{table} for the old code), move the application over, drop the old name in a "
                "later release.",
                ACCESS_EXCLUSIVE,
                table,
                breaks_app=True,
                squawk_rules=("renaming-table",),
                tables=(table,),
            )
        )
        if was_new == "":
            ctx.created_here.add(new_name)
        elif was_new:
            ctx.schema.new_tables[new_name] = was_new
    elif kind == ObjectType.OBJECT_INDEX:
        index = _name(node.relation)
        table = ctx.schema.indexes.pop(index, "")
        if table:
            ctx.schema.indexes[node.newname] = table
    elif kind == ObjectType.OBJECT_TABCONSTRAINT:
        st.take(_name(node.relation), ACCESS_EXCLUSIVE)


def _truncate(node: Any, st: Statement, ctx: _Context) -> None:
    for rv in node.relations or ():
        table = _name(rv)
        st.take(table, ACCESS_EXCLUSIVE)
        st.add(
            RuleFinding(
                "truncate",
                "high",
                f"TRUNCATE {table} deletes every row of {table} under an ACCESS EXCLUSIVE lock"
                + (", and of every table referencing it (CASCADE)" if node.behavior else "")
                + ": the data is gone and the running application loses it.",
                "Never in a migration on a table in use; delete in batches if rows must go, "
                "with a validated backup taken first.",
                ACCESS_EXCLUSIVE,
                table,
                breaks_app=True,
                squawk_rules=("ban-truncate-cascade",),
                tables=(table,),
            )
        )


def _update_delete(node: Any, st: Statement, ctx: _Context) -> None:
    table = _name(node.relation)
    verb = "UPDATE" if isinstance(node, ast.UpdateStmt) else "DELETE FROM"
    st.take(table, "ROW EXCLUSIVE")
    extra = node.fromClause if isinstance(node, ast.UpdateStmt) else node.usingClause
    for source in _sources(extra, ctx):
        if source != table:
            st.take(source, "ACCESS SHARE")
    st.data_migration = True
    whole = node.whereClause is None
    st.scans = True
    deletes = verb == "DELETE FROM"
    backup = " Take a validated backup first: deleted rows are gone." if deletes else ""
    batch = (
        "Batch it: loop over key ranges of a few thousand rows in an autocommit block "
        f"(`{AUTOCOMMIT}`), each batch its own short transaction, idempotent so a re-run is "
        f"safe.{backup}"
    )
    if whole:
        where = "in the revision's transaction" if st.in_transaction else "as one statement"
        st.add(
            RuleFinding(
                "data-migration",
                "high",
                f"{verb} {table} without WHERE changes every row {where}: each row stays "
                f"locked until COMMIT (writers to those rows wait), and {table} and the WAL grow "
                "by the table's size.",
                batch,
                "ROW EXCLUSIVE",
                table,
                scans=True,
                fails_on_data=deletes,
                size_sensitive=True,
                tables=(table,),
            )
        )
    elif st.in_transaction:
        st.add(
            RuleFinding(
                "data-migration",
                "medium",
                f"{verb} {table} is a data migration in the revision's transaction: the rows it "
                "touches stay locked until COMMIT, and its duration grows with the rows matched.",
                batch,
                "ROW EXCLUSIVE",
                table,
                scans=True,
                fails_on_data=deletes,
                tables=(table,),
            )
        )
    else:
        st.add(
            RuleFinding(
                "data-migration",
                "medium",
                f"{verb} {table} is a data migration, batched in an autocommit block (a WHERE "
                "clause, no transaction around it): each batch commits on its own and holds its "
                "row locks briefly; the whole backfill still takes time in proportion to the "
                "table.",
                "Keep batches small (thousands of rows) and idempotent; loop over the whole key "
                "range; watch replication lag between batches; time it in a rehearsal." + backup,
                "ROW EXCLUSIVE",
                table,
                fails_on_data=deletes,
                tables=(table,),
            )
        )


def _insert(node: Any, st: Statement, ctx: _Context) -> None:
    table = _name(node.relation)
    st.take(table, "ROW EXCLUSIVE")
    select = node.selectStmt
    if not isinstance(select, ast.SelectStmt) or select.valuesLists:
        return
    sources = [s for s in _sources(select, ctx) if s != table]
    for source in sources:
        st.take(source, "ACCESS SHARE")
    if not sources:
        return
    st.data_migration = True
    used = [s for s in sources if ctx.new_by(s) is None]
    subject = table if ctx.new_by(table) is None else (used[0] if used else table)
    in_tx = "in the revision's transaction" if st.in_transaction else "in one statement"
    st.add(
        RuleFinding(
            "data-migration",
            "medium",
            f"INSERT INTO {table} ... SELECT FROM {', '.join(sources)} copies rows {in_tx}: a "
            "data migration whose duration grows with the rows read.",
            f"Copy in batches by key range in an autocommit block (`{AUTOCOMMIT}`), each batch "
            "its own transaction, idempotent (e.g. ON CONFLICT DO NOTHING).",
            "ROW EXCLUSIVE",
            subject,
            scans=True,
            tables=(subject, *[s for s in sources if s != subject]),
        )
    )


def _vacuum(node: Any, st: Statement, ctx: _Context) -> None:
    options = {o.defname.lower() for o in node.options or ()}
    if not node.is_vacuumcmd:  # ANALYZE
        for rel in node.rels or ():
            st.take(_name(rel.relation), "SHARE UPDATE EXCLUSIVE")
        return
    full = "full" in options
    tables = [_name(rel.relation) for rel in node.rels or ()]
    for table in tables or [""]:
        st.take(table, ACCESS_EXCLUSIVE if full else "SHARE UPDATE EXCLUSIVE")
        if full:
            st.add(
                RuleFinding(
                    "vacuum-full",
                    "high",
                    f"VACUUM FULL rewrites {table or 'every table'} under an ACCESS EXCLUSIVE "
                    "lock: reads and writes wait for the whole rewrite.",
                    "Reclaim space online with pg_repack or pg_squeeze, or rely on plain VACUUM; "
                    "never in a migration.",
                    ACCESS_EXCLUSIVE,
                    table,
                    rewrites=True,
                    size_sensitive=True,
                    squawk_rules=("prefer-repack",),
                    tables=(table,) if table else (),
                )
            )
    if st.in_transaction:
        st.add(
            RuleFinding(
                "vacuum-in-transaction",
                "high",
                "VACUUM cannot run inside a transaction block: PostgreSQL rejects it and the "
                "revision fails.",
                "Leave VACUUM to autovacuum, or run it outside the revision's transaction "
                f"(`{AUTOCOMMIT}`).",
                "SHARE UPDATE EXCLUSIVE" if not full else ACCESS_EXCLUSIVE,
                tables[0] if tables else "",
                tables=tuple(tables),
            )
        )


def _cluster(node: Any, st: Statement, ctx: _Context) -> None:
    table = _name(node.relation)
    st.take(table, ACCESS_EXCLUSIVE)
    st.add(
        RuleFinding(
            "cluster",
            "high",
            f"CLUSTER rewrites {table or 'every clustered table'} in index order under an ACCESS "
            "EXCLUSIVE lock: reads and writes wait for the whole rewrite.",
            "Reorder online with pg_repack (--order-by), never in a migration.",
            ACCESS_EXCLUSIVE,
            table,
            rewrites=True,
            size_sensitive=True,
            squawk_rules=("prefer-repack",),
            tables=(table,) if table else (),
        )
    )


def _reindex(node: Any, st: Statement, ctx: _Context) -> None:
    params = {p.defname.lower() for p in node.params or ()}
    concurrent = "concurrently" in params
    if node.kind == ReindexObjectType.REINDEX_OBJECT_INDEX:
        index = _name(node.relation)
        table = ctx.schema.indexes.get(index, "")
        what = f"REINDEX INDEX {index}"
    elif node.kind == ReindexObjectType.REINDEX_OBJECT_TABLE:
        table = _name(node.relation)
        what = f"REINDEX TABLE {table}"
    else:
        table = ""
        what = "REINDEX of a whole schema or database"
    if concurrent:
        st.take(table, "SHARE UPDATE EXCLUSIVE")
        if st.in_transaction:
            st.add(_concurrently_in_transaction("REINDEX CONCURRENTLY", table, st))
        return
    st.take(table, SHARE)
    st.add(
        RuleFinding(
            "reindex-blocking",
            "high",
            f"{what} without CONCURRENTLY takes a SHARE lock on "
            f"{table or 'each table'} (writes wait) and an ACCESS EXCLUSIVE lock on each index "
            "(queries that would use it wait) until the rebuild ends.",
            f"REINDEX ... CONCURRENTLY (PostgreSQL 12+) outside the revision's transaction "
            f"(`{AUTOCOMMIT}`).",
            SHARE,
            table,
            scans=True,
            size_sensitive=True,
            squawk_rules=("require-concurrent-reindex",),
            tables=(table,) if table else (),
        )
    )


def _lock(node: Any, st: Statement, ctx: _Context) -> None:
    mode = LOCKS[max(1, min(node.mode, 8)) - 1]
    for rv in node.relations or ():
        table = _name(rv)
        st.take(table, mode)
        if not st.in_transaction:
            severity, tail = "high", " Outside a transaction block PostgreSQL rejects it."
        elif _RANK[mode] >= _RANK[SHARE]:
            severity, tail = "medium", ""
        else:
            severity, tail = "note", ""
        st.add(
            RuleFinding(
                "lock-table",
                severity,
                f"LOCK TABLE {table} IN {mode} MODE holds that lock until the revision's "
                f"transaction ends: it {blocks(mode)} for the rest of the revision.{tail}",
                "Avoid explicit locks in migrations; where one is needed, keep the transaction "
                "short and let Runway's lock_timeout bound the wait.",
                mode,
                table,
                tables=(table,),
            )
        )


def _create_trigger(node: Any, st: Statement, ctx: _Context) -> None:
    table = _name(node.relation)
    st.take(table, "SHARE ROW EXCLUSIVE")
    function = ".".join(getattr(n, "sval", "") for n in node.funcname or ())
    st.add(
        RuleFinding(
            "create-trigger",
            "medium",
            f"CREATE TRIGGER {node.trigname} takes a SHARE ROW EXCLUSIVE lock on {table} "
            f"(writes wait while it queues) and from then on runs {function}() on the running "
            "application's writes.",
            "Keep the trigger function small and fast, create it in its own short transaction, "
            "and let lock_timeout bound the wait.",
            "SHARE ROW EXCLUSIVE",
            table,
            tables=(table,),
        )
    )


def _do(node: Any, st: Statement, ctx: _Context) -> None:
    st.add(
        RuleFinding(
            "opaque-statement",
            "medium",
            "Runway cannot see inside a DO block: the locks it takes and the rows it changes "
            "are not analysed.",
            "Write the migration as plain SQL statements Runway (and reviewers) can read, or "
            "review this block by hand.",
            "",
            "",
        )
    )


def _unparsable(error: str) -> RuleFinding:
    return RuleFinding(
        "unparsable-statement",
        "medium",
        f"PostgreSQL's parser rejects this statement ({error}): Runway cannot analyse it, and "
        "the server will likely reject it too.",
        "Fix the SQL the revision renders; check it with `alembic upgrade --sql`.",
        "",
        "",
        squawk_rules=("syntax-error",),
    )


_HANDLERS: dict[type, Any] = {
    ast.CreateStmt: _create_table,
    ast.CreateTableAsStmt: _create_table_as,
    ast.IndexStmt: _create_index,
    ast.DropStmt: _drop,
    ast.AlterTableStmt: _alter_table,
    ast.RenameStmt: _rename,
    ast.TruncateStmt: _truncate,
    ast.UpdateStmt: _update_delete,
    ast.DeleteStmt: _update_delete,
    ast.InsertStmt: _insert,
    ast.VacuumStmt: _vacuum,
    ast.ClusterStmt: _cluster,
    ast.ReindexStmt: _reindex,
    ast.LockStmt: _lock,
    ast.CreateTrigStmt: _create_trigger,
    ast.DoStmt: _do,
}
