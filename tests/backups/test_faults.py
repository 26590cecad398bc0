"""Faults, for real: S3 unreachable, refusing or missing a bucket; a wrong passphrase; a full
disk; pg_dump failing; a worker killed mid-backup. Each ends in a failed backup with a clear
reason, retried only when transient, and leaves no partial object and no open upload."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import connection
from django.utils import timezone
from helpers import (
    ROOT,
    TARGET_PASSWORD,
    TARGET_ROLE,
    make_database,
    nearly_full_disk,
    s3_client,
    scratch_databases,
    wait_until,
)

from dashboard.audit.models import AuditEvent
from dashboard.backups import pipeline, tasks, validation
from dashboard.backups.models import Backup, BackupPolicy, Validation
from dashboard.lib import gpg, pg, s3, storage
from devstack.cluster import Cluster, free_port

pytestmark = pytest.mark.django_db


def attempt(db: Any, *, retries_left: int = 0, **kwargs: Any) -> Backup:
    backup = pipeline.request_backup(None, db, enqueue=False, **kwargs)
    done = pipeline.perform_backup(backup.pk, retries_left=retries_left)
    assert done is not None
    return done


def failure_event(backup: Backup) -> AuditEvent:
    return AuditEvent.objects.get(action="backup.failed", object_id=str(backup.pk))


# --- S3 ---


def test_an_unreachable_s3_endpoint_fails_the_backup_as_transient(
    target: Any, s3_store: str, settings: Any
) -> None:
    settings.RUNWAY_S3_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"
    backup = attempt(target)
    assert backup.state == "failed"
    assert "The S3 endpoint http://127.0.0.1:" in backup.error
    assert "cannot be reached" in backup.error
    assert failure_event(backup).details["transient"] is True


def test_a_transient_failure_with_retries_left_queues_the_backup_for_the_retry(
    target: Any, s3_store: str, s3_endpoint: str, settings: Any
) -> None:
    settings.RUNWAY_S3_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"
    backup = pipeline.request_backup(None, target, enqueue=False)
    with pytest.raises(pipeline.TransientBackupError, match="cannot be reached"):
        pipeline.perform_backup(backup.pk, retries_left=2)
    backup.refresh_from_db()
    assert backup.state == "queued"
    assert backup.error.startswith("Retrying after a transient failure: The S3 endpoint")
    assert AuditEvent.objects.filter(action="backup.retrying", object_id=str(backup.pk)).exists()
    settings.RUNWAY_S3_ENDPOINT_URL = s3_endpoint  # the network is back
    done = pipeline.perform_backup(backup.pk, retries_left=1)
    assert done is not None and done.state == "completed", done and done.error
    assert done.attempts == 2


def test_a_missing_bucket_fails_without_retrying(target: Any, s3_store: str, settings: Any) -> None:
    settings.RUNWAY_BACKUP_STORAGE = "s3://no-such-bucket/runway"
    backup = attempt(target, retries_left=3)  # no TransientBackupError: not worth retrying
    assert backup.state == "failed"
    assert "The bucket 'no-such-bucket' does not exist on http://127.0.0.1:" in backup.error
    assert failure_event(backup).details["transient"] is False


@pytest.fixture(scope="module")
def strict_s3() -> Iterator[str]:
    """A second moto server that checks credentials (none are valid on it)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def listening() -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_until(listening, "moto server with authentication")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_wrong_s3_credentials_fail_without_retrying(
    target: Any, s3_store: str, settings: Any, strict_s3: str
) -> None:
    settings.RUNWAY_S3_ENDPOINT_URL = strict_s3
    backup = attempt(target, retries_left=3)
    assert backup.state == "failed"
    assert "refused the credentials (InvalidAccessKeyId)" in backup.error
    assert "RUNWAY_S3_SECRET_ACCESS_KEY" in backup.error
    assert settings.RUNWAY_S3_SECRET_ACCESS_KEY not in backup.error


# --- Passphrase ---


def test_a_missing_passphrase_fails_the_backup_clearly(
    target: Any, local_store: Path, settings: Any
) -> None:
    settings.RUNWAY_BACKUP_PASSPHRASE = ""
    backup = attempt(target)
    assert backup.state == "failed"
    assert backup.error.startswith("No backup passphrase is set: set RUNWAY_BACKUP_PASSPHRASE")
    assert not local_store.exists() or not list(local_store.rglob("*.gpg*"))


def test_a_wrong_passphrase_fails_the_validation_and_drops_the_scratch_database(
    target: Any, local_store: Path, scratch_server: Cluster, settings: Any
) -> None:
    backup = attempt(target)
    assert backup.state == "completed", backup.error
    settings.RUNWAY_BACKUP_PASSPHRASE = "not the passphrase the backup was sealed with"
    requested = validation.request_validation(None, backup, enqueue=False)
    proof = validation.perform_validation(requested.pk)
    assert proof is not None and proof.state == "failed"
    assert proof.error.startswith("Wrong passphrase: gpg could not decrypt the backup")
    assert settings.RUNWAY_BACKUP_PASSPHRASE not in proof.error
    assert scratch_databases(scratch_server) == []
    assert AuditEvent.objects.get(action="validation.failed").details["error"] == proof.error


# --- Local disk ---


def test_a_full_local_store_fails_the_backup_and_leaves_no_partial_file(
    target: Any, local_store: Path, settings: Any
) -> None:
    with nearly_full_disk(local_store) as disk:
        backup = attempt(target, compression="none", retries_left=3)
        left = sorted(str(p.relative_to(disk)) for p in disk.rglob("*"))
    assert backup.state == "failed"
    assert backup.error.startswith(f"The backup store {local_store}/analyticbot is full")
    assert "the partial file was removed" in backup.error
    assert left == ["analyticbot", "filler"]
    assert backup.storage_url == "" and backup.upload_id == ""


# --- pg_dump and the source database ---


def test_pg_dump_refused_a_table_fails_with_its_reason(
    target: Any, local_store: Path, pg_cluster: Cluster
) -> None:
    dbname = str(psycopg.conninfo.conninfo_to_dict(target.dsn)["dbname"])
    pg_cluster.execute("CREATE TABLE payroll (id int)", dbname=dbname)  # owned by postgres
    backup = attempt(target, retries_left=3)
    assert backup.state == "failed"
    reason = "pg_dump failed: query failed: ERROR: permission denied for table payroll"
    assert backup.error == reason
    assert list(local_store.rglob("*.gpg*")) == []


def test_an_unreachable_database_is_transient(local_store: Path) -> None:
    db = make_database(dsn=f"host=127.0.0.1 port={free_port()} dbname=x user={TARGET_ROLE}")
    backup = attempt(db)
    assert backup.state == "failed"
    assert backup.error.startswith("The database server cannot be reached")
    assert failure_event(backup).details["transient"] is True


def test_a_wrong_database_password_is_not_transient(
    make_target: Any, local_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNWAY_DB_TEST_WRONG_PASSWORD", "nope")
    db = make_database(dsn=make_target(), password_ref="env:RUNWAY_DB_TEST_WRONG_PASSWORD")
    backup = attempt(db, retries_left=3)
    assert backup.state == "failed"
    assert backup.error.startswith("The server refused the user name or password")
    assert "nope" not in backup.error


def test_a_missing_critical_table_is_named(target: Any, local_store: Path) -> None:
    target.critical_tables = ["users", "invoices"]
    target.save()
    backup = attempt(target)
    assert backup.state == "failed"
    assert "The critical table(s) invoices do not exist" in backup.error


# --- Retries are declared for transient errors only ---


def test_the_tasks_retry_only_transient_failures() -> None:
    for task in (tasks.run_backup, tasks.run_validation):
        assert task.autoretry_for == (pipeline.TransientBackupError,)
        assert task.max_retries == 3 and task.acks_late is True
    transient = [
        s3.S3Unreachable("x"),
        pg.ToolFailed("pg_dump", "x", transient=True),
        psycopg.OperationalError("connection refused"),
    ]
    permanent = [
        s3.BucketMissing("x"),
        s3.BadCredentials("x"),
        storage.StorageFull("x"),
        gpg.WrongPassphrase("x"),
        gpg.NoPassphrase("x"),
        pg.explain_tool("pg_dump", 1, "pg_dump: error: permission denied for table t"),
        psycopg.OperationalError('password authentication failed for user "x"'),
        ValueError("a bug"),
    ]
    assert [pipeline.describe(exc)[1] for exc in transient] == [True] * len(transient)
    assert [pipeline.describe(exc)[1] for exc in permanent] == [False] * len(permanent)


# --- A worker that dies mid-backup ---


def a_dead_workers_backup(db: Any, bucket: str, endpoint: str) -> tuple[Backup, str]:
    """The state a killed worker leaves: running, a stale heartbeat, an open upload."""
    backup = Backup.objects.create(database=db, state="running", attempts=1)
    key = f"runway/analyticbot/20250101T000000Z-{backup.pk}.dump.zst.gpg"
    upload = s3_client(endpoint).create_multipart_upload(Bucket=bucket, Key=key)
    long_ago = timezone.now() - timedelta(minutes=10)
    Backup.objects.filter(pk=backup.pk).update(
        storage_url=f"s3://{bucket}/{key}",
        upload_id=upload["UploadId"],
        started_at=long_ago,
        heartbeat_at=long_ago,
        progress_bytes=5_000_000,
    )
    return backup, key


def test_a_redelivered_task_fails_a_dead_workers_backup_and_aborts_its_upload(
    target: Any, s3_store: str, s3_endpoint: str, s3_bucket: str
) -> None:
    backup, _ = a_dead_workers_backup(target, s3_bucket, s3_endpoint)
    reaped = pipeline.perform_backup(backup.pk)  # what the redelivered task does
    assert reaped is not None and reaped.state == "failed"
    assert reaped.error.startswith("The worker died mid-backup (no heartbeat since")
    assert reaped.upload_id == "" and reaped.storage_url == ""
    assert s3_client(s3_endpoint).list_multipart_uploads(Bucket=s3_bucket).get("Uploads") is None
    assert failure_event(reaped).details["reaped"] is True


def test_a_backup_with_a_fresh_heartbeat_is_left_to_its_worker(
    target: Any, s3_store: str, s3_endpoint: str, s3_bucket: str
) -> None:
    backup, _ = a_dead_workers_backup(target, s3_bucket, s3_endpoint)
    Backup.objects.filter(pk=backup.pk).update(heartbeat_at=timezone.now())
    assert pipeline.perform_backup(backup.pk) is None
    assert pipeline.reap_stale() == []
    assert Backup.objects.get(pk=backup.pk).state == "running"


def test_a_dead_validation_is_failed_and_its_scratch_database_dropped(
    target: Any, local_store: Path, scratch_server: Cluster
) -> None:
    backup = attempt(target)
    proof = Validation.objects.create(backup=backup, state="running", attempts=1)
    name = validation.scratch_name(proof)
    scratch_server.execute(f'CREATE DATABASE "{name}"')
    long_ago = timezone.now() - timedelta(minutes=10)
    Validation.objects.filter(pk=proof.pk).update(
        scratch_database=name, started_at=long_ago, heartbeat_at=long_ago
    )
    [reaped] = validation.reap_stale()
    assert reaped.state == "failed" and reaped.error.startswith("The worker died mid-validation")
    assert scratch_databases(scratch_server) == []


class SlowLink:
    """A TCP relay to the S3 endpoint that carries at most ``rate`` bytes a second upstream:
    a slow network in front of the real server, so that a backup is still uploading when the
    test kills its worker."""

    def __init__(self, target_port: int, rate: int) -> None:
        self.target_port, self.rate = target_port, rate
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, slow: bool) -> None:
        try:
            while data := src.recv(16384):
                dst.sendall(data)
                if slow:
                    time.sleep(len(data) / self.rate)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.server.close()


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    """A dedicated worker on the ``faults`` queue, in its own process group."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "dashboard", "worker", "-Q", "faults"]
            + ["--pool", "solo", "--loglevel", "INFO", "--without-gossip", "--without-mingle"]
            + ["--without-heartbeat", "-n", f"faults-{time.monotonic_ns()}@%h"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_until(lambda: log.read_text().count("ready.") >= 1 or proc.poll() is not None, "worker")
    assert proc.poll() is None, log.read_text()[-2000:]
    return proc


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_backup_leaves_no_completed_backup_and_no_open_upload(
    target: Any,
    s3_store: str,
    s3_endpoint: str,
    s3_bucket: str,
    worker_env: dict[str, str],
    pg_cluster: Cluster,
) -> None:
    # About 8 MB to upload through a 1 MB/s link: the backup is mid-upload for seconds.
    dbname = str(psycopg.conninfo.conninfo_to_dict(target.dsn)["dbname"])
    with psycopg.connect(target.dsn, password=TARGET_PASSWORD) as conn:
        conn.execute(
            "CREATE TABLE ballast AS SELECT g AS id, md5(random()::text) || md5(random()::text) "
            "AS noise FROM generate_series(1, 200000) g"
        )
    link = SlowLink(int(s3_endpoint.rsplit(":", 1)[1]), rate=1_000_000)
    BackupPolicy.objects.create(database=target, storage_url=s3_store)
    env = {**worker_env, "RUNWAY_S3_ENDPOINT_URL": f"http://127.0.0.1:{link.port}"}
    log = Path(tempfile.mkdtemp(prefix="runway-faults-")) / "worker.log"
    worker = start_worker(env, log)
    try:
        backup = pipeline.request_backup(None, target, enqueue=False)
        tasks.run_backup.apply_async((backup.pk,), queue="faults")

        def uploading() -> bool:
            row = Backup.objects.get(pk=backup.pk)
            return row.progress_bytes > 0 and bool(row.upload_id)

        wait_until(uploading, "the backup to be uploading", timeout=60)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
        time.sleep(0.5)  # let the relay pass on the broken connection
        backup.refresh_from_db()
        client = s3_client(s3_endpoint)
        assert backup.state == "running"  # never completed
        assert client.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0
        assert len(client.list_multipart_uploads(Bucket=s3_bucket)["Uploads"]) == 1
        assert not [
            line
            for line in subprocess.run(
                ["pgrep", "-af", "pg_dump"], capture_output=True, text=True
            ).stdout.splitlines()
            if dbname in line
        ]

        # Ten minutes later (the heartbeat says so), a new worker runs the periodic reaper.
        Backup.objects.filter(pk=backup.pk).update(
            heartbeat_at=timezone.now() - timedelta(minutes=10)
        )
        worker = start_worker(env, log)
        tasks.reap_stale_backups.apply_async(queue="faults")
        wait_until(lambda: Backup.objects.get(pk=backup.pk).is_done, "the reaper", timeout=60)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(20)
        link.close()
    backup.refresh_from_db()
    assert backup.state == "failed"
    assert backup.error.startswith("The worker died mid-backup (no heartbeat since")
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads") is None
    assert client.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0
    actions = list(
        AuditEvent.objects.filter(object_type="backup", object_id=str(backup.pk))
        .order_by("id")
        .values_list("action", flat=True)
    )
    assert actions == [
        "backup.requested",
        "backup.started",
        "backup.failed",
        "backup.leftovers_removed",
    ]


@pytest.mark.django_db(transaction=True)
def test_a_backup_reaped_while_it_runs_stops_and_removes_its_upload(
    target: Any, s3_store: str, s3_endpoint: str, s3_bucket: str, settings: Any
) -> None:
    """The reaper may be wrong about a slow worker; the worker then never completes the row."""
    with psycopg.connect(target.dsn, password=TARGET_PASSWORD) as conn:
        conn.execute(
            "CREATE TABLE ballast AS SELECT g AS id, md5(random()::text) AS noise "
            "FROM generate_series(1, 100000) g"
        )
    link = SlowLink(int(s3_endpoint.rsplit(":", 1)[1]), rate=500_000)
    settings.RUNWAY_S3_ENDPOINT_URL = f"http://127.0.0.1:{link.port}"
    settings.RUNWAY_BACKUP_STALE_SECONDS = 0
    backup = pipeline.request_backup(None, target, enqueue=False)

    def run() -> None:
        try:
            pipeline.perform_backup(backup.pk)
        finally:
            connection.close()

    runner = threading.Thread(target=run)
    runner.start()
    try:
        wait_until(lambda: bool(Backup.objects.get(pk=backup.pk).upload_id), "the upload")
        # The reaper takes a row only if its heartbeat did not move between its read and its
        # update (a live worker's heartbeat may win that race): ask again until it takes it.
        reaped: list[Any] = []

        def reap() -> bool:
            reaped.extend(pipeline.reap_stale())
            return bool(reaped)

        wait_until(reap, "the reaper to take the running backup")
        assert [b.pk for b in reaped] == [backup.pk]
    finally:
        runner.join(60)
        link.close()
    backup.refresh_from_db()
    assert backup.state == "failed"
    assert backup.error.startswith("The worker died mid-backup")
    client = s3_client(s3_endpoint)
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads") is None
    assert client.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0
