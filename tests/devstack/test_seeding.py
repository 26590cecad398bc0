"""Seeding a managed database with realistic data, in real PostgreSQL databases."""

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
from devstack.seeding import APP_TABLES, seed

ROOT = Path(__file__).resolve().parents[2]
ALEMBIC = Path(sys.executable).parent / "alembic"
INI = ROOT / "migrations_target" / "alembic.ini"


def upgrade(cluster: Cluster, dbname: str, revision: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    subprocess.run(
        [str(ALEMBIC), "-c", str(INI), "-x", f"url={cluster.url(dbname)}", "upgrade", revision],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def templates(pg_cluster: Cluster) -> Iterator[dict[str, str]]:
    """Empty databases migrated to 0015, 0016 and head, to clone from."""
    made = {}
    for revision in ("0015", "0016", "head"):
        name = f"seed_tpl_{revision}_{uuid.uuid4().hex[:8]}"
        pg_cluster.create_database(name, replace=True)
        upgrade(pg_cluster, name, revision)
        made[revision] = name
    yield made
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        for name in made.values():
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def database(pg_cluster: Cluster, templates: dict[str, str]) -> Iterator[Callable[..., str]]:
    """Clone a migrated template into a new database; return its name."""
    made: list[str] = []

    def make(revision: str = "0016") -> str:
        name = f"seed_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{templates[revision]}"')
        made.append(name)
        return name

    yield make
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def connect(cluster: Cluster, dbname: str) -> psycopg.Connection:
    return psycopg.connect(cluster.dsn(dbname))


def content_hash(conn: psycopg.Connection, table: str) -> str:
    row = conn.execute(
        f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM {table} AS t"
    ).fetchone()
    assert row is not None
    return str(row[0])


def test_the_returned_row_counts_match_the_tables(pg_cluster: Cluster, database) -> None:
    db = database()
    with connect(pg_cluster, db) as conn:
        counts = seed(conn, users=300)

        assert list(counts) == list(APP_TABLES)
        for table, count in counts.items():
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (count,), table
    assert counts["users"] == 300
    assert counts["plans"] == 4
    assert all(count > 0 for count in counts.values()), counts


def test_the_data_is_consistent_with_no_orphaned_foreign_keys(
    pg_cluster: Cluster, database
) -> None:
    db = database()
    with connect(pg_cluster, db) as conn:
        seed(conn, users=1_000)
        foreign_keys = conn.execute(
            """
            SELECT con.conrelid::regclass::text, a.attname, con.confrelid::regclass::text
            FROM pg_constraint AS con
            JOIN pg_attribute AS a ON a.attrelid = con.conrelid AND a.attnum = con.conkey[1]
            WHERE con.contype = 'f' AND con.connamespace = 'public'::regnamespace
            """
        ).fetchall()
        assert len(foreign_keys) == 10
        for table, column, referenced in foreign_keys:
            orphans = conn.execute(
                f"SELECT count(*) FROM {table} AS c WHERE c.{column} IS NOT NULL "
                f"AND NOT EXISTS (SELECT 1 FROM {referenced} AS p WHERE p.id = c.{column})"
            ).fetchone()
            assert orphans == (0,), f"{table}.{column}"

        def none(sql: str) -> None:
            assert conn.execute(sql).fetchone() == (0,), sql

        # Only sent posts have a sent_posts row, and each has one.
        none(
            "SELECT count(*) FROM scheduled_posts AS sp "
            "WHERE (sp.status = 'sent') <> EXISTS "
            "(SELECT 1 FROM sent_posts AS s WHERE s.scheduled_post_id = sp.id)"
        )
        # A payment belongs to the same user as its subscription and payment method.
        none(
            "SELECT count(*) FROM payments AS p JOIN subscriptions AS s "
            "ON s.id = p.subscription_id WHERE s.user_id <> p.user_id"
        )
        none(
            "SELECT count(*) FROM payments AS p JOIN payment_methods AS m "
            "ON m.id = p.payment_method_id WHERE m.user_id <> p.user_id"
        )
        # Nobody has more channels than their plan allows; paying users have a current
        # subscription to their plan and a default payment method.
        none(
            "SELECT count(*) FROM users AS u JOIN plans AS pl ON pl.id = u.plan_id "
            "WHERE (SELECT count(*) FROM channels AS c WHERE c.user_id = u.id) > pl.max_channels"
        )
        none(
            "SELECT count(*) FROM users AS u WHERE u.plan_id > 1 AND NOT EXISTS "
            "(SELECT 1 FROM subscriptions AS s WHERE s.user_id = u.id AND s.plan_id = u.plan_id "
            "AND s.status IN ('active', 'past_due', 'trial'))"
        )
        none(
            "SELECT count(*) FROM users AS u WHERE u.plan_id > 1 AND NOT EXISTS "
            "(SELECT 1 FROM payment_methods AS m WHERE m.user_id = u.id AND m.is_default)"
        )
        # Things happen after the user signed up.
        none(
            "SELECT count(*) FROM channels AS c JOIN users AS u ON u.id = c.user_id "
            "WHERE c.created_at < u.created_at"
        )
        none("SELECT count(*) FROM subscriptions WHERE expires_at < started_at")
        # Most users have an email, some do not; telegram ids are unique by constraint.
        with_email = conn.execute("SELECT avg((email IS NOT NULL)::int) FROM users").fetchone()
        assert with_email is not None and 0.7 < with_email[0] < 0.95


def test_the_same_seed_gives_the_same_content_and_another_seed_does_not(
    pg_cluster: Cluster, database
) -> None:
    hashes = []
    for seed_number in (7, 7, 8):
        db = database()
        with connect(pg_cluster, db) as conn:
            seed(conn, users=400, seed=seed_number)
            hashes.append({table: content_hash(conn, table) for table in APP_TABLES})

    assert hashes[0] == hashes[1]
    assert hashes[0]["users"] != hashes[2]["users"]


def test_the_sequences_continue_after_the_seeded_ids(pg_cluster: Cluster, database) -> None:
    db = database()
    with connect(pg_cluster, db) as conn:
        seed(conn, users=50)
        new_id = conn.execute(
            "INSERT INTO users (telegram_id, username) VALUES (1, 'newcomer') RETURNING id"
        ).fetchone()
    assert new_id == (51,)


def test_a_database_at_0015_is_refused(pg_cluster: Cluster, database) -> None:
    db = database("0015")
    with (
        connect(pg_cluster, db) as conn,
        pytest.raises(ValueError, match=r"revision 0015; seeding needs revision 0016 or later"),
    ):
        seed(conn, users=10)


def test_a_database_never_migrated_is_refused(pg_cluster: Cluster) -> None:
    with (
        connect(pg_cluster, "postgres") as conn,
        pytest.raises(ValueError, match="no alembic_version table"),
    ):
        seed(conn, users=10)


@pytest.mark.parametrize("users", [0, -5, 2.5, True, "100"])
def test_a_count_that_is_not_a_positive_integer_is_refused(
    pg_cluster: Cluster, database, users: object
) -> None:
    db = database()
    with (
        connect(pg_cluster, db) as conn,
        pytest.raises(ValueError, match="users must be a positive integer"),
    ):
        seed(conn, users=users)  # type: ignore[arg-type]


def test_a_seeded_database_is_refused_unless_replace_is_given(
    pg_cluster: Cluster, database
) -> None:
    db = database()
    with connect(pg_cluster, db) as conn:
        first = seed(conn, users=120)
        before = content_hash(conn, "payments")

        with pytest.raises(ValueError, match=r"already holds data .*replace=True"):
            seed(conn, users=120)
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (120,)

        assert seed(conn, users=120, replace=True) == first
        assert content_hash(conn, "payments") == before
        assert seed(conn, users=30, replace=True)["users"] == 30


def test_seeding_at_head_fills_the_backfilled_column_like_production(
    pg_cluster: Cluster, database
) -> None:
    db = database("head")
    with connect(pg_cluster, db) as conn:
        seed(conn, users=200)
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE email_new IS DISTINCT FROM email), "
            "count(*) FILTER (WHERE new_feature_flag) FROM users"
        ).fetchone()
    assert row == (0, 0)
