"""Handlers for the other statements: renames, truncation, data migrations, maintenance,
locks, triggers, DO blocks."""

from __future__ import annotations

from typing import Any

from pglast import ast
from pglast.enums import (
    A_Expr_Kind,
    BoolExprType,
    ObjectType,
    ReindexObjectType,
)

from dashboard.schema.rules.facts import (
    _RANK,
    ACCESS_EXCLUSIVE,
    AUTOCOMMIT,
    LOCKS,
    SHARE,
    RuleFinding,
    Statement,
    _Context,
    _name,
    blocks,
)
from dashboard.schema.rules.tables import (
    _concurrently_in_transaction,
    _sources,
)


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
    keys = _keyed(node.whereClause)
    if keys is not None and not extra:
        # A keyed change of a few rows (a fix-up, a seed row): an index lookup, not a migration.
        st.add(
            RuleFinding(
                "keyed-change",
                "note",
                f"{verb} {table} changes at most {keys} row{'s' if keys != 1 else ''} chosen by "
                "key: brief row locks, not a data migration.",
                "",
                "ROW EXCLUSIVE",
                table,
                tables=(table,),
            )
        )
        return
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


# More keys than this in one IN list is a batch of its own, not a fix-up.
KEYED_LIMIT = 1000


def _keyed(where: Any) -> int | None:
    """How many rows at most a WHERE of key equalities selects (``col = constant``, or
    ``col IN (constants)``, joined by AND), or None when it is not such a WHERE."""
    if isinstance(where, ast.BoolExpr):
        if where.boolop != BoolExprType.AND_EXPR:
            return None
        counts = [_keyed(arg) for arg in where.args or ()]
        return None if any(c is None for c in counts) else min(c for c in counts if c is not None)
    if not isinstance(where, ast.A_Expr) or not isinstance(where.lexpr, ast.ColumnRef):
        return None
    if [n.sval for n in where.name or ()] != ["="]:
        return None
    if where.kind == A_Expr_Kind.AEXPR_OP and isinstance(where.rexpr, ast.A_Const):
        return 1
    if where.kind == A_Expr_Kind.AEXPR_IN and isinstance(where.rexpr, tuple | list):
        values = list(where.rexpr)
        if (
            values
            and len(values) <= KEYED_LIMIT
            and all(isinstance(v, ast.A_Const) for v in values)
        ):
            return len(values)
    return None


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


# Statements PostgreSQL refuses inside a transaction block ("cannot run inside a transaction
# block"): in the revision's BEGIN ... COMMIT the revision fails when applied.
_NO_TRANSACTION = {
    ast.CreatedbStmt: "CREATE DATABASE",
    ast.DropdbStmt: "DROP DATABASE",
    ast.CreateTableSpaceStmt: "CREATE TABLESPACE",
    ast.DropTableSpaceStmt: "DROP TABLESPACE",
    ast.AlterSystemStmt: "ALTER SYSTEM",
    ast.CreateSubscriptionStmt: "CREATE SUBSCRIPTION",
}


def _refused_in_transaction(node: Any, st: Statement, ctx: _Context) -> None:
    what = _NO_TRANSACTION.get(type(node), "")
    if isinstance(node, ast.AlterEnumStmt):
        if node.oldVal or ctx.pg_major is None or ctx.pg_major >= 12:
            return  # RENAME VALUE, or ADD VALUE on PostgreSQL 12+ (assumed when unknown)
        what = "ALTER TYPE ... ADD VALUE (before PostgreSQL 12)"
    if not what or not st.in_transaction:
        return
    st.add(
        RuleFinding(
            "refused-in-transaction",
            "high",
            f"{what} cannot run inside a transaction block: PostgreSQL rejects it and the "
            "revision fails (the revision's BEGIN ... COMMIT wraps it).",
            f"Run it outside the revision's transaction (`{AUTOCOMMIT}`), or outside the "
            "migrations altogether.",
            "",
            "",
        )
    )
