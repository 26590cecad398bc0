"""Runway's own rules (dashboard.schema.rules), each checked against real PostgreSQL.

For every risky pattern the test asserts the finding (rule, lock, table, safe way), then runs
the statement on a real table inside a transaction and reads ``pg_locks``: the strongest lock
the backend holds on the table is the one Runway claims. Statements that cannot run in a
transaction (VACUUM FULL, CONCURRENTLY) are run against a table another session holds locked,
and the lock they wait for is read. Rewrites are checked by the table's file node changing.
Safe patterns are never graded high.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from dashboard.schema.rules import LOCKS, RuleFinding, Schema, Statement, analyse_sql
from devstack.cluster import Cluster

SETUP = """
CREATE TABLE plans (id serial PRIMARY KEY, name text);
INSERT INTO plans (name) SELECT 'plan ' || g FROM generate_series(1, 3) g;
CREATE TABLE users (
    id bigserial PRIMARY KEY, email varchar(255), name text, plan_id int, n int NOT NULL
);
INSERT INTO users (email, name, plan_id, n)
SELECT 'u' || g || '@example.com', CASE WHEN g % 10 = 0 THEN NULL ELSE 'name ' || g END,
       CASE WHEN g = 7 THEN 99 ELSE 1 + g % 3 END, g
FROM generate_series(1, 200) g;
CREATE INDEX ix_users_email ON users (email);
ALTER TABLE users ADD CONSTRAINT ck_users_n CHECK (n > 0) NOT VALID;
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
"""

PG_MODES = {
    "AccessShareLock": "ACCESS SHARE",
    "RowShareLock": "ROW SHARE",
    "RowExclusiveLock": "ROW EXCLUSIVE",
    "ShareUpdateExclusiveLock": "SHARE UPDATE EXCLUSIVE",
    "ShareLock": "SHARE",
    "ShareRowExclusiveLock": "SHARE ROW EXCLUSIVE",
    "ExclusiveLock": "EXCLUSIVE",
    "AccessExclusiveLock": "ACCESS EXCLUSIVE",
}


@pytest.fixture(scope="module")
def dsn(pg_cluster: Cluster) -> Iterator[str]:
    name = f"risk_rules_{time.monotonic_ns() % 10**8}"
    pg_cluster.create_database(name, replace=True)
    with psycopg.connect(pg_cluster.dsn(name), autocommit=True) as conn:
        conn.execute(SETUP)
    yield pg_cluster.dsn(name)
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def tablespace(pg_cluster: Cluster, dsn: str) -> Iterator[str]:
    """A tablespace in a folder the server's user owns."""
    import contextlib
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="runway-tablespace-"))
    folder.chmod(0o755)
    with contextlib.suppress(LookupError, PermissionError):
        shutil.chown(folder, "postgres", "postgres")
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"CREATE TABLESPACE risk_ts LOCATION '{folder}'")
    except psycopg.Error as exc:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"cannot create a tablespace here: {exc}")
    yield "risk_ts"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLESPACE IF EXISTS risk_ts")
    shutil.rmtree(folder, ignore_errors=True)


# --- Helpers ---


def revision(*statements: str, autocommit: bool = False) -> str:
    """SQL as Alembic's offline mode renders one revision (autocommit: inside
    ``autocommit_block()``)."""
    body = "\n\n".join(f"{s};" for s in statements)
    if autocommit:
        return f"BEGIN;\n\nCOMMIT;\n\n{body}\n\nBEGIN;\n\nCOMMIT;\n"
    return f"BEGIN;\n\n-- Running upgrade a -> b\n\n{body}\n\nCOMMIT;\n"


def only(sql: str, schema: Schema | None = None, pg_major: int | None = None) -> RuleFinding:
    statements = analyse_sql(sql, revision="b", schema=schema, pg_major=pg_major).statements
    findings = [f for st in statements for f in st.findings]
    assert len(findings) == 1, findings
    return findings[0]


def findings_of(sql: str, schema: Schema | None = None) -> list[RuleFinding]:
    return [
        f for st in analyse_sql(sql, revision="b", schema=schema).statements for f in st.findings
    ]


def strongest(modes: list[str]) -> str:
    names = [PG_MODES[m] for m in modes]
    return max(names, key=LOCKS.index) if names else ""


@dataclass
class Run:
    lock: str  # the strongest lock held on the table after the statement
    rewrote: bool  # the table's file node changed
    locks: dict[str, str] = field(default_factory=dict)


def run_in_transaction(dsn: str, statement: str, *tables: str, prepare: str = "") -> Run:
    """Run ``statement`` in a transaction, read the locks it holds, roll back."""
    with psycopg.connect(dsn) as conn:
        oids = {t: conn.execute("SELECT %s::regclass::oid", [t]).fetchone()[0] for t in tables}
        node = conn.execute("SELECT pg_relation_filenode(%s)", [oids[tables[0]]]).fetchone()[0]
        if prepare:
            conn.execute(prepare)
        conn.execute(statement)
        locks = {}
        for table, oid in oids.items():
            rows = conn.execute(
                "SELECT mode FROM pg_locks WHERE locktype = 'relation' AND granted "
                "AND pid = pg_backend_pid() AND relation = %s",
                [oid],
            ).fetchall()
            locks[table] = strongest([r[0] for r in rows])
        after = conn.execute("SELECT pg_relation_filenode(%s)", [oids[tables[0]]]).fetchone()[0]
        conn.rollback()
    return Run(locks[tables[0]], node != after, locks)


def lock_requested(dsn: str, statement: str, table: str) -> str:
    """The strongest lock ``statement`` (run outside a transaction) takes on ``table``.

    Another session keeps a transaction open that has written to the table (ROW EXCLUSIVE), so
    the statement must wait at some point: for its own lock, or (CONCURRENTLY) for that
    transaction to end. The locks it holds or waits for on the table are read meanwhile."""
    blocker = psycopg.connect(dsn)
    worker = psycopg.connect(dsn, autocommit=True)
    errors: list[BaseException] = []
    try:
        oid = blocker.execute("SELECT %s::regclass::oid", [table]).fetchone()[0]
        blocker.execute(f"UPDATE {table} SET id = id WHERE id = 1")
        pid = worker.info.backend_pid

        def work() -> None:
            try:
                worker.execute(statement)
            except BaseException as exc:  # reported below
                errors.append(exc)

        thread = threading.Thread(target=work)
        thread.start()
        seen: list[str] = []
        waiting = False
        deadline = time.monotonic() + 20
        with psycopg.connect(dsn, autocommit=True) as observer:
            while not waiting and thread.is_alive() and time.monotonic() < deadline:
                rows = observer.execute(
                    "SELECT mode, granted, relation = %s FROM pg_locks WHERE pid = %s "
                    "AND (relation = %s OR NOT granted)",
                    [oid, pid, oid],
                ).fetchall()
                seen += [mode for mode, _, on_table in rows if on_table]
                waiting = any(not granted for _, granted, _ in rows)
                time.sleep(0.01)
        blocker.rollback()
        thread.join(20)
    finally:
        blocker.close()
        worker.close()
    assert not errors, errors
    assert waiting, "the statement never waited"
    return strongest(seen)


def fails(dsn: str, statement: str) -> str:
    """The error PostgreSQL raises for ``statement`` in a transaction ("" when it succeeds)."""
    with psycopg.connect(dsn) as conn:
        try:
            conn.execute(statement)
        except psycopg.Error as exc:
            return type(exc).__name__
        finally:
            conn.rollback()
    return ""


# --- Risky patterns: the finding, then the lock PostgreSQL really takes ---


@dataclass
class Case:
    rule: str
    statement: str
    lock: str
    table: str
    safe_way: str
    rewrites: bool = False
    prepare: str = ""  # run first, so a statement that fails on the data can be measured
    fails_with: str = ""  # the error the statement raises on the seeded data
    schema: Schema | None = None
    severity: str = "high"
    breaks_app: bool = False
    same_file: bool = True  # the table keeps its file (DROP and TRUNCATE do not)


RISKY = [
    Case(
        "create-index-blocking",
        "CREATE INDEX ix_users_name ON users (name)",
        "SHARE",
        "users",
        "CREATE INDEX CONCURRENTLY ix_users_name ON users (name)",
    ),
    Case(
        "drop-index-blocking",
        "DROP INDEX ix_users_email",
        "ACCESS EXCLUSIVE",
        "users",
        "postgresql_concurrently=True",
        schema=Schema(indexes={"ix_users_email": "users"}),
        severity="medium",
    ),
    Case(
        "alter-column-type",
        "ALTER TABLE users ALTER COLUMN n TYPE bigint",
        "ACCESS EXCLUSIVE",
        "users",
        "Expand/contract",
        rewrites=True,
    ),
    Case(
        "add-column-volatile-default",
        "ALTER TABLE users ADD COLUMN token uuid DEFAULT gen_random_uuid()",
        "ACCESS EXCLUSIVE",
        "users",
        "backfill existing rows in batches",
        rewrites=True,
    ),
    Case(
        "add-column-not-null-no-default",
        "ALTER TABLE users ADD COLUMN age int NOT NULL",
        "ACCESS EXCLUSIVE",
        "users",
        "constant default",
        prepare="DELETE FROM users",
        fails_with="NotNullViolation",
        breaks_app=True,
    ),
    Case(
        "set-not-null",
        "ALTER TABLE users ALTER COLUMN name SET NOT NULL",
        "ACCESS EXCLUSIVE",
        "users",
        "CHECK (name IS NOT NULL) NOT VALID",
        prepare="UPDATE users SET name = 'x' WHERE name IS NULL",
        fails_with="NotNullViolation",
    ),
    Case(
        "add-foreign-key-validating",
        "ALTER TABLE users ADD CONSTRAINT fk_users_plan_id FOREIGN KEY (plan_id) "
        "REFERENCES plans (id)",
        "SHARE ROW EXCLUSIVE",
        "users",
        "NOT VALID",
        prepare="UPDATE users SET plan_id = 1 WHERE plan_id = 99",
        fails_with="ForeignKeyViolation",
    ),
    Case(
        "add-check-validating",
        "ALTER TABLE users ADD CONSTRAINT ck_users_name CHECK (name IS NOT NULL)",
        "ACCESS EXCLUSIVE",
        "users",
        "VALIDATE CONSTRAINT ck_users_name in a separate transaction",
        prepare="UPDATE users SET name = 'x' WHERE name IS NULL",
        fails_with="CheckViolation",
    ),
    Case(
        "add-unique-blocking",
        "ALTER TABLE users ADD CONSTRAINT uq_users_email UNIQUE (email)",
        "ACCESS EXCLUSIVE",
        "users",
        "UNIQUE USING INDEX",
    ),
    Case(
        "drop-column",
        "ALTER TABLE users DROP COLUMN name",
        "ACCESS EXCLUSIVE",
        "users",
        "after the application stopped using the column",
        breaks_app=True,
    ),
    Case(
        "drop-table",
        "DROP TABLE users",
        "ACCESS EXCLUSIVE",
        "users",
        "after the application stopped using the table",
        breaks_app=True,
        same_file=False,
    ),
    Case(
        "truncate",
        "TRUNCATE users",
        "ACCESS EXCLUSIVE",
        "users",
        "batches",
        breaks_app=True,
        same_file=False,
    ),
    Case(
        "rename-column",
        "ALTER TABLE users RENAME COLUMN name TO full_name",
        "ACCESS EXCLUSIVE",
        "users",
        "Expand/contract",
        breaks_app=True,
    ),
    Case(
        "rename-table",
        "ALTER TABLE users RENAME TO people",
        "ACCESS EXCLUSIVE",
        "users",
        "view named users",
        breaks_app=True,
    ),
    Case(
        "data-migration",
        "UPDATE users SET name = lower(name)",
        "ROW EXCLUSIVE",
        "users",
        "autocommit block",
    ),
    Case(
        "data-migration",
        "DELETE FROM users WHERE id < 5",
        "ROW EXCLUSIVE",
        "users",
        "validated backup",
        severity="medium",
    ),
    Case(
        "data-migration",
        "INSERT INTO plans (name) SELECT email FROM users",
        "ROW EXCLUSIVE",
        "plans",
        "batches",
        severity="medium",
    ),
    Case(
        "cluster",
        "CLUSTER users USING ix_users_email",
        "ACCESS EXCLUSIVE",
        "users",
        "pg_repack",
        rewrites=True,
    ),
    Case("reindex-blocking", "REINDEX TABLE users", "SHARE", "users", "CONCURRENTLY"),
    Case(
        "lock-table",
        "LOCK TABLE users IN SHARE MODE",
        "SHARE",
        "users",
        "lock_timeout",
        severity="medium",
    ),
    Case(
        "create-trigger",
        "CREATE TRIGGER tr_users_touch BEFORE UPDATE ON users FOR EACH ROW "
        "EXECUTE FUNCTION touch()",
        "SHARE ROW EXCLUSIVE",
        "users",
        "lock_timeout",
        severity="medium",
    ),
]


@pytest.mark.parametrize("case", RISKY, ids=lambda c: f"{c.rule}:{c.statement[:30]}")
def test_each_risky_pattern_is_flagged_with_the_lock_postgresql_takes(dsn: str, case: Case) -> None:
    finding = only(revision(case.statement), schema=case.schema)

    assert finding.rule == case.rule
    assert finding.severity == case.severity
    assert finding.lock == case.lock
    assert finding.table == case.table
    assert case.safe_way in finding.safe_way
    assert finding.rewrites is case.rewrites
    assert finding.breaks_app is case.breaks_app
    run = run_in_transaction(dsn, case.statement, case.table, prepare=case.prepare)
    assert run.lock == case.lock
    if case.same_file:
        assert run.rewrote is case.rewrites
    if case.fails_with:
        assert finding.fails_on_data
        assert fails(dsn, case.statement) == case.fails_with


def test_a_foreign_key_locks_both_tables(dsn: str) -> None:
    statement = RISKY[6].statement
    finding = only(revision(statement))

    assert finding.tables == ("users", "plans")
    run = run_in_transaction(
        dsn, statement, "users", "plans", prepare="UPDATE users SET plan_id = 1 WHERE id = 7"
    )
    assert run.locks == {"users": "SHARE ROW EXCLUSIVE", "plans": "SHARE ROW EXCLUSIVE"}


def test_a_unique_constraint_fails_on_duplicates(dsn: str) -> None:
    statement = "ALTER TABLE users ADD CONSTRAINT uq_users_plan UNIQUE (plan_id)"

    assert only(revision(statement)).fails_on_data
    assert fails(dsn, statement) == "UniqueViolation"


def test_set_tablespace_rewrites_under_access_exclusive(dsn: str, tablespace: str) -> None:
    statement = f"ALTER TABLE users SET TABLESPACE {tablespace}"
    finding = only(revision(statement))

    assert (finding.rule, finding.lock, finding.rewrites) == (
        "set-tablespace",
        "ACCESS EXCLUSIVE",
        True,
    )
    run = run_in_transaction(dsn, statement, "users")
    assert (run.lock, run.rewrote) == ("ACCESS EXCLUSIVE", True)


def test_vacuum_full_rewrites_under_access_exclusive(dsn: str) -> None:
    sql = revision("VACUUM FULL users", autocommit=True)
    finding = only(sql)

    assert (finding.rule, finding.severity, finding.lock) == (
        "vacuum-full",
        "high",
        "ACCESS EXCLUSIVE",
    )
    assert finding.rewrites
    assert lock_requested(dsn, "VACUUM FULL users", "users") == "ACCESS EXCLUSIVE"


def test_vacuum_inside_the_transaction_fails(dsn: str) -> None:
    rules = {f.rule for f in findings_of(revision("VACUUM users"))}

    assert rules == {"vacuum-in-transaction"}
    assert fails(dsn, "VACUUM users") == "ActiveSqlTransaction"


def test_create_index_concurrently_inside_the_transaction_fails(dsn: str) -> None:
    statement = "CREATE INDEX CONCURRENTLY ix_users_name ON users (name)"
    finding = only(revision(statement))

    assert (finding.rule, finding.severity) == ("concurrently-in-transaction", "high")
    assert "autocommit_block" in finding.safe_way
    assert fails(dsn, statement) == "ActiveSqlTransaction"


def test_drop_index_concurrently_inside_the_transaction_fails(dsn: str) -> None:
    statement = "DROP INDEX CONCURRENTLY ix_users_email"

    assert only(revision(statement)).rule == "concurrently-in-transaction"
    assert fails(dsn, statement) == "ActiveSqlTransaction"


def test_a_long_statement_after_a_stronger_lock_in_the_same_transaction_runs_under_it(
    dsn: str,
) -> None:
    add = "ALTER TABLE users ADD COLUMN email_new varchar(500)"
    backfill = "UPDATE users SET email_new = email WHERE id < 100"
    finding = only(revision(add, backfill))

    assert finding.rule == "data-migration"
    assert (finding.severity, finding.lock) == ("high", "ACCESS EXCLUSIVE")
    assert "same transaction" in finding.message
    assert run_in_transaction(dsn, backfill, "users", prepare=add).lock == "ACCESS EXCLUSIVE"


def test_statement_facts_come_with_the_statement() -> None:
    sql = revision("ALTER TABLE users ALTER COLUMN n TYPE bigint")
    (st,) = analyse_sql(sql).statements

    assert isinstance(st, Statement)
    assert (st.kind, st.lock, st.tables, st.line) == (
        "AlterTableStmt",
        "ACCESS EXCLUSIVE",
        ["users"],
        4,
    )
    assert st.in_transaction and st.rewrites and st.scans and st.fails_on_data
    assert not st.breaks_app and not st.data_migration


# --- Safe patterns: never high, and the real lock is the weak one ---


def grades(sql: str, schema: Schema | None = None) -> set[str]:
    return {f.severity for f in findings_of(sql, schema)}


def test_create_index_concurrently_in_an_autocommit_block_is_safe(dsn: str) -> None:
    statement = "CREATE INDEX CONCURRENTLY ix_users_name ON users (name)"
    analysis = analyse_sql(revision(statement, autocommit=True))

    assert [f for st in analysis.statements for f in st.findings] == []
    assert analysis.statements[0].lock == "SHARE UPDATE EXCLUSIVE"
    assert not analysis.statements[0].in_transaction
    assert lock_requested(dsn, statement, "users") == "SHARE UPDATE EXCLUSIVE"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP INDEX ix_users_name")


def test_not_valid_then_validate_in_a_later_transaction_is_safe(dsn: str) -> None:
    add = (
        "ALTER TABLE users ADD CONSTRAINT fk_users_plan_id FOREIGN KEY (plan_id) "
        "REFERENCES plans (id) NOT VALID"
    )
    validate = "ALTER TABLE users VALIDATE CONSTRAINT ck_users_n"
    sql = revision(add) + revision(validate)

    assert findings_of(sql) == []
    statements = analyse_sql(sql).statements
    assert [s.lock for s in statements] == ["SHARE ROW EXCLUSIVE", "SHARE UPDATE EXCLUSIVE"]
    assert run_in_transaction(dsn, add, "users").lock == "SHARE ROW EXCLUSIVE"
    assert run_in_transaction(dsn, validate, "users").lock == "SHARE UPDATE EXCLUSIVE"


def test_validate_in_the_same_transaction_as_not_valid_is_not_safe() -> None:
    add = "ALTER TABLE users ADD CONSTRAINT ck_users_name CHECK (name IS NOT NULL) NOT VALID"
    finding = only(revision(add, "ALTER TABLE users VALIDATE CONSTRAINT ck_users_name"))

    assert (finding.rule, finding.severity) == ("validate-in-same-transaction", "high")
    assert finding.lock == "ACCESS EXCLUSIVE"
    assert "separate transaction" in finding.safe_way


def test_check_then_set_not_null_is_safe() -> None:
    sql = (
        revision("ALTER TABLE users ADD CONSTRAINT ck_name CHECK (name IS NOT NULL) NOT VALID")
        + revision("ALTER TABLE users VALIDATE CONSTRAINT ck_name")
        + revision(
            "ALTER TABLE users ALTER COLUMN name SET NOT NULL",
            "ALTER TABLE users DROP CONSTRAINT ck_name",
        )
    )

    assert findings_of(sql) == []


def test_set_not_null_needs_the_scan_before_postgresql_12() -> None:
    sql = revision("ALTER TABLE users ADD CONSTRAINT ck_name CHECK (name IS NOT NULL)") + revision(
        "ALTER TABLE users ALTER COLUMN name SET NOT NULL"
    )
    statements = analyse_sql(sql, pg_major=11).statements

    assert [f.rule for f in statements[1].findings] == ["set-not-null"]


def test_a_constant_default_is_safe_and_does_not_rewrite(dsn: str) -> None:
    statement = "ALTER TABLE users ADD COLUMN flag boolean DEFAULT false NOT NULL"

    assert findings_of(revision(statement)) == []
    assert run_in_transaction(dsn, statement, "users").rewrote is False


def test_a_stable_default_is_safe_but_a_constant_default_rewrites_before_postgresql_11() -> None:
    assert findings_of(revision("ALTER TABLE users ADD COLUMN at timestamptz DEFAULT now()")) == []
    old = only(revision("ALTER TABLE users ADD COLUMN flag boolean DEFAULT false"), pg_major=10)
    assert (old.rule, old.rewrites) == ("add-column-volatile-default", True)


def test_a_default_calling_an_unknown_function_is_medium() -> None:
    finding = only(revision("ALTER TABLE users ADD COLUMN code text DEFAULT make_code()"))

    assert (finding.rule, finding.severity) == ("add-column-volatile-default", "medium")
    assert "make_code" in finding.message


def test_a_batched_backfill_in_an_autocommit_block_is_a_data_migration_not_high() -> None:
    sql = revision(
        "-- repeat for each id range",
        "UPDATE users SET email = lower(email) WHERE id >= 1 AND id < 10001",
        autocommit=True,
    )
    finding = only(sql)

    assert (finding.rule, finding.severity) == ("data-migration", "medium")
    assert "autocommit" in finding.message


def test_an_unbatched_backfill_is_high_even_in_an_autocommit_block() -> None:
    finding = only(revision("UPDATE users SET email = lower(email)", autocommit=True))

    assert (finding.rule, finding.severity, finding.size_sensitive) == (
        "data-migration",
        "high",
        True,
    )


def test_widening_a_known_varchar_is_a_note_without_rewrite(dsn: str) -> None:
    statement = "ALTER TABLE users ALTER COLUMN email TYPE varchar(500)"
    known = Schema(columns={"users": {"email": ("varchar", (255,))}})
    finding = only(revision(statement), schema=known)

    assert (finding.rule, finding.severity, finding.rewrites) == (
        "alter-column-type",
        "note",
        False,
    )
    run = run_in_transaction(dsn, statement, "users")
    assert (run.lock, run.rewrote) == ("ACCESS EXCLUSIVE", False)


def test_narrowing_or_an_unknown_type_is_a_rewrite() -> None:
    known = Schema(columns={"users": {"email": ("varchar", (255,))}})

    narrow = only(revision("ALTER TABLE users ALTER COLUMN email TYPE varchar(100)"), known)
    unknown = only(revision("ALTER TABLE users ALTER COLUMN email TYPE text"))

    assert (narrow.severity, narrow.rewrites) == ("high", True)
    assert (unknown.severity, unknown.rewrites) == ("high", True)
    assert "current type is not in the SQL analysed" in unknown.message


def test_unique_using_an_index_built_concurrently_is_safe() -> None:
    sql = revision(
        "CREATE UNIQUE INDEX CONCURRENTLY uq_users_email_idx ON users (email)", autocommit=True
    ) + revision(
        "ALTER TABLE users ADD CONSTRAINT uq_users_email UNIQUE USING INDEX uq_users_email_idx"
    )

    assert findings_of(sql) == []


# --- New tables, bookkeeping, splitting ---


def test_tables_created_in_the_same_revision_are_not_risky() -> None:
    sql = revision(
        "CREATE TABLE events (id bigserial PRIMARY KEY, user_id int, kind text)",
        "CREATE INDEX ix_events_user_id ON events (user_id)",
        "ALTER TABLE events ADD CONSTRAINT fk_events_user FOREIGN KEY (user_id) "
        "REFERENCES users (id)",
        "ALTER TABLE events ALTER COLUMN kind SET NOT NULL",
        "UPDATE events SET kind = 'x'",
        "ALTER TABLE events RENAME COLUMN kind TO type",
    )
    analysis = analyse_sql(sql, revision="b")

    assert [f for st in analysis.statements for f in st.findings] == []
    # The foreign key still locks the referenced table, which is in use.
    assert analysis.statements[2].lock == "SHARE ROW EXCLUSIVE"
    assert analysis.statements[2].locks["users"] == "SHARE ROW EXCLUSIVE"
    assert analysis.schema.new_tables == {"events": "b"}


def test_tables_created_earlier_in_the_range_make_findings_notes() -> None:
    schema = Schema(new_tables={"users": "0002"})
    finding = only(revision("CREATE INDEX ix_users_name ON users (name)"), schema=schema)

    assert (finding.rule, finding.severity) == ("create-index-blocking", "note")
    assert "created by revision 0002" in finding.message


def test_alembic_bookkeeping_and_transaction_control_are_left_out() -> None:
    sql = (
        "BEGIN;\n\nCREATE TABLE alembic_version (\n    version_num VARCHAR(32) NOT NULL\n);\n\n"
        "-- Running upgrade  -> a\n\nCREATE INDEX ix ON users (email);\n\n"
        "INSERT INTO alembic_version (version_num) VALUES ('a');\n\nCOMMIT;\n\n"
        "BEGIN;\n\nUPDATE alembic_version SET version_num='b' WHERE version_num = 'a';\n\n"
        "DELETE FROM alembic_version WHERE version_num = 'x';\n\nCOMMIT;\n"
    )
    statements = analyse_sql(sql).statements

    assert [(s.sql, s.line, s.in_transaction) for s in statements] == [
        ("CREATE INDEX ix ON users (email)", 8, True)
    ]


def test_autocommit_blocks_are_outside_the_transaction() -> None:
    sql = (
        "BEGIN;\n\nALTER TABLE users ADD COLUMN x int;\n\nCOMMIT;\n\n"
        "CREATE INDEX CONCURRENTLY ix ON users (x);\n\nBEGIN;\n\nCOMMIT;\n"
    )
    statements = analyse_sql(sql).statements

    assert [(s.in_transaction, s.transaction) for s in statements] == [(True, 1), (False, None)]


def test_an_unparsable_statement_is_a_finding_and_the_rest_is_still_analysed() -> None:
    sql = revision("SELEC oops", "CREATE INDEX ix_users_name ON users (name)")
    analysis = analyse_sql(sql)

    rules = [f.rule for st in analysis.statements for f in st.findings]
    assert rules == ["unparsable-statement", "create-index-blocking"]
    assert analysis.errors and "syntax error" in analysis.errors[0]


def test_a_do_block_is_opaque() -> None:
    finding = only(revision("DO $$ BEGIN UPDATE users SET n = 1; END $$"))

    assert (finding.rule, finding.severity) == ("opaque-statement", "medium")


def test_statements_keep_their_text_and_multibyte_characters() -> None:
    sql = revision("UPDATE users SET name = 'é;è' WHERE id = 1", "CREATE INDEX ix ON users (name)")
    statements = analyse_sql(sql).statements

    assert [s.sql for s in statements] == [
        "UPDATE users SET name = 'é;è' WHERE id = 1",
        "CREATE INDEX ix ON users (name)",
    ]
    assert [s.line for s in statements] == [4, 6]


def test_it_does_not_touch_the_schema_it_is_given() -> None:
    schema = Schema()
    analysis = analyse_sql(revision("CREATE TABLE t (id int)"), revision="x", schema=schema)

    assert schema.new_tables == {}
    assert analysis.schema.new_tables == {"t": "x"}


def test_drop_index_names_its_table_when_the_range_created_it(tmp_path: Path) -> None:
    sql = revision("CREATE INDEX CONCURRENTLY ix_users_name ON users (name)", autocommit=True)
    after = analyse_sql(sql, revision="a").schema
    finding = only(revision("DROP INDEX ix_users_name"), schema=after)

    assert (finding.rule, finding.table) == ("drop-index-blocking", "users")
