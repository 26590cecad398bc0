"""Data-loss detection on the real cluster: snapshots of real tables, changed the ways revisions
lose data (deleted rows, a blanked column, rewritten values, a dropped column or table), while
the application keeps inserting and updating from another session."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from dashboard.lib import pg
from dashboard.schema import snapshot
from devstack.cluster import Cluster

USERS = 5000


@pytest.fixture
def db(pg_cluster: Cluster) -> Iterator[str]:
    name = f"snap_{uuid.uuid4().hex[:10]}"
    pg_cluster.create_database(name)
    with psycopg.connect(pg_cluster.dsn(name), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE users (id serial PRIMARY KEY, email varchar(200), name text, "
            "plan_id int, created_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(
            "INSERT INTO users (email, name, plan_id) SELECT 'u' || g || '@example.org', "
            "'user ' || g, g %% 3 FROM generate_series(1, %s) g",
            (USERS,),
        )
        conn.execute("CREATE TABLE events (happened text, what text)")  # no key at all
        conn.execute("INSERT INTO events SELECT g::text, 'e' FROM generate_series(1, 300) g")
        conn.execute("ANALYZE")
    yield name
    with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sql(cluster: Cluster, name: str, statement: str) -> None:
    with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type]


def runway(cluster: Cluster, name: str) -> pg.Connection:
    """A connection the way Runway opens one (through dashboard.lib.pg)."""
    return pg.connect(cluster.dsn(name, password=""), cluster.password)


def take(cluster, name, tables=("users", "events"), modes=None):
    with runway(cluster, name) as conn:
        return snapshot.take(conn, list(tables), modes)


def compare(cluster, name, before, expectations=None, app_writes=()):
    with runway(cluster, name) as conn:
        return snapshot.compare(conn, before, expectations, app_writes)


class Application:
    """The application meanwhile: inserts new users and updates plan_id of existing ones from
    its own session until stopped."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.dsn, self.stop, self.writes = cluster.dsn(name), threading.Event(), 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                conn.execute("INSERT INTO users (email, name, plan_id) VALUES ('new@x', 'n', 1)")
                conn.execute(
                    "UPDATE users SET plan_id = plan_id + 1 WHERE id = (random() * %s)::int + 1",
                    (USERS - 1,),
                )
                self.writes += 1

    def wait(self, writes: int) -> None:
        while self.writes < writes and self.thread.is_alive():
            time.sleep(0.01)

    def __enter__(self) -> Application:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


APP = ("users.plan_id",)


@pytest.mark.parametrize("mode", snapshot.MODES)
def test_nothing_changed_but_the_applications_own_writes_is_no_loss(pg_cluster, db, mode):
    with Application(pg_cluster, db) as app:
        before = take(pg_cluster, db, modes={"users": mode, "events": mode})
        app.wait(50)
        result = compare(pg_cluster, db, before, app_writes=APP)
    assert result.lossless, result.summary()
    assert result.summary() == "No data lost in 2 table(s)"
    assert before[0].rows >= USERS and before[0].islands == [(1, before[0].high)]


def test_deleted_rows_are_counted_exactly_and_named_while_inserts_continue(pg_cluster, db):
    before = take(pg_cluster, db, modes={"users": "count"})
    with Application(pg_cluster, db) as app:
        sql(pg_cluster, db, "DELETE FROM users WHERE id % 500 = 0")  # 10 rows
        app.wait(20)  # more inserted than deleted: a bare count would not see it
        result = compare(pg_cluster, db, before, app_writes=APP)
    (finding,) = result.losses
    assert finding.kind == "rows deleted" and finding.table == "users"
    assert finding.rows == 10
    assert finding.keys == [500, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 4500, 5000]
    assert "users: 10 row(s) that existed are gone; keys 500, 1000" in result.summary()


def test_a_blanked_column_shows_in_the_sample_with_its_keys(pg_cluster, db):
    before = take(pg_cluster, db)
    with Application(pg_cluster, db):
        sql(pg_cluster, db, "UPDATE users SET email = NULL")
        result = compare(pg_cluster, db, before, app_writes=APP)
    (finding,) = result.losses
    assert finding.kind == "values changed" and finding.qualified == "users.email"
    assert finding.rows == len(before[0].sample) and len(finding.keys) == snapshot.KEYS_SHOWN


def test_the_applications_columns_are_loss_when_not_declared_as_its_own(pg_cluster, db):
    before = take(pg_cluster, db)
    with Application(pg_cluster, db) as app:
        app.wait(300)  # some of them land in the sample
    result = compare(pg_cluster, db, before)
    assert [f.qualified for f in result.losses] == ["users.plan_id"]


def test_one_rewritten_row_is_found_by_a_full_snapshot_not_always_by_a_sample(pg_cluster, db):
    full = take(pg_cluster, db, modes={"users": "full"})
    sampled = take(pg_cluster, db)
    outside = max(k for k in range(1, USERS + 1) if k not in sampled[0].sample)
    sql(pg_cluster, db, f"UPDATE users SET name = 'x' WHERE id = {outside}")

    assert compare(pg_cluster, db, sampled).lossless  # the sample's blind spot, as documented
    (finding,) = compare(pg_cluster, db, full).losses
    assert finding.qualified == "users.name" and finding.kind == "values changed"
    ((low, high),) = finding.key_ranges
    assert low <= outside <= high and high - low < USERS / 100


def test_a_type_change_that_keeps_the_text_is_no_change(pg_cluster, db):
    before = take(pg_cluster, db, modes={"users": "full"})
    sql(pg_cluster, db, "ALTER TABLE users ALTER COLUMN email TYPE text, ALTER plan_id TYPE bigint")
    assert compare(pg_cluster, db, before).lossless


def test_a_dropped_column_is_loss_unless_a_revision_declares_it(pg_cluster, db):
    before = take(pg_cluster, db)
    sql(pg_cluster, db, "ALTER TABLE users DROP COLUMN name, ADD COLUMN bio text")
    result = compare(pg_cluster, db, before)
    assert [(f.kind, f.qualified) for f in result.losses] == [("column dropped", "users.name")]

    declared = snapshot.expectations_in("# runway: expect drop-column users.name\n", "0021")
    result = compare(pg_cluster, db, before, declared)
    assert result.lossless and result.findings[0].declared_by == "0021"
    assert "declared by 0021" in result.findings[0].sentence()


def test_a_dropped_table_and_deleted_rows_declared_in_the_revision_file(pg_cluster, db, tmp_path):
    before = take(pg_cluster, db)
    sql(pg_cluster, db, "DROP TABLE events")
    sql(pg_cluster, db, "DELETE FROM users WHERE id > 4000")
    script = tmp_path / "0021_cleanup.py"
    script.write_text(
        '"""cleanup"""\n'
        "# runway: expect drop-table events\n"
        "#runway:EXPECT delete users\n"
        "# runway: expect nothing-we-know users\n"  # not a declaration
        "x = 1  # runway: expect delete payments (not at the start of a line)\n"
    )
    declared = snapshot.expectations_of([("0021", script), ("0022", tmp_path / "missing.py")])
    assert [(e.kind, e.name) for e in declared] == [("drop-table", "events"), ("delete", "users")]

    assert {f.kind for f in compare(pg_cluster, db, before).losses} == {
        "table dropped",
        "rows deleted",
    }
    assert compare(pg_cluster, db, before, declared).lossless


def test_a_table_without_an_integer_key_is_counted(pg_cluster, db):
    before = take(pg_cluster, db, tables=["events"])
    assert before[0].key is None and before[0].rows == 300
    sql(pg_cluster, db, "DELETE FROM events WHERE happened::int <= 10")
    (finding,) = compare(pg_cluster, db, before).losses
    assert finding.kind == "rows fewer" and finding.rows == 10
    assert "inserts meanwhile can hide deletions" in finding.sentence()


def test_keys_with_gaps_are_counted_per_segment_and_a_lone_missing_key_named(pg_cluster, db):
    sql(pg_cluster, db, "DELETE FROM users WHERE id % 2 = 0")  # a gap after every key
    before = take(pg_cluster, db, modes={"users": "count"})
    assert before[0].islands is None and sum(v[0] for v in before[0].segments.values()) == 2500
    with Application(pg_cluster, db):
        sql(pg_cluster, db, "DELETE FROM users WHERE id BETWEEN 1001 AND 1100 OR id = 4001")
        (finding,) = compare(pg_cluster, db, before, app_writes=APP).losses
    assert finding.kind == "rows deleted" and finding.rows == 51
    assert all(a <= 1100 and b >= 1001 or a <= 4001 <= b for a, b in finding.key_ranges), (
        finding.key_ranges
    )
    assert 4001 in finding.keys  # alone in its segment: the sum of its keys names it


def test_a_snapshot_survives_its_json_and_compares_the_same(pg_cluster, db):
    before = take(pg_cluster, db, modes={"users": "full"})
    again = [snapshot.TableSnapshot.from_json(s.to_json()) for s in before]
    assert [s.to_json() for s in again] == [s.to_json() for s in before]
    sql(pg_cluster, db, "UPDATE users SET email = lower(email) || 'X' WHERE id = 7")
    assert compare(pg_cluster, db, again).summary() == compare(pg_cluster, db, before).summary()
    assert not compare(pg_cluster, db, again).lossless


def test_names_that_are_not_plain_identifiers_are_quoted(pg_cluster, db):
    sql(pg_cluster, db, 'CREATE TABLE "odd ""name""" (id int PRIMARY KEY, "a; b" text)')
    odd = '"odd ""name"""'
    sql(pg_cluster, db, f"INSERT INTO {odd} SELECT g, 'v' FROM generate_series(1, 9) g")
    before = take(pg_cluster, db, tables=['odd "name"'], modes={'odd "name"': "full"})
    assert before[0].rows == 9 and before[0].columns == ["id", "a; b"]
    assert compare(pg_cluster, db, before).lossless


def test_a_table_that_does_not_exist_yet_is_no_loss(pg_cluster, db):
    before = take(pg_cluster, db, tables=["not_yet"])
    assert before[0].exists is False
    sql(pg_cluster, db, "CREATE TABLE not_yet (id int PRIMARY KEY)")
    assert compare(pg_cluster, db, before).lossless


@pytest.mark.parametrize("low,high", [(1, 4999), (7, 7), (-50, 1_000_003), (10**12, 10**12 + 77)])
def test_a_segments_key_range_is_the_one_width_bucket_cuts(pg_cluster, db, low, high):
    snap = snapshot.TableSnapshot("t", "count", 0, low=low, high=high)
    keys = sorted({low, high, (low + high) // 2, low + 1, high - 1} & set(range(low, high + 1)))
    with runway(pg_cluster, db) as conn:
        for key in keys:
            (segment,) = conn.execute(
                "SELECT width_bucket(%s::bigint, %s::bigint, %s::bigint, %s)",
                (key, low, high + 1, snapshot.SEGMENTS),
            ).fetchone()
            first, last = snapshot._segment_range(snap, segment)
            assert first <= key <= last, (key, segment, first, last)
