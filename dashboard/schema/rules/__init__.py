"""Runway's own rules on the SQL a revision renders: the only package that imports pglast.

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

from dataclasses import replace

from pglast import ast
from pglast.enums import TransactionStmtKind

from dashboard.schema.rules.facts import (
    _RANK,
    ACCESS_EXCLUSIVE,
    AUTOCOMMIT,
    BOOKKEEPING_TABLE,
    LOCKS,
    SHARE,
    Analysis,
    ColumnType,
    RuleFinding,
    Schema,
    Statement,
    _Context,
    _short,
    blocks,
    stronger,
)
from dashboard.schema.rules.handlers import (
    _HANDLERS,
    _unparsable,
)
from dashboard.schema.rules.split import (
    _is_bookkeeping,
    _split,
)

__all__ = [
    "ACCESS_EXCLUSIVE",
    "AUTOCOMMIT",
    "Analysis",
    "BOOKKEEPING_TABLE",
    "ColumnType",
    "LOCKS",
    "RuleFinding",
    "SHARE",
    "Schema",
    "Statement",
    "blocks",
    "stronger",
    "analyse_sql",
]


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
