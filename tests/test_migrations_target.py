"""The managed application's Alembic project, driven through the real ``alembic`` command line."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from devstack.cluster import Cluster

ROOT = Path(__file__).resolve().parent.parent
ALEMBIC = Path(sys.executable).parent / "alembic"
INI = ROOT / "migrations_target" / "alembic.ini"

# Every foreign key pointing at user data: (table, column) -> referenced table.
USER_DATA_FOREIGN_KEYS = {
    ("channels", "user_id"): "users",
    ("scheduled_posts", "channel_id"): "channels",
    ("sent_posts", "scheduled_post_id"): "scheduled_posts",
    ("payment_methods", "user_id"): "users",
    ("subscriptions", "user_id"): "users",
    ("payments", "user_id"): "users",
    ("payments", "subscription_id"): "subscriptions",
    ("payments", "payment_method_id"): "payment_methods",
}
REFERENCE_TABLES = {"plans"}


def alembic(
    *args: str, url: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the alembic CLI as a team's CI would, from an unrelated working directory."""
    argv = [str(ALEMBIC), "-c", str(INI)]
    if url is not None:
        argv += ["-x", f"url={url}"]
    base_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return subprocess.run(
        [*argv, *args],
        env={**base_env, **(env or {})},
        cwd="/",
        capture_output=True,
        text=True,
        timeout=120,
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"alembic failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture
def new_database(pg_cluster: Cluster) -> Iterator[Callable[[], str]]:
    """Make empty databases with unique names; drop them afterwards."""
    made: list[str] = []

    def make() -> str:
        name = f"mt_{uuid.uuid4().hex[:12]}"
        pg_cluster.create_database(name, replace=True)
        made.append(name)
        return name

    yield make
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def query(cluster: Cluster, dbname: str, sql: str) -> list[tuple]:
    with psycopg.connect(cluster.dsn(dbname)) as conn:
        return conn.execute(sql).fetchall()  # type: ignore[arg-type]


def schema(cluster: Cluster, dbname: str) -> dict[str, list[tuple]]:
    """Columns, constraints and indexes of the public schema, as information_schema reports them."""
    return {
        "columns": query(
            cluster,
            dbname,
            """
            SELECT table_name, ordinal_position, column_name, data_type, character_maximum_length,
                   numeric_precision, numeric_scale, is_nullable, column_default
            FROM information_schema.columns WHERE table_schema = 'public'
            ORDER BY table_name, ordinal_position
            """,
        ),
        "constraints": query(
            cluster,
            dbname,
            """
            SELECT tc.table_name, tc.constraint_name, tc.constraint_type,
                   string_agg(kcu.column_name, ',' ORDER BY kcu.ordinal_position),
                   rc.unique_constraint_name, rc.update_rule, rc.delete_rule, cc.check_clause
            FROM information_schema.table_constraints AS tc
            LEFT JOIN information_schema.key_column_usage AS kcu
              ON kcu.constraint_schema = tc.constraint_schema
             AND kcu.constraint_name = tc.constraint_name
            LEFT JOIN information_schema.referential_constraints AS rc
              ON rc.constraint_schema = tc.constraint_schema
             AND rc.constraint_name = tc.constraint_name
            LEFT JOIN information_schema.check_constraints AS cc
              ON cc.constraint_schema = tc.constraint_schema
             AND cc.constraint_name = tc.constraint_name
            WHERE tc.table_schema = 'public'
              -- NOT NULL shows up as CHECK constraints named after table OIDs; the columns'
              -- is_nullable already covers them.
              AND NOT (tc.constraint_type = 'CHECK' AND tc.constraint_name LIKE '%_not_null')
            GROUP BY tc.table_name, tc.constraint_name, tc.constraint_type,
                     rc.unique_constraint_name, rc.update_rule, rc.delete_rule, cc.check_clause
            ORDER BY tc.table_name, tc.constraint_name
            """,
        ),
        "indexes": query(
            cluster,
            dbname,
            "SELECT tablename, indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = 'public' ORDER BY tablename, indexname",
        ),
    }


def foreign_key_delete_rules(cluster: Cluster, dbname: str) -> dict[tuple[str, str], tuple]:
    rows = query(
        cluster,
        dbname,
        """
        SELECT kcu.table_name, kcu.column_name, ccu.table_name, rc.delete_rule
        FROM information_schema.referential_constraints AS rc
        JOIN information_schema.key_column_usage AS kcu
          ON kcu.constraint_schema = rc.constraint_schema
         AND kcu.constraint_name = rc.constraint_name
        JOIN information_schema.constraint_column_usage AS ccu
          ON ccu.constraint_schema = rc.constraint_schema
         AND ccu.constraint_name = rc.constraint_name
        WHERE rc.constraint_schema = 'public'
        """,
    )
    return {(table, column): (referenced, rule) for table, column, referenced, rule in rows}


def test_upgrade_downgrade_and_upgrade_again_gives_the_identical_schema(
    pg_cluster: Cluster, new_database: Callable[[], str]
) -> None:
    db = new_database()
    url = pg_cluster.url(db)

    ok(alembic("upgrade", "head", url=url))
    first = schema(pg_cluster, db)
    assert ok(alembic("current", url=url)).stdout.split()[0] == "0020"

    ok(alembic("downgrade", "base", url=url))
    leftovers = query(
        pg_cluster,
        db,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
    )
    assert leftovers == [("alembic_version",)]

    ok(alembic("upgrade", "head", url=url))
    assert schema(pg_cluster, db) == first
    assert {table for table, *_ in first["columns"]} == {
        "alembic_version",
        "plans",
        "users",
        "channels",
        "scheduled_posts",
        "sent_posts",
        "payment_methods",
        "subscriptions",
        "payments",
    }


def test_revision_0016_makes_every_user_data_foreign_key_restrict_where_0015_cascaded(
    pg_cluster: Cluster, new_database: Callable[[], str]
) -> None:
    db = new_database()
    url = pg_cluster.url(db)

    ok(alembic("upgrade", "0015", url=url))
    at_0015 = foreign_key_delete_rules(pg_cluster, db)
    ok(alembic("upgrade", "0016", url=url))
    at_0016 = foreign_key_delete_rules(pg_cluster, db)

    user_data = {
        key for key, (referenced, _) in at_0016.items() if referenced not in REFERENCE_TABLES
    }
    assert user_data == set(USER_DATA_FOREIGN_KEYS)
    for key, referenced in USER_DATA_FOREIGN_KEYS.items():
        assert at_0015[key] == (referenced, "CASCADE"), key
        assert at_0016[key] == (referenced, "RESTRICT"), key
    # Foreign keys to reference data (plans) are plain NO ACTION throughout.
    for key in set(at_0016) - user_data:
        assert at_0015[key][1] == at_0016[key][1] == "NO ACTION", key

    ok(alembic("downgrade", "0015", url=url))
    assert foreign_key_delete_rules(pg_cluster, db) == at_0015


def test_database_url_in_the_environment_works_instead_of_x_url(
    pg_cluster: Cluster, new_database: Callable[[], str]
) -> None:
    db = new_database()
    # The postgres:// spelling (Heroku and others) is accepted too.
    env = {"DATABASE_URL": pg_cluster.url(db).replace("postgresql://", "postgres://", 1)}

    ok(alembic("upgrade", "0016", env=env))
    assert ok(alembic("current", env=env)).stdout.split()[0] == "0016"
    assert query(pg_cluster, db, "SELECT version_num FROM alembic_version") == [("0016",)]


def test_a_missing_url_fails_with_a_clear_message_and_a_bad_one_without_echoing_it() -> None:
    missing = alembic("current")
    assert missing.returncode != 0
    assert "No database URL" in missing.stderr and "DATABASE_URL" in missing.stderr
    assert "Traceback" not in missing.stderr

    bad = alembic("current", url="mysql://someone:s3cret-pw@db.example/app")
    assert bad.returncode != 0
    assert "PostgreSQL" in bad.stderr
    assert "s3cret-pw" not in bad.stdout + bad.stderr


def test_offline_sql_renders_the_pending_revisions_without_a_database() -> None:
    without_url = ok(alembic("upgrade", "0016:head", "--sql"))
    with_url = ok(alembic("upgrade", "0016:0020", "--sql", url="postgresql://x@localhost/x"))

    assert with_url.stdout == without_url.stdout
    sql = without_url.stdout
    assert "ALTER TABLE users ADD COLUMN new_feature_flag BOOLEAN DEFAULT false NOT NULL" in sql
    assert "ALTER TABLE users ADD COLUMN email_new VARCHAR(500)" in sql
    assert "UPDATE users SET email_new = email WHERE id >= 1 AND id < 10001" in sql
    assert "CREATE INDEX ix_users_email ON users (email)" in sql
    assert "CONCURRENTLY" not in sql
    assert "UPDATE alembic_version SET version_num='0020'" in sql


def test_the_history_lists_twenty_linear_revisions_and_flags_the_risky_index() -> None:
    lines = ok(alembic("history")).stdout.strip().splitlines()

    assert len(lines) == 20
    assert lines[0].startswith("0019 -> 0020 (head), RISKY:")
    assert lines[-1].startswith("<base> -> 0001, ")
    assert "replace cascade deletes with restrict" in lines[4]


def test_the_backfill_copies_every_email_in_batches_and_its_downgrade_clears_them(
    pg_cluster: Cluster, new_database: Callable[[], str]
) -> None:
    from devstack.seeding import seed

    db = new_database()
    url = pg_cluster.url(db)
    ok(alembic("upgrade", "0018", url=url))
    with psycopg.connect(pg_cluster.dsn(db)) as conn:
        seed(conn, users=12_000)  # two batches; email_new empty at 0018, as production has it

    ok(alembic("upgrade", "0019", url=url))
    copied = query(
        pg_cluster,
        db,
        "SELECT count(*), count(email), count(*) FILTER (WHERE email_new IS DISTINCT FROM email) "
        "FROM users",
    )
    assert copied[0][0] == 12_000 and copied[0][1] > 0 and copied[0][2] == 0

    ok(alembic("downgrade", "0018", url=url))
    assert query(pg_cluster, db, "SELECT count(email_new) FROM users") == [(0,)]
