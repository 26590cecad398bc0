"""The demo's application (devstack/load.py) on the session's real cluster: it plays the seed
application, measures its throughput and stalls, and its /health and /stats say so."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import psycopg
import pytest
from helpers import ROOT, TARGET_PASSWORD, TARGET_ROLE, wait_until

from devstack.cluster import free_port
from devstack.load import Load, LoadError, main


def get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def counts(dsn: str) -> tuple[int, int]:
    with psycopg.connect(dsn, password=TARGET_PASSWORD) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM payments), (SELECT count(*) FROM channels)"
        ).fetchone()
    assert row is not None
    return row[0], row[1]


@pytest.fixture
def target(make_target: Any) -> str:
    return make_target()


@pytest.fixture
def load(target: str) -> Any:
    running = Load(target, 8, password=TARGET_PASSWORD)
    yield running
    running.stop()


def test_it_writes_like_the_application_and_reports_its_throughput(target, load):
    payments, channels = counts(target)
    load.start()
    port = load.serve(0)
    wait_until(lambda: load.completed >= 300, "300 transactions")

    status, stats = get(port, "/stats?window=5&series=10")
    assert status == 200
    window = stats["window"]
    assert window["transactions"] > 0 and window["per_second"] > 0
    assert 0 < window["p50_ms"] <= window["p99_ms"] <= window["max_ms"]
    assert window["errors"] == 0 and stats["since_start"]["errors"] == 0
    assert stats["since_start"]["transactions"] >= 300
    assert stats["stall_threshold_seconds"] == 0.1
    assert window["longest_stall_seconds"] < 1
    assert 1 <= len(stats["series"]) <= 10
    assert sum(row["transactions"] for row in stats["series"]) > 0
    status, health = get(port, "/health")
    assert status == 200 and health["healthy"] is True and health["clients"] == 8

    load.stop()
    more_payments, more_channels = counts(target)
    assert more_payments > payments and more_channels >= channels


def test_its_pages_refuse_what_they_do_not_know(load):
    load.start()
    port = load.serve(0)
    status, body = get(port, "/stats?window=soon")
    assert status == 400 and "number" in body["error"]
    assert get(port, "/stats?window=-1")[0] == 400
    status, body = get(port, "/nothing-here")
    assert status == 404 and "/health" in body["error"]


def test_a_lock_on_payments_shows_as_a_stall_and_health_turns_503_then_200(target, load):
    load.start()
    port = load.serve(0)
    wait_until(lambda: load.completed >= 100, "the load running")
    started = load.clock()
    seen: list[tuple[float, int, dict[str, Any]]] = []
    with psycopg.connect(target, password=TARGET_PASSWORD) as conn:
        conn.execute("LOCK TABLE payments IN ACCESS EXCLUSIVE MODE")
        locked = time.monotonic()
        # Hold it for 1.6 s, asking /health all along.
        while time.monotonic() - locked < 1.6:
            status, body = get(port, "/health")
            seen.append((time.monotonic() - locked, status, body))
            time.sleep(0.05)
        conn.rollback()
    wait_until(lambda: get(port, "/health")[0] == 200, "/health back to 200", timeout=10)

    stats = load.stats(since=started)["window"]
    assert 1.3 <= stats["longest_stall_seconds"] <= 2.5, stats
    assert stats["stalled_seconds"] >= 1.3
    unhealthy = [(at, body) for at, status, body in seen if status == 503]
    assert unhealthy, seen
    assert all(at >= 1.0 for at, _ in unhealthy)  # only once nothing completed for 1 s
    assert unhealthy[-1][1]["healthy"] is False
    assert unhealthy[-1][1]["last_transaction_seconds_ago"] > 1.0
    assert seen[0][1] == 200
    assert get(port, "/health")[1]["last_transaction_seconds_ago"] < 1.0
    since_start = load.stats()["since_start"]
    assert since_start["longest_stall_seconds"] >= 1.3 and since_start["stalls"] >= 1


def test_bad_input_is_refused_with_a_clear_message(target, pg_cluster, capsys):
    with pytest.raises(LoadError, match="cannot be parsed"):
        Load("host=127.0.0.1 port", 8)
    with pytest.raises(LoadError, match="names no database"):
        Load("host=127.0.0.1 port=5432", 8)
    for clients in (0, -2, True, "8", 2.5):
        with pytest.raises(LoadError, match="clients must be a positive integer"):
            Load(target, clients)  # type: ignore[arg-type]

    nowhere = f"host=127.0.0.1 port={free_port()} dbname=app user=app"
    with pytest.raises(LoadError, match=r"Cannot connect to app on 127\.0\.0\.1:\d+: .*refused"):
        Load(nowhere, 2).start()
    with pytest.raises(LoadError, match="password authentication failed") as refused:
        Load(target, 2, password="not-the-password").start()
    assert "not-the-password" not in str(refused.value)

    pg_cluster.create_database("load_empty", owner=TARGET_ROLE, replace=True)
    try:
        empty = (
            f"host={pg_cluster.host} port={pg_cluster.port} dbname=load_empty user={TARGET_ROLE}"
        )
        with pytest.raises(LoadError, match="no users, channels and payments tables"):
            Load(empty, 2, password=TARGET_PASSWORD).start()
    finally:
        pg_cluster.execute('DROP DATABASE IF EXISTS "load_empty" WITH (FORCE)')

    running = Load(target, 1, password=TARGET_PASSWORD).start()
    try:
        port = running.serve(0)
        with pytest.raises(LoadError, match=f"Cannot listen on 127.0.0.1:{port}"):
            Load(target, 1, password=TARGET_PASSWORD).serve(port)
        with pytest.raises(LoadError, match="port must be"):
            running.serve(70000)
    finally:
        running.stop()

    assert main(["--dsn", "host=127.0.0.1 port", "--port", "0"]) == 2
    assert "The DSN cannot be parsed" in capsys.readouterr().err
    assert main(["--dsn", target, "--clients", "0", "--port", "0"]) == 2
    assert "clients must be a positive integer, got 0." in capsys.readouterr().err


def test_the_command_serves_health_until_sigterm(target, tmp_path):
    password_file = tmp_path / "password"
    password_file.write_text(TARGET_PASSWORD + "\n")
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "devstack",
            "load",
            "--dsn",
            target,
            "--password-file",
            str(password_file),
            "--clients",
            "2",
            "--port",
            str(port),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def healthy() -> bool:
            try:
                return get(port, "/health")[0] == 200
            except OSError:
                return proc.poll() is not None

        wait_until(healthy, "the load's /health")
        assert proc.poll() is None
        assert get(port, "/stats")[1]["clients"] == 2
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert f"load: 2 clients on {target.split('dbname=')[1].split()[0]}" in out
    assert f"http://127.0.0.1:{port}/health" in out
    assert "load: stopped" in out


def test_health_turns_503_when_a_broken_schema_fails_its_writes_and_200_once_fixed(target, load):
    load.start()
    port = load.serve(0)
    wait_until(lambda: load.completed >= 100, "the load running")
    assert get(port, "/health")[0] == 200
    # A migration that renames a column the application writes: its payments fail, the rest
    # still commits (no stall), and /health says the application cannot do its work.
    with psycopg.connect(target, password=TARGET_PASSWORD) as conn:
        conn.execute("ALTER TABLE payments RENAME COLUMN currency TO currency_code")
    try:
        wait_until(lambda: get(port, "/health")[0] == 503, "/health 503", timeout=10)
        status, body = get(port, "/health")
        assert status == 503 and body["healthy"] is False
        assert "failed" in body["why"] and body["recent_failed_percent"] > 10
        assert body["last_transaction_seconds_ago"] < 1.0  # not a stall: it still commits
        assert "currency" in body["last_error"]
    finally:
        with psycopg.connect(target, password=TARGET_PASSWORD) as conn:
            conn.execute("ALTER TABLE payments RENAME COLUMN currency_code TO currency")
    wait_until(lambda: get(port, "/health")[0] == 200, "/health back to 200", timeout=15)


def test_health_turns_503_when_its_database_is_gone(make_target, pg_cluster):
    name = f"load_gone_{time.monotonic_ns() % 10**6}"
    dsn = make_target(name)
    load = Load(dsn, 2, password=TARGET_PASSWORD)
    try:
        load.start()
        port = load.serve(0)
        wait_until(lambda: load.completed >= 50, "the load running")
        assert get(port, "/health")[0] == 200
        pg_cluster.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        # Its failing transactions first, then nothing completing at all: 503 throughout.
        wait_until(lambda: get(port, "/health")[0] == 503, "/health 503", timeout=10)
        wait_until(
            lambda: "no transaction completed" in get(port, "/health")[1]["why"],
            "no transaction for 1 s",
            timeout=10,
        )
        status, body = get(port, "/health")
        assert status == 503 and body["healthy"] is False
        assert body["errors"] > 0 and body["last_error"]
    finally:
        load.stop()


def test_it_logs_users_in_with_about_one_percent_failing_and_says_so(target, load):
    load.start()
    port = load.serve(0)
    wait_until(lambda: load.auth_failure_rate()[1] >= 400, "400 log-in attempts", timeout=60)
    status, body = get(port, "/auth-failure-rate")
    assert status == 200 and body["window_seconds"] == 60
    assert isinstance(body["value"], float | int) and 0 <= body["value"] < 5
    assert body["attempts"] >= 400
    load.stop()
    # The same attempts in the database, for a custom SQL trigger (the demo's auth rule).
    from devstack.load import AUTH_FAILURE_SQL

    with psycopg.connect(target, password=TARGET_PASSWORD) as conn:
        total, failed = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE NOT ok) FROM auth_attempts"
        ).fetchone()
        rate = conn.execute(AUTH_FAILURE_SQL).fetchone()[0]
    assert total >= 400 and 0 <= failed < total * 0.05
    assert 0 <= float(rate) < 5
