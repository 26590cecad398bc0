"""Handlers for statements that create, alter or drop tables and indexes."""

from __future__ import annotations

import re
from typing import Any

from pglast import ast
from pglast.enums import (
    AlterTableType,
    ConstrType,
    ObjectType,
)

from dashboard.schema.rules.facts import (
    _NOT_VOLATILE,
    _SERIAL_TYPES,
    _VOLATILE,
    ACCESS_EXCLUSIVE,
    AUTOCOMMIT,
    SHARE,
    ColumnType,
    RuleFinding,
    Statement,
    _Context,
    _name,
    _names,
    _type_of,
    _type_text,
    _walk,
)

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
