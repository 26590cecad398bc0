"""Pre-migration gates, each tested by creating its condition for real: a transaction left open in
another connection, a lock holder and a waiter, old and unvalidated backups, pg_isready against the
live cluster and a closed port, the data directory's real disk, probe commands, a cluster whose
WAL archiving fails, rehearsal rows; then the whole run on the real Celery worker (killed mid-run
and reaped; two racing for one run) and the ``preflight`` command."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from helpers import (
    TARGET_PASSWORD,
    TARGET_ROLE,
    backup_outcome,
    make_database,
    validation_outcome,
    wait_until,
    worker_process,
)

from dashboard.audit.chain import verify
from dashboard.audit.models import AuditEvent
from dashboard.backups.models import Backup, BackupPolicy, Validation
from dashboard.jobs import lifecycle as jobs
from dashboard.lib import pg
from dashboard.schema import gates
from dashboard.schema.gates import (
    backup_gate,
    disk_gate,
    local_data_directory,
    lock_gate,
    long_transactions_gate,
    ready_gate,
    rehearsal_gate,
    wal_gate,
)
from dashboard.schema.models import GateRun, Rehearsal
from devstack.cluster import Cluster, free_port

PENDING = ["0017", "0018", "0019", "0020"]


# --- Helpers and fixtures ---


def session(dsn: str, **kwargs: Any) -> psycopg.Connection:
    """Another client of the target, as the application would connect."""
    return psycopg.connect(f"{dsn} password={TARGET_PASSWORD}", **kwargs)


@pytest.fixture
def dsn(make_target: Callable[..., str]) -> str:
    return make_target()


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection]:
    """Runway's own connection to the target (as its owner, app_owner: not a superuser)."""
    with pg.connect(dsn, TARGET_PASSWORD) as c:
        yield c


@pytest.fixture
def superuser_conn(pg_cluster: Cluster, dsn: str) -> Iterator[psycopg.Connection]:
    dbname = pg.parse_dsn(dsn)["dbname"]
    with psycopg.connect(pg_cluster.dsn(dbname), autocommit=True) as c:
        yield c


def backup(db: Any, *, hours_ago: float = 1.0, **kwargs: Any) -> Backup:
    """A completed backup row as the pipeline leaves it, taken ``hours_ago``."""
    taken = timezone.now() - timedelta(hours=hours_ago)
    kwargs.update(backup_outcome(kwargs.pop("state", "completed")))
    kwargs.setdefault("reason", "scheduled")
    kwargs.setdefault("storage_url", f"file:///srv/backups/{db.name}/{taken:%Y%m%dT%H%M%S}.dump")
    kwargs.setdefault("size_bytes", 1_250_000)
    kwargs.setdefault("sha256", "ab" * 32)
    kwargs.setdefault("revision", "0016")
    kwargs.setdefault("row_counts", {"users": 200, "payments": 340})
    kwargs.setdefault("duration_s", 12.5)
    kwargs.setdefault("created_at", taken)
    kwargs.setdefault("started_at", taken)
    kwargs.setdefault("finished_at", taken + timedelta(seconds=kwargs["duration_s"]))
    return Backup.objects.create(database=db, **kwargs)


def validation(of: Backup, state: str = "passed", **kwargs: Any) -> Validation:
    """A finished restore validation of ``of``."""
    done = (of.finished_at or timezone.now()) + timedelta(minutes=5)
    kwargs.setdefault("created_at", done - timedelta(minutes=1))
    kwargs.setdefault("started_at", done - timedelta(minutes=1))
    kwargs.setdefault("finished_at", done)
    kwargs.setdefault("scratch_database", f"runway_scratch_{of.pk}")
    kwargs.setdefault("restore_s", 3.2)
    kwargs.setdefault("queries_s", 0.4)
    kwargs.setdefault("checks", [{"name": "row count users", "ok": state == "passed"}])
    if state == "failed":
        kwargs.setdefault("error", "row count of users: expected 200, found 0")
    return Validation.objects.create(backup=of, **validation_outcome(state), **kwargs)


def rehearsed(db: Any, revisions: list[str], state: str = "succeeded", **kwargs: Any) -> Rehearsal:
    """A rehearsal row as the rehearsal worker leaves it."""
    finished = timezone.now() - timedelta(minutes=30)
    kwargs.setdefault(
        "timings",
        [
            {"revision": r, "seconds": 0.5 + i, "lock_wait_ms": 12.0 * i, "ok": True, "error": ""}
            for i, r in enumerate(revisions)
        ],
    )
    kwargs.setdefault("requested_at", finished - timedelta(minutes=2))
    kwargs.setdefault("finished_at", None if state in ("queued", "running") else finished)
    kwargs.setdefault("method", "template")
    kwargs.setdefault("from_revisions", ["0016"])
    kwargs.setdefault("to_revision", revisions[-1] if revisions else "")
    kwargs.setdefault("copy_seconds", 0.8)
    kwargs.setdefault("total_seconds", sum(t["seconds"] for t in kwargs["timings"]))
    kwargs.setdefault(
        "longest_lock_wait_ms", max((t["lock_wait_ms"] for t in kwargs["timings"]), default=0)
    )
    return Rehearsal.objects.create(database=db, revisions=revisions, state=state, **kwargs)


def by_name(results: list[Any]) -> dict[str, Any]:
    return {(r["name"] if isinstance(r, dict) else r.name): r for r in results}


# --- Backup ---


@pytest.mark.django_db
class TestBackupGate:
    def test_it_fails_without_any_backup(self):
        result = backup_gate(make_database())
        assert result.verdict == "fail"
        assert result.summary == "No completed backup of analyticbot exists."

    def test_it_passes_with_a_fresh_validated_backup(self):
        db = make_database()
        taken = backup(db, hours_ago=3)
        proof = validation(taken)
        result = backup_gate(db)
        assert result.verdict == "pass", result.summary
        assert f"Backup #{taken.pk}, taken 3 h ago" in result.summary
        assert result.evidence["validated"]["id"] == taken.pk
        assert result.evidence["validated"]["validation"]["id"] == proof.pk
        assert 3 * 3600 - 60 < result.evidence["validated"]["age_s"] < 3 * 3600 + 60
        assert result.evidence["rpo_hours"] == 24
        json.dumps(result.to_json())

    def test_it_fails_when_the_newest_validated_backup_is_older_than_the_policy(self):
        db = make_database()
        old = backup(db, hours_ago=30)
        validation(old)
        result = backup_gate(db)
        assert result.verdict == "fail"
        assert f"#{old.pk}, is 30 h old; the policy allows 24 h" in result.summary

    def test_the_policy_of_the_database_sets_the_limit(self):
        db = make_database()
        BackupPolicy.objects.create(database=db, rpo_hours=48)
        validation(backup(db, hours_ago=30))
        assert backup_gate(db).verdict == "pass"

    def test_it_fails_when_the_validation_failed(self):
        db = make_database()
        validation(backup(db, hours_ago=2), state="failed")
        result = backup_gate(db)
        assert result.verdict == "fail"
        assert "failed its restore validation: row count of users" in result.summary

    def test_it_fails_when_the_backup_was_never_validated(self):
        db = make_database()
        backup(db, hours_ago=2)
        result = backup_gate(db)
        assert result.verdict == "fail"
        assert "was never validated" in result.summary

    def test_a_later_passing_revalidation_counts_and_a_later_failing_one_voids(self):
        db = make_database()
        taken = backup(db, hours_ago=2)
        validation(taken, state="failed")
        validation(taken, created_at=timezone.now(), finished_at=timezone.now())
        assert backup_gate(db).verdict == "pass"
        validation(taken, state="failed", created_at=timezone.now(), finished_at=timezone.now())
        assert backup_gate(db).verdict == "fail"

    def test_a_newer_backup_that_failed_its_validation_is_a_warning(self):
        db = make_database()
        good = backup(db, hours_ago=5)
        validation(good)
        bad = backup(db, hours_ago=1)
        validation(bad, state="failed")
        result = backup_gate(db)
        assert result.verdict == "warn"
        assert (
            f"#{good.pk}" in result.summary and f"newer backup #{bad.pk} failed" in result.summary
        )

    def test_failed_and_pruned_backups_do_not_count(self):
        db = make_database()
        validation(backup(db, hours_ago=1, state="pruned"))
        backup(db, hours_ago=1, state="failed", error="pg_dump failed")
        assert backup_gate(db).summary == "No completed backup of analyticbot exists."


# --- pg_isready ---


def test_pg_isready_passes_against_the_live_server(conn, dsn):
    result = ready_gate(dsn, conn.info.server_version)
    assert result.verdict == "pass", result.summary
    assert result.evidence["exit_code"] == 0
    assert "accepting connections" in result.evidence["output"]


def test_pg_isready_fails_against_a_closed_port():
    port = free_port()
    result = ready_gate(f"host=127.0.0.1 port={port} dbname=x user=x")
    assert result.verdict == "fail"
    assert result.evidence["exit_code"] == 2
    assert f"127.0.0.1:{port} - no response" in result.summary


def test_pg_isready_names_a_malformed_dsn():
    result = ready_gate("host=127.0.0.1 dbname")
    assert result.verdict == "fail"
    assert "cannot be parsed" in result.summary


# --- Disk ---


def df_percent(path: str) -> float:
    """What df itself reports for the file system holding ``path``."""
    out = subprocess.run(["df", "--output=pcent", path], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1].rstrip("%"))


def test_the_superuser_sees_the_data_directory_and_it_is_this_servers(superuser_conn, pg_cluster):
    path, why = local_data_directory(superuser_conn)
    assert (path, why) == (str(pg_cluster.datadir), "")


def test_the_disk_of_the_data_directory_is_measured_for_real(superuser_conn, settings):
    path, _ = local_data_directory(superuser_conn)
    result = disk_gate(path)
    percent = result.evidence["percent"]
    assert result.evidence["source"] == "data_directory"
    assert abs(percent - df_percent(path)) <= 1  # df rounds up
    expected = "fail" if percent > 80 else "warn" if percent > 70 else "pass"
    assert result.verdict == expected
    assert f"is {percent:g}% full" in result.summary


@pytest.mark.parametrize(
    ("warn_above", "fail_above", "verdict"), [(100, 100, "pass"), (0, 100, "warn"), (0, 0, "fail")]
)
def test_the_disk_limits_come_from_the_settings(
    superuser_conn, settings, warn_above, fail_above, verdict
):
    settings.RUNWAY_DISK_WARN_PERCENT, settings.RUNWAY_DISK_FAIL_PERCENT = warn_above, fail_above
    path, _ = local_data_directory(superuser_conn)
    result = disk_gate(path)
    assert result.verdict == verdict
    assert result.evidence["fail_above"] == fail_above


def test_a_role_that_may_not_read_the_data_directory_gives_an_unknown_warning(conn):
    path, why = local_data_directory(conn)
    assert path is None
    assert "app_owner may not read data_directory" in why
    result = disk_gate(path, "", unseen=why)
    assert result.verdict == "warn"
    assert result.summary.startswith("Disk use of the data directory is unknown:")
    assert "pg_read_all_settings" in result.summary
    assert "no disk probe is configured" in result.summary


def test_a_folder_of_another_server_is_not_taken_for_this_ones(superuser_conn, tmp_path):
    assert pg.runs_from(superuser_conn, str(tmp_path)) is False  # no postmaster.pid there
    (tmp_path / "postmaster.pid").write_text("1\n/elsewhere\n1700000000\n5432\n")
    assert pg.runs_from(superuser_conn, str(tmp_path)) is False


@pytest.mark.parametrize(
    ("probe", "verdict", "percent"),
    [
        ("echo 85%", "fail", 85.0),
        ("echo 42%", "pass", 42.0),
        ("printf 'Use%%\\n 75%%\\n'", "warn", 75.0),
    ],
)
def test_a_probe_gives_the_percentage(probe, verdict, percent):
    result = disk_gate(None, probe, unseen="not visible")
    assert result.verdict == verdict
    assert result.evidence["percent"] == percent
    assert result.evidence["source"] == "probe"


def test_a_df_probe_reads_a_real_file_system():
    result = disk_gate(None, "df --output=pcent /")
    assert abs(result.evidence["percent"] - df_percent("/")) <= 1  # others write meanwhile


@pytest.mark.parametrize(
    ("probe", "why"),
    [
        ("false", "the disk probe failed (exit 1)"),
        ("echo nothing to see", "the disk probe printed no percentage"),
        ("/no/such/probe", "the disk probe could not start"),
        ("echo 'unclosed", "the disk probe cannot be parsed"),
        ("echo 5%\x00", "the disk probe could not start (embedded null byte)"),
        ("sh -c 'echo 99% >&2; exit 3'", "the disk probe failed (exit 3: 99%)"),
    ],
)
def test_a_failing_probe_is_an_unknown_warning_never_a_pass(probe, why):
    result = disk_gate(None, probe, unseen="the role may not read data_directory")
    assert result.verdict == "warn"
    assert "unknown" in result.summary and why in result.summary
    assert "the role may not read data_directory" in result.summary


def test_a_probe_that_hangs_is_stopped(monkeypatch):
    monkeypatch.setattr(gates, "PROBE_TIMEOUT", 0.5)
    result = disk_gate(None, "sleep 30")
    assert result.verdict == "warn"
    assert "did not finish within 0.5 s" in result.summary


def test_a_probe_does_not_see_the_workers_secrets(monkeypatch):
    monkeypatch.setenv("RUNWAY_BACKUP_PASSPHRASE", "do-not-leak")
    result = disk_gate(None, "sh -c 'env; echo 10%'")
    assert result.verdict == "pass"
    assert "do-not-leak" not in result.evidence["output"]


# --- Long transactions ---


def test_a_transaction_left_open_in_another_connection_warns(conn, dsn, settings):
    settings.RUNWAY_LONG_TRANSACTION_SECONDS = 1
    # The cluster's superuser set the fresh target up; its session may take a moment to leave.
    wait_until(lambda: long_transactions_gate(conn).verdict == "pass", "a quiet database")
    with session(dsn, application_name="nightly-report") as other:
        other.execute("SELECT count(*) FROM users")  # opens a transaction, left idle in it
        wait_until(
            lambda: long_transactions_gate(conn).evidence["transactions"], "the transaction to age"
        )
        result = long_transactions_gate(conn)
        (row,) = result.evidence["transactions"]
        assert row["pid"] == other.info.backend_pid
        assert row["usename"] == TARGET_ROLE
        assert row["application_name"] == "nightly-report"
        assert row["state"] == "idle in transaction"
        assert row["age_s"] >= 1
        assert row["query"] == "SELECT count(*) FROM users"
        assert f"pid {other.info.backend_pid} (app_owner, idle in transaction)" in result.summary
        assert result.evidence["threshold_s"] == 1
    assert long_transactions_gate(conn).verdict == "pass"


def test_only_transactions_older_than_the_threshold_count(conn, dsn):
    with session(dsn) as other:
        other.execute("SELECT 1")
        assert long_transactions_gate(conn, threshold_s=300).verdict == "pass"
        assert "No transaction has been open longer than 5 min." in (
            long_transactions_gate(conn, threshold_s=300).summary
        )


def test_the_query_shown_is_cut_to_200_characters(conn, dsn):
    with session(dsn) as other:
        other.execute("SELECT 1 /* " + "x" * 300 + " */")
        # Wait for the transaction itself (a session of another role also makes a warning).
        wait_until(
            lambda: long_transactions_gate(conn, 0.2).evidence["transactions"], "the transaction"
        )
        (row,) = long_transactions_gate(conn, 0.2).evidence["transactions"]
        assert len(row["query"]) == 200


def test_sessions_of_other_roles_that_cannot_be_inspected_are_a_warning(conn, superuser_conn):
    superuser_conn.execute("SELECT 1")
    result = long_transactions_gate(conn)
    assert result.verdict == "warn"
    assert result.evidence["hidden_sessions"] == 1
    assert "cannot be inspected: grant pg_read_all_stats to app_owner" in result.summary


# --- Locks ---


def test_a_session_holding_a_lock_on_a_touched_table_fails_the_gate(conn, dsn):
    assert lock_gate(conn, ["users"]).verdict == "pass"
    with session(dsn) as holder:
        holder.execute("LOCK TABLE users IN ACCESS SHARE MODE")
        result = lock_gate(conn, ["users"])
        assert result.verdict == "fail"
        (row,) = result.evidence["sessions"]
        assert (row["pid"], row["table"], row["mode"], row["granted"]) == (
            holder.info.backend_pid,
            "public.users",
            "AccessShareLock",
            True,
        )
        assert row["state"] == "idle in transaction"
        assert row["query"] == "LOCK TABLE users IN ACCESS SHARE MODE"
        assert row["xact_age_s"] is not None
        assert f"pid {holder.info.backend_pid} (app_owner, idle in transaction" in result.summary
        assert "holds AccessShareLock on public.users" in result.summary
        assert result.summary.startswith("1 session holds or waits for locks on the tables")
        # Other tables are not held.
        assert lock_gate(conn, ["plans"]).verdict == "pass"
    assert lock_gate(conn, ["users"]).verdict == "pass"


def test_a_running_query_that_holds_a_brief_lock_is_a_warning_not_a_failure(conn, dsn):
    with session(dsn) as reader:
        reader.autocommit = True  # a plain read: no transaction left open around it
        running = threading.Thread(
            target=lambda: reader.execute("SELECT pg_sleep(2) FROM users LIMIT 1")
        )
        running.start()
        try:
            wait_until(lambda: pg.lock_holders(conn, ["users"]), "the query to take its lock")
            result = lock_gate(conn, ["users"])
        finally:
            running.join(10)
    assert result.verdict == "warn"
    assert "1 running query holds brief locks on public.users" in result.summary


def test_a_session_waiting_for_a_lock_is_named_with_who_blocks_it(conn, dsn):
    with session(dsn) as holder, session(dsn) as waiter:
        holder_pid, waiter_pid = holder.info.backend_pid, waiter.info.backend_pid
        holder.execute("SELECT id FROM users ORDER BY id LIMIT 1 FOR UPDATE")
        waiting = threading.Thread(
            target=lambda: waiter.execute("LOCK TABLE public.users IN ACCESS EXCLUSIVE MODE")
        )
        waiting.start()
        try:
            wait_until(
                lambda: any(not r["granted"] for r in pg.lock_holders(conn, ["users"])),
                "the waiter to queue",
            )
            result = lock_gate(conn, ["public.users"])
        finally:
            holder.rollback()
            waiting.join(10)
            waiter.rollback()
    assert result.verdict == "fail"
    rows = {(r["pid"], r["mode"], r["granted"]) for r in result.evidence["sessions"]}
    assert (holder_pid, "RowShareLock", True) in rows
    assert (waiter_pid, "AccessExclusiveLock", False) in rows
    (queued,) = [r for r in result.evidence["sessions"] if not r["granted"]]
    assert queued["blocked_by"] == [holder_pid]
    assert "2 sessions hold or wait for locks" in result.summary
    assert f"pid {waiter_pid}" in result.summary and "waits for" in result.summary


def test_no_tables_and_tables_that_do_not_exist_yet_pass(conn):
    result = lock_gate(conn, [])
    assert (result.verdict, result.summary) == (
        "pass",
        "The pending revisions touch no existing table.",
    )
    result = lock_gate(conn, ["feature_flags", "audit.nothing"])
    assert result.verdict == "pass"
    assert "None of the tables the revisions touch exists yet" in result.summary


def test_our_own_locks_do_not_count(dsn):
    with pg.connect(dsn, TARGET_PASSWORD, autocommit=False) as own:
        own.execute("LOCK TABLE users IN ACCESS SHARE MODE")
        assert lock_gate(own, ["users"]).verdict == "pass"
        own.rollback()


# --- WAL ---


ARCHIVER = {
    "archived_count": 10,
    "last_archived_wal": "00000001000000000000000A",
    "last_archived_time": "2026-11-24T10:00:00+00:00",
    "failed_count": 0,
    "last_failed_wal": None,
    "last_failed_time": None,
    "stats_reset": "2026-11-01T00:00:00+00:00",
}


def wal(**overrides: Any) -> dict[str, Any]:
    shape = {
        "wal_level": "replica",
        "archive_mode": "on",
        "archive_command_set": True,
        "in_recovery": False,
        "archiver": dict(ARCHIVER),
    }
    return shape | overrides


@pytest.mark.parametrize(
    ("shape", "verdict", "words"),
    [
        (wal(), "pass", "WAL archiving works: 00000001000000000000000A was archived"),
        (wal(archive_mode="off"), "warn", "no point-in-time recovery"),
        ({}, "warn", "status is unknown"),
        (
            wal(archive_mode=None, settings_error="permission denied for view pg_settings"),
            "warn",
            "unknown: permission denied",
        ),
        (wal(archive_command_set=False), "fail", "never archived"),
        (
            wal(archiver=None, archiver_error="permission denied for view pg_stat_archiver"),
            "warn",
            "state is unknown: permission denied",
        ),
        (
            wal(archiver=ARCHIVER | {"last_archived_wal": None, "last_archived_time": None}),
            "warn",
            "no segment has been archived yet",
        ),
        (
            wal(
                archiver=ARCHIVER
                | {
                    "failed_count": 3,
                    "last_failed_wal": "00000001000000000000000B",
                    "last_failed_time": "2026-11-24T11:00:00+00:00",
                }
            ),
            "fail",
            "WAL archiving is failing: 00000001000000000000000B failed",
        ),
        (
            wal(
                archiver=ARCHIVER
                | {
                    "failed_count": 3,
                    "last_failed_wal": "000000010000000000000009",
                    "last_failed_time": "2026-11-24T09:00:00+00:00",
                }
            ),
            "pass",
            "works",
        ),
    ],
)
def test_wal_gate_shapes(shape, verdict, words):
    result = wal_gate(shape)
    assert result.verdict == verdict
    assert words in result.summary


def test_the_test_clusters_wal_archiving_is_off(conn):
    result = wal_gate(pg.read_wal(conn))
    assert result.verdict == "warn"
    assert result.evidence["archive_mode"] == "off"


@pytest.fixture(scope="module")
def archiving_cluster() -> Iterator[Cluster]:
    """A private cluster whose archive_command fails (``false``)."""
    base = Path(tempfile.mkdtemp(prefix="runway-archiving-"))
    base.chmod(0o755)
    cluster = Cluster(root=base / "pg", port=free_port(), password="archiving-secret")
    cluster.init()
    with (cluster.datadir / "postgresql.auto.conf").open("a") as conf:
        conf.write("archive_mode = on\narchive_command = 'false'\n")
    cluster.start()
    cluster.wait_ready()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_failing_wal_archiving_fails_the_gate_until_it_archives_again(archiving_cluster):
    with psycopg.connect(archiving_cluster.dsn(), autocommit=True) as su:
        su.execute("CREATE TABLE filler AS SELECT generate_series(1, 1000) AS n")
        su.execute("SELECT pg_switch_wal()")
        wait_until(lambda: wal_gate(pg.read_wal(su)).verdict == "fail", "the archiver to fail")
        result = wal_gate(pg.read_wal(su))
        assert "WAL archiving is failing" in result.summary
        assert "nothing was ever archived" in result.summary
        assert result.evidence["archiver"]["failed_count"] >= 1
        su.execute("ALTER SYSTEM SET archive_command = 'true'")
        su.execute("SELECT pg_reload_conf()")
        wait_until(lambda: wal_gate(pg.read_wal(su)).verdict == "pass", "the archiver to recover")


# --- Rehearsal ---


@pytest.mark.django_db
class TestRehearsalGate:
    def test_nothing_pending_passes(self):
        assert rehearsal_gate(make_database(), []).verdict == "pass"

    def test_no_rehearsal_fails(self):
        result = rehearsal_gate(make_database(), PENDING)
        assert (result.verdict, result.summary) == (
            "fail",
            "No rehearsal of 0017, 0018, 0019, 0020 yet.",
        )

    def test_a_succeeded_rehearsal_of_the_same_revisions_passes_with_its_timings(self):
        db = make_database()
        done = rehearsed(db, PENDING)
        result = rehearsal_gate(db, PENDING)
        assert result.verdict == "pass", result.summary
        assert result.summary == (
            f"Rehearsal #{done.pk} ran 0017, 0018, 0019, 0020 on a copy (0017 0.5 s, 0018 1.5 s, "
            "0019 2.5 s, 0020 3.5 s); the longest lock wait: 36 ms."
        )
        assert result.evidence["rehearsal"]["id"] == done.pk
        assert result.evidence["rehearsal"]["longest_lock_wait_ms"] == 36

    def test_a_rehearsal_of_other_revisions_does_not_count(self):
        db = make_database()
        other = rehearsed(db, ["0017", "0018"])
        result = rehearsal_gate(db, PENDING)
        assert result.verdict == "fail"
        assert f"the last one (#{other.pk}) ran 0017, 0018" in result.summary

    def test_a_failed_rehearsal_fails_naming_the_revision(self):
        db = make_database()
        timings = [
            {"revision": "0017", "seconds": 0.4, "lock_wait_ms": 0, "ok": True, "error": ""},
            {
                "revision": "0018",
                "seconds": 5.0,
                "lock_wait_ms": 5000,
                "ok": False,
                "error": "canceling statement due to lock timeout",
            },
        ]
        rehearsed(db, PENDING, state="failed", timings=timings, error="0018 failed")
        result = rehearsal_gate(db, PENDING)
        assert result.verdict == "fail"
        assert "failed at 0018: canceling statement due to lock timeout." in result.summary

    def test_a_succeeded_rehearsal_missing_a_revision_fails(self):
        db = make_database()
        timings = [{"revision": "0017", "seconds": 0.4, "lock_wait_ms": 0, "ok": True}]
        rehearsed(db, PENDING, timings=timings)
        assert "failed at 0018" in rehearsal_gate(db, PENDING).summary

    def test_a_running_rehearsal_is_not_done_yet(self):
        db = make_database()
        running = rehearsed(db, PENDING, state="running", timings=[])
        result = rehearsal_gate(db, PENDING)
        assert result.verdict == "fail"
        assert f"(#{running.pk}) is running, not done yet" in result.summary

    def test_the_newest_finished_rehearsal_decides(self):
        db = make_database()
        rehearsed(db, PENDING, requested_at=timezone.now() - timedelta(days=2))
        rehearsed(db, PENDING, state="failed", timings=[], error="copy failed: disk full")
        result = rehearsal_gate(db, PENDING)
        assert result.verdict == "fail"
        assert "copy failed: disk full" in result.summary

    @pytest.mark.parametrize("state", ["interrupted", "cancelled"])
    def test_half_a_rehearsal_fails_even_after_an_older_success(self, state):
        db = make_database()
        rehearsed(db, PENDING, requested_at=timezone.now() - timedelta(days=2))
        ran = [  # its first two revisions ran, each fine, before it ended
            {"revision": r, "seconds": 0.5, "lock_wait_ms": 0.0, "ok": True, "error": ""}
            for r in PENDING[:2]
        ]
        half = rehearsed(db, PENDING, state=state, timings=ran, error="Interrupted: gone.")
        result = rehearsal_gate(db, PENDING)
        assert result.verdict == "fail"
        assert result.summary == (
            f"The rehearsal of 0017, 0018, 0019, 0020 (#{half.pk}) was {state} before it "
            "finished (Interrupted: gone): rehearse again."
        )
        assert result.evidence["rehearsal"]["state"] == state


# --- All of them ---


@pytest.mark.django_db
def test_evaluate_runs_every_gate_in_order_over_one_connection(dsn):
    db = make_database(dsn=dsn, disk_probe="echo 91%")
    results = gates.evaluate(db, revisions=PENDING, tables=["users", "public.payments"])
    assert [r.name for r in results] == list(gates.ORDER)
    found = {r.name: r.verdict for r in results}
    assert found == {
        "backup": "fail",
        "ready": "pass",
        "disk": "fail",  # app_owner cannot see the data directory; the probe says 91%
        "long_transactions": "pass",
        "locks": "pass",
        "wal": "warn",
        "rehearsal": "fail",
    }
    assert by_name(results)["locks"].evidence["tables"] == ["public.users", "public.payments"]
    assert gates.overall(results) == "fail"
    assert gates.overall([r for r in results if r.verdict != "fail"]) == "warn"
    assert gates.overall([]) == "pass"


@pytest.mark.django_db
def test_an_unreachable_database_fails_the_gates_that_need_it_without_raising():
    db = make_database(dsn=f"host=127.0.0.1 port={free_port()} dbname=x user={TARGET_ROLE}")
    results = by_name(gates.evaluate(db, revisions=PENDING, tables=["users"]))
    for name in ("long_transactions", "locks", "wal"):
        assert results[name].verdict == "fail"
        assert "The database server cannot be reached" in results[name].summary
    assert results["ready"].verdict == "fail"
    assert results["disk"].verdict == "warn"
    assert "Runway could not connect" in results["disk"].summary


@pytest.mark.django_db
def test_an_unresolvable_password_is_the_reason(dsn):
    db = make_database(dsn=dsn, password_ref="env:RUNWAY_DB_NO_SUCH_VARIABLE")
    results = by_name(gates.evaluate(db, revisions=[], tables=[]))
    assert "RUNWAY_DB_NO_SUCH_VARIABLE is not set" in results["locks"].summary
    assert results["ready"].verdict == "pass"  # pg_isready needs no password


# --- Runs ---


@pytest.mark.django_db
def test_a_gate_run_is_recorded_with_its_results_and_audited(dsn, engineer):
    db = make_database(dsn=dsn)
    run = gates.request_gate_run(engineer, db, revisions=PENDING, tables=["users"], enqueue=False)
    assert (run.state, run.revisions, run.tables) == ("queued", PENDING, ["users"])
    requested = AuditEvent.objects.get(action="schema.gates_requested")
    assert requested.actor_name == "erin"
    assert requested.details == {"gate_run": run.pk, "revisions": PENDING, "tables": ["users"]}
    done = jobs.run("gate_run", run.pk)
    assert isinstance(done, GateRun)
    # The gates said fail; the run itself succeeded: it ran them all.
    assert (done.state, done.verdict, done.error) == ("succeeded", "fail", "")
    assert done.attempts == 1 and done.worker and done.started_at <= done.finished_at
    assert [r["name"] for r in done.results] == list(gates.ORDER)
    assert set(done.results[0]) == {"name", "title", "verdict", "summary", "evidence"}
    assert by_name(done.results)["locks"]["evidence"]["requested"] == ["users"]  # the row's
    ran = AuditEvent.objects.get(action="schema.gates_run")
    assert ran.details["verdict"] == "fail" and ran.details["gate_run"] == run.pk
    assert ran.details["state"] == "succeeded" and ran.details["gates"]["ready"] == "pass"
    assert jobs.run("gate_run", run.pk) is None  # ended: delivered twice, run once
    assert verify().ok
    stored = json.dumps(done.results) + json.dumps(list(AuditEvent.objects.values("details")))
    assert TARGET_PASSWORD not in stored


@pytest.mark.django_db
def test_a_run_whose_heart_stopped_is_interrupted_by_the_reaper_and_a_live_one_is_not(dsn):
    db = make_database(dsn=dsn)
    old = timezone.now() - timedelta(seconds=61)
    dead = gates.request_gate_run(None, db, revisions=[], tables=[], enqueue=False)
    live = gates.request_gate_run(None, db, revisions=[], tables=[], enqueue=False)
    GateRun.objects.filter(pk=dead.pk).update(state="running", started_at=old, heartbeat_at=old)
    GateRun.objects.filter(pk=live.pk).update(state="running", heartbeat_at=timezone.now())
    assert jobs.run("gate_run", live.pk) is None  # a redelivery never takes a running run
    reaped = jobs.reap(kinds=["gate_run"])
    assert [r.job.pk for r in reaped] == [dead.pk]
    dead.refresh_from_db()
    assert (dead.state, dead.verdict, dead.results) == ("interrupted", "", [])
    assert GateRun.objects.get(pk=live.pk).state == "running"
    assert AuditEvent.objects.filter(action="gate_run.interrupted").count() == 1
    assert jobs.run("gate_run", dead.pk) is None  # nor an interrupted one


@pytest.mark.django_db
def test_a_run_nobody_took_is_interrupted_saying_so(dsn):
    db = make_database(dsn=dsn)
    run = gates.request_gate_run(None, db, revisions=[], tables=[], enqueue=False)
    GateRun.objects.filter(pk=run.pk).update(requested_at=timezone.now() - timedelta(minutes=11))
    jobs.reap(kinds=["gate_run"])
    run.refresh_from_db()
    assert run.state == "interrupted" and "no worker took it within 10 minutes" in run.error


@pytest.mark.django_db
def test_an_unexpected_error_fails_the_run_instead_of_leaving_it_running(dsn, monkeypatch):
    def broken(*args: Any) -> None:
        raise RuntimeError("a bug in a gate")

    monkeypatch.setattr(gates, "rehearsal_gate", broken)  # our own code, at one seam
    db = make_database(dsn=dsn)
    run = gates.request_gate_run(None, db, revisions=PENDING, tables=[], enqueue=False)
    done = jobs.run("gate_run", run.pk)
    assert isinstance(done, GateRun)
    assert (done.state, done.verdict, done.results) == ("failed", "", [])
    assert done.finished_at is not None
    assert done.error == "The gates could not run: a bug in a gate"
    assert AuditEvent.objects.get(action="schema.gates_run").details["state"] == "failed"


@pytest.mark.django_db(transaction=True)
def test_the_worker_runs_the_gates_and_sees_a_lock_holder(celery_worker, dsn, engineer):
    db = make_database(dsn=dsn)
    with session(dsn, application_name="slow-report") as holder:
        holder_pid = holder.info.backend_pid
        holder.execute("LOCK TABLE users IN ACCESS SHARE MODE")
        run = gates.request_gate_run(engineer, db, revisions=PENDING, tables=["users"])
        wait_until(lambda: GateRun.objects.get(pk=run.pk).is_done, "the worker's gate run", 60)
        holder.rollback()
    run.refresh_from_db()
    assert run.state == "succeeded", run.error
    assert run.verdict == "fail"
    results = by_name(run.results)
    assert results["ready"]["verdict"] == "pass"
    assert results["locks"]["verdict"] == "fail"
    (row,) = results["locks"]["evidence"]["sessions"]
    assert (row["pid"], row["application_name"]) == (holder_pid, "slow-report")


def looking_again(cluster: Cluster, dsn: str) -> bool:
    """The gates' session has read the lock holders once and waits to look again."""
    with psycopg.connect(cluster.dsn(pg.parse_dsn(dsn)["dbname"])) as conn:
        found = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'runway-gates' "
            "AND state = 'idle' AND query LIKE '%pg_locks%'"
        ).fetchone()
    return bool(found and found[0])


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_run_is_reaped_and_its_run_has_no_verdict(
    worker_env, dsn, pg_cluster, tmp_path, settings
):
    db = make_database(dsn=dsn)
    queue = f"kill-gates-{os.getpid()}"
    env = {**worker_env, "RUNWAY_LOCK_RECHECK_SECONDS": "600"}  # the lock gate looks again late
    with session(dsn, application_name="batch-job") as holder:
        holder.execute("LOCK TABLE users IN ACCESS SHARE MODE")  # and stays idle in it
        with worker_process(env, queue, tmp_path / "worker.log") as proc:
            settings.RUNWAY_JOB_QUEUE = queue
            run = gates.request_gate_run(None, db, revisions=PENDING, tables=["users"])
            wait_until(lambda: looking_again(pg_cluster, dsn), "the lock gate to wait", 60)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        holder.rollback()
    run.refresh_from_db()
    assert run.state == "running"  # nobody has said otherwise yet
    timeout = jobs.KINDS["gate_run"].stale_seconds()
    assert (
        jobs.reap(now=run.heartbeat_at + timedelta(seconds=timeout / 2), kinds=["gate_run"]) == []
    )
    reaped = jobs.reap(now=run.heartbeat_at + timedelta(seconds=timeout + 1), kinds=["gate_run"])
    assert [r.job.pk for r in reaped] == [run.pk]
    run.refresh_from_db()
    # Nothing half-done is listed as good: no verdict, no results.
    assert (run.state, run.verdict, run.results) == ("interrupted", "", [])
    assert not AuditEvent.objects.filter(action="schema.gates_run").exists()
    call_command("verify_audit")


@pytest.mark.django_db(transaction=True)
def test_two_workers_given_the_same_gate_run_run_it_once(worker_env, dsn, tmp_path):
    from dashboard.jobs.tasks import run_job

    db = make_database(dsn=dsn)
    queue = f"race-gates-{os.getpid()}"
    with (
        worker_process(worker_env, queue, tmp_path / "a.log"),
        worker_process(worker_env, queue, tmp_path / "b.log"),
    ):
        run = gates.request_gate_run(None, db, revisions=PENDING, tables=["users"], enqueue=False)
        for _ in range(4):  # the same message delivered four times, to two workers
            run_job.apply_async(("gate_run", run.pk), queue=queue)

        def delivered() -> int:
            logs = (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
            return logs.count("succeeded in")

        wait_until(lambda: delivered() == 4, "four deliveries", 60)
    run.refresh_from_db()
    assert run.state == "succeeded" and run.attempts == 1
    assert AuditEvent.objects.filter(action="schema.gates_run").count() == 1


# --- manage.py preflight ---


def run_preflight(*args: str, **options: Any) -> tuple[int, str]:
    from io import StringIO

    out = StringIO()
    try:
        call_command("preflight", *args, stdout=out, **options)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue()
    return 0, out.getvalue()


@pytest.mark.django_db
def test_preflight_names_the_known_databases_for_an_unknown_one():
    make_database(name="billing")
    with pytest.raises(
        CommandError, match=r"No managed database named 'nope' \(registered: billing\)"
    ):
        call_command("preflight", "nope")


@pytest.mark.django_db
def test_preflight_prints_every_gate_and_exits_1_when_one_fails(checked_target):
    code, out = run_preflight("analyticbot")
    assert code == 1
    assert "analyticbot (production): pending 0017, 0018, 0019, 0020" in out
    lines = out.splitlines()
    for title in gates.TITLES.values():
        assert any(title in line for line in lines), title
    assert any(line.startswith("FAIL") and "Recent validated backup" in line for line in lines)
    assert any(line.startswith("PASS") and "pg_isready" in line for line in lines)
    assert "Overall: FAIL (gate run #" in out
    assert '"exit_code": 0' not in out  # evidence only with --verbosity 2
    assert GateRun.objects.get(database=checked_target).verdict == "fail"


@pytest.mark.django_db
def test_preflight_exits_0_when_nothing_fails_and_shows_evidence_at_verbosity_2(checked_target):
    validation(backup(checked_target, hours_ago=2))
    from dashboard.schema.analysis import pending_and_tables

    revisions, _ = pending_and_tables(checked_target)
    rehearsed(checked_target, revisions)
    code, out = run_preflight("analyticbot", verbosity=2)
    assert code == 0, out
    assert "Overall: WARN" in out  # WAL archiving is off and the disk is unknown: warnings
    assert '"exit_code": 0' in out


@pytest.mark.django_db
def test_preflight_json_is_the_list_of_results(checked_target):
    code, out = run_preflight("analyticbot", format="json")
    assert code == 1
    results = json.loads(out)
    assert [r["name"] for r in results] == list(gates.ORDER)
    assert all(r["verdict"] in ("pass", "warn", "fail") for r in results)


def test_a_lock_released_before_the_second_look_does_not_fail_the_gate(conn, dsn, settings):
    from dashboard.schema.gates import _settled_lock_gate

    settings.RUNWAY_LOCK_RECHECK_SECONDS = 1
    with session(dsn) as holder:
        holder.execute("LOCK TABLE users IN ACCESS SHARE MODE")
        releasing = threading.Timer(0.3, holder.rollback)
        releasing.start()
        result = _settled_lock_gate(conn, ["users"])
        releasing.join()
    assert result.verdict == "pass"
    assert "was released" in result.summary
    assert result.evidence["first_look"]["sessions"][0]["state"] == "idle in transaction"


def test_a_lock_still_held_at_the_second_look_fails(conn, dsn, settings):
    from dashboard.schema.gates import _settled_lock_gate

    settings.RUNWAY_LOCK_RECHECK_SECONDS = 1
    with session(dsn) as holder:
        holder.execute("LOCK TABLE users IN ACCESS SHARE MODE")
        assert _settled_lock_gate(conn, ["users"]).verdict == "fail"
