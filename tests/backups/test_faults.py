"""Faults, for real: S3 unreachable, refusing or missing a bucket; a wrong passphrase; a full
disk; pg_dump failing; a worker killed mid-backup and mid-restore; two workers given one backup.
Each ends in a failed (or, for a dead worker, interrupted) job with a clear reason, retried only
when transient, and leaves no partial object, no open upload and no scratch database."""

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
from django.core.management import call_command
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
    worker_process,
)

from dashboard.audit.models import AuditEvent
from dashboard.backups import pipeline, retention, status, tasks, validation
from dashboard.backups.models import Backup, BackupPolicy, Validation
from dashboard.jobs import lifecycle as jobs
from dashboard.lib import gpg, pg, s3, storage
from dashboard.schema import gates
from devstack.cluster import Cluster, free_port

pytestmark = pytest.mark.django_db


def attempt(db: Any, **kwargs: Any) -> Backup:
    """Request a backup and run its job here, again each time a transient failure queues it
    again (as the workers would, without the backoff), until it ends."""
    backup = pipeline.request_backup(None, db, enqueue=False, **kwargs)
    for _ in range(pipeline.BACKUP.max_attempts):
        done = jobs.run("backup", backup.pk)
        assert isinstance(done, Backup)
        if done.is_done:
            return done
    raise AssertionError(f"backup #{backup.pk} is still {done.state}")


def failure_event(backup: Backup) -> AuditEvent:
    return AuditEvent.objects.get(action="backup.failed", object_id=str(backup.pk))


def requeued(backup: Backup) -> int:
    return AuditEvent.objects.filter(action="backup.requeued", object_id=str(backup.pk)).count()


def trail(obj: Any) -> list[str]:
    events = AuditEvent.objects.filter(object_type=obj._meta.model_name, object_id=str(obj.pk))
    return list(events.order_by("id").values_list("action", flat=True))


# --- S3 ---


def test_an_unreachable_s3_endpoint_is_retried_then_the_backup_fails(
    target: Any, s3_store: str, settings: Any
) -> None:
    settings.RUNWAY_S3_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"
    backup = attempt(target)
    assert (backup.state, backup.attempts) == ("failed", pipeline.BACKUP.max_attempts)
    assert backup.error.startswith("Gave up after 4 attempts: The S3 endpoint http://127.0.0.1:")
    assert "cannot be reached" in backup.error
    assert requeued(backup) == 3
    assert backup.storage_url == "" and backup.upload_id == ""


def test_a_transient_failure_queues_the_backup_again_and_the_retry_completes(
    target: Any, s3_store: str, s3_endpoint: str, settings: Any
) -> None:
    settings.RUNWAY_S3_ENDPOINT_URL = f"http://127.0.0.1:{free_port()}"
    backup = pipeline.request_backup(None, target, enqueue=False)
    jobs.run("backup", backup.pk)
    backup.refresh_from_db()
    assert backup.state == "queued" and not backup.completed
    assert backup.error.startswith("Attempt 1 failed, retrying: The S3 endpoint")
    assert requeued(backup) == 1
    settings.RUNWAY_S3_ENDPOINT_URL = s3_endpoint  # the network is back
    done = jobs.run("backup", backup.pk)
    assert isinstance(done, Backup) and done.completed, done and done.error
    assert done.attempts == 2 and done.error == ""


def test_a_missing_bucket_fails_without_retrying(target: Any, s3_store: str, settings: Any) -> None:
    settings.RUNWAY_BACKUP_STORAGE = "s3://no-such-bucket/runway"
    backup = attempt(target)  # not worth retrying
    assert (backup.state, backup.attempts) == ("failed", 1)
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
    backup = attempt(target)
    assert (backup.state, backup.attempts) == ("failed", 1)
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
    assert backup.completed, backup.error
    settings.RUNWAY_BACKUP_PASSPHRASE = "not the passphrase the backup was sealed with"
    requested = validation.request_validation(None, backup, enqueue=False)
    proof = jobs.run("validation", requested.pk)
    assert isinstance(proof, Validation) and (proof.state, proof.passed) == ("failed", None)
    assert proof.error.startswith("Wrong passphrase: gpg could not decrypt the backup")
    assert settings.RUNWAY_BACKUP_PASSPHRASE not in proof.error
    assert scratch_databases(scratch_server) == []
    assert AuditEvent.objects.get(action="validation.failed").details["error"] == proof.error


# --- Local disk ---


def test_a_full_local_store_fails_the_backup_and_leaves_no_partial_file(
    target: Any, local_store: Path, settings: Any
) -> None:
    with nearly_full_disk(local_store) as disk:
        backup = attempt(target, compression="none")
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
    backup = attempt(target)
    assert (backup.state, backup.attempts) == ("failed", 1)
    reason = "pg_dump failed: query failed: ERROR: permission denied for table payroll"
    assert backup.error == reason
    assert list(local_store.rglob("*.gpg*")) == []


def test_an_unreachable_database_is_transient(local_store: Path) -> None:
    db = make_database(dsn=f"host=127.0.0.1 port={free_port()} dbname=x user={TARGET_ROLE}")
    backup = attempt(db)
    assert backup.state == "failed" and requeued(backup) == 3
    assert backup.error.startswith("Gave up after 4 attempts: The database server cannot be")


def test_a_wrong_database_password_is_not_transient(
    make_target: Any, local_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNWAY_DB_TEST_WRONG_PASSWORD", "nope")
    db = make_database(dsn=make_target(), password_ref="env:RUNWAY_DB_TEST_WRONG_PASSWORD")
    backup = attempt(db)
    assert (backup.state, backup.attempts) == ("failed", 1)
    assert backup.error.startswith("The server refused the user name or password")
    assert "nope" not in backup.error


def test_a_missing_critical_table_is_named(target: Any, local_store: Path) -> None:
    target.critical_tables = ["users", "invoices"]
    target.save()
    backup = attempt(target)
    assert backup.state == "failed"
    assert "The critical table(s) invoices do not exist" in backup.error


# --- Retries are declared for transient errors only ---


def test_the_kinds_retry_only_transient_failures_and_declare_their_timeouts() -> None:
    for name in ("backup", "validation"):
        kind = jobs.KINDS[name]
        assert (kind.max_attempts, kind.retry_backoff) == (4, 30)  # three retries, as before
        assert kind.stale_seconds() == 300 and kind.heartbeat_every == pipeline.PROGRESS_EVERY_S
        assert kind.on_interrupted is not None
    assert not [name for name in dir(tasks) if name.startswith(("run_", "reap"))]
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


def test_the_old_stale_setting_sets_both_kinds_timeout() -> None:
    code = (
        "import django; django.setup(); from dashboard.jobs import lifecycle as jobs; "
        "print(jobs.KINDS['backup'].stale_seconds(), jobs.KINDS['validation'].stale_seconds(), "
        "jobs.KINDS['connection_check'].stale_seconds())"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "dashboard.settings"}
    old = {**env, "RUNWAY_BACKUP_STALE_SECONDS": "900"}
    both = {**old, "RUNWAY_JOB_STALE_SECONDS": "validation=60"}
    seen = [
        subprocess.run(
            [sys.executable, "-c", code], env=e, cwd=ROOT, capture_output=True, text=True
        ).stdout.split()
        for e in (env, old, both)
    ]
    assert seen == [
        ["300.0", "300.0", "60.0"],
        ["900.0", "900.0", "60.0"],
        ["900.0", "60.0", "60.0"],
    ]


# --- A worker that dies mid-backup ---


def a_dead_workers_backup(db: Any, bucket: str, endpoint: str) -> tuple[Backup, str]:
    """The state a killed worker leaves: running, a stale heartbeat, an open upload."""
    backup = Backup.objects.create(database=db, state="running", attempts=1, worker="w1:7")
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


def test_the_reaper_interrupts_a_dead_workers_backup_and_aborts_its_upload(
    target: Any, s3_store: str, s3_endpoint: str, s3_bucket: str
) -> None:
    backup, _ = a_dead_workers_backup(target, s3_bucket, s3_endpoint)
    assert jobs.run("backup", backup.pk) is None  # a redelivered message never runs it twice
    [reaped] = jobs.reap(kinds=["backup"])
    assert reaped.job.pk == backup.pk
    backup.refresh_from_db()
    assert backup.state == "interrupted" and not backup.completed
    assert backup.error.startswith("Interrupted: its worker (w1:7) stopped reporting")
    assert backup.upload_id == "" and backup.storage_url == ""
    assert s3_client(s3_endpoint).list_multipart_uploads(Bucket=s3_bucket).get("Uploads") is None
    assert trail(backup)[-2:] == ["backup.interrupted", "backup.leftovers_removed"]


def test_a_backup_with_a_fresh_heartbeat_is_left_to_its_worker(
    target: Any, s3_store: str, s3_endpoint: str, s3_bucket: str
) -> None:
    backup, _ = a_dead_workers_backup(target, s3_bucket, s3_endpoint)
    Backup.objects.filter(pk=backup.pk).update(heartbeat_at=timezone.now())
    assert jobs.run("backup", backup.pk) is None
    assert jobs.reap(kinds=["backup"]) == []
    assert Backup.objects.get(pk=backup.pk).state == "running"


def test_a_dead_validation_is_interrupted_and_its_scratch_database_dropped(
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
    [reaped] = jobs.reap(kinds=["validation"])
    proof.refresh_from_db()
    assert reaped.job.pk == proof.pk and proof.state == "interrupted"
    assert proof.error.startswith("Interrupted: its worker") and proof.passed is None
    assert scratch_databases(scratch_server) == []
    assert trail(proof)[-2:] == ["validation.interrupted", "validation.scratch_dropped"]


class SlowLink:
    """A TCP relay to the S3 endpoint that carries at most ``rate`` bytes a second one way
    (``upstream``: what the client sends, an upload; else what it receives, a download): a
    slow network in front of the real server, so that a backup is still uploading, or a
    validation still restoring, when the test kills its worker."""

    def __init__(self, target_port: int, rate: int, *, upstream: bool = True) -> None:
        self.target_port, self.rate, self.upstream = target_port, rate, upstream
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets += [client, upstream]
            for src, dst, slow in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(
                    target=self._pump, args=(src, dst, slow == self.upstream), daemon=True
                ).start()

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
        """No new connections, and the open ones cut (a request still on the wire fails)."""
        self.server.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def start_worker(env: dict[str, str], log: Path, queue: str) -> subprocess.Popen:
    """A dedicated worker on its own queue, in its own process group (killing the group kills
    the pipeline's programs with it, as a machine that dies would)."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "dashboard", "worker", "-Q", queue]
            + ["--pool", "solo", "--loglevel", "INFO", "--without-gossip", "--without-mingle"]
            + ["--without-heartbeat", "-n", f"{queue}-{time.monotonic_ns()}@%h"],
            cwd=ROOT,
            env={**env, "RUNWAY_JOB_QUEUE": queue},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_until(lambda: log.read_text().count("ready.") >= 1 or proc.poll() is not None, "worker")
    assert proc.poll() is None, log.read_text()[-2000:]
    return proc


def kill(worker: subprocess.Popen) -> None:
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(10)


def ballast(db: Any, rows: int) -> None:
    """About 70 bytes a row of incompressible data in ``db``."""
    with psycopg.connect(db.dsn, password=TARGET_PASSWORD) as conn:
        conn.execute(
            "CREATE TABLE ballast AS SELECT g AS id, md5(random()::text) || md5(random()::text) "
            f"AS noise FROM generate_series(1, {rows}) g"
        )


def nothing_half_done_is_good(db: Any, *, backup: Backup | None = None) -> None:
    """The status page's rule, the RPO and the backup gate see no good backup of ``db``."""
    seen = status.status_of(db)
    assert not seen.met and not seen.validated
    gate = gates.backup_gate(db)
    assert gate.verdict == "fail", gate.summary
    if backup is not None and not backup.completed:
        assert seen.last is None and retention.newest_validated(db) is None
        assert not Backup.objects.completed().filter(pk=backup.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_backup_is_interrupted_by_the_reaper_and_its_upload_aborted(
    target: Any,
    s3_store: str,
    s3_endpoint: str,
    s3_bucket: str,
    worker_env: dict[str, str],
    pg_cluster: Cluster,
    settings: Any,
) -> None:
    # About 14 MB to upload through a 1 MB/s link: the backup is mid-upload for seconds.
    dbname = str(psycopg.conninfo.conninfo_to_dict(target.dsn)["dbname"])
    ballast(target, 200_000)
    link = SlowLink(int(s3_endpoint.rsplit(":", 1)[1]), rate=1_000_000)
    BackupPolicy.objects.create(database=target, storage_url=s3_store)
    queue = f"kill-backup-{os.getpid()}"
    settings.RUNWAY_JOB_QUEUE = queue
    log = Path(tempfile.mkdtemp(prefix="runway-faults-")) / "worker.log"
    worker = start_worker({**worker_env, "RUNWAY_S3_ENDPOINT_URL": link.endpoint}, log, queue)
    try:
        backup = pipeline.request_backup(None, target)  # through the lifecycle, on commit

        def uploading() -> bool:
            row = Backup.objects.get(pk=backup.pk)
            return row.progress_bytes > 0 and bool(row.upload_id)  # progress came with a beat

        wait_until(uploading, "the backup to be uploading", timeout=60)
        kill(worker)
        time.sleep(0.5)  # let the relay pass on the broken connection
    finally:
        if worker.poll() is None:
            kill(worker)
        link.close()
    backup.refresh_from_db()
    client = s3_client(s3_endpoint)
    assert backup.state == "running"  # never succeeded; nobody has said otherwise yet
    assert client.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0
    assert len(client.list_multipart_uploads(Bucket=s3_bucket)["Uploads"]) == 1
    assert not [
        line
        for line in subprocess.run(
            ["pgrep", "-af", "pg_dump"], capture_output=True, text=True
        ).stdout.splitlines()
        if dbname in line
    ]
    nothing_half_done_is_good(target, backup=backup)

    # Within its timeout the reaper leaves it alone; past it, it interrupts and cleans up.
    timeout = jobs.KINDS["backup"].stale_seconds()
    assert backup.heartbeat_at is not None
    assert (
        jobs.reap(now=backup.heartbeat_at + timedelta(seconds=timeout - 5), kinds=["backup"]) == []
    )
    reaped = jobs.reap(now=backup.heartbeat_at + timedelta(seconds=timeout + 1), kinds=["backup"])
    assert [r.job.pk for r in reaped] == [backup.pk]
    backup.refresh_from_db()
    assert backup.state == "interrupted" and backup.outcome == "interrupted"
    assert backup.error.startswith("Interrupted: its worker (")
    assert backup.upload_id == "" and backup.storage_url == ""
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads") is None
    assert client.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0
    nothing_half_done_is_good(target, backup=backup)
    assert trail(backup) == [
        "backup.requested",
        "backup.started",
        "backup.interrupted",
        "backup.leftovers_removed",
    ]
    call_command("verify_audit")


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_restore_is_interrupted_and_its_scratch_database_dropped(
    target: Any,
    s3_store: str,
    s3_endpoint: str,
    worker_env: dict[str, str],
    pg_cluster: Cluster,
    owner_may_create_databases: None,
    settings: Any,
) -> None:
    ballast(target, 200_000)
    backup = attempt(target)  # here, at full speed; it is the restore that will be slow
    assert backup.completed, backup.error
    # The worker reads it back through a 1 MB/s link: mid-restore for seconds.
    link = SlowLink(int(s3_endpoint.rsplit(":", 1)[1]), rate=1_000_000, upstream=False)
    queue = f"kill-validation-{os.getpid()}"
    settings.RUNWAY_JOB_QUEUE = queue
    log = Path(tempfile.mkdtemp(prefix="runway-faults-")) / "worker.log"
    worker = start_worker({**worker_env, "RUNWAY_S3_ENDPOINT_URL": link.endpoint}, log, queue)
    try:
        proof = validation.request_validation(None, backup)  # through the lifecycle
        name = validation.scratch_name(proof)

        def restoring() -> bool:
            row = Validation.objects.get(pk=proof.pk)
            return row.state == "running" and name in scratch_databases(pg_cluster)

        wait_until(restoring, "the validation to be restoring", timeout=60)
        time.sleep(1)  # pg_restore has started writing
        kill(worker)
    finally:
        if worker.poll() is None:
            kill(worker)
        link.close()
    proof.refresh_from_db()
    assert proof.state == "running" and proof.passed is None
    assert name in scratch_databases(pg_cluster)  # left behind by the dead worker
    nothing_half_done_is_good(target)
    assert status.status_of(target).reasons == [
        f"The newest completed backup (#{backup.pk}) is being validated "
        "(the policy is met once the restore passes)."
    ]

    timeout = jobs.KINDS["validation"].stale_seconds()
    assert proof.heartbeat_at is not None
    reaped = jobs.reap(
        now=proof.heartbeat_at + timedelta(seconds=timeout + 1), kinds=["validation"]
    )
    assert [r.job.pk for r in reaped] == [proof.pk]
    proof.refresh_from_db()
    assert proof.state == "interrupted" and proof.outcome == "interrupted"
    assert scratch_databases(pg_cluster) == []
    nothing_half_done_is_good(target)
    seen = status.status_of(target)
    assert seen.last == backup and seen.validation_text == "validation interrupted"
    assert "was interrupted before it could prove anything" in seen.reasons[0]
    assert "had its validation interrupted" in gates.backup_gate(target).summary
    assert trail(proof) == [
        "validation.requested",
        "validation.started",
        "validation.interrupted",
        "validation.scratch_dropped",
    ]
    call_command("verify_audit")


@pytest.mark.django_db(transaction=True)
def test_two_workers_given_the_same_backup_take_it_once(
    target: Any, worker_env: dict[str, str], tmp_path: Path, settings: Any
) -> None:
    from dashboard.jobs.tasks import run_job

    queue = f"race-backup-{os.getpid()}"
    store = tmp_path / "store"
    BackupPolicy.objects.create(database=target, storage_url=f"file://{store}")
    with (
        worker_process(worker_env, queue, tmp_path / "a.log"),
        worker_process(worker_env, queue, tmp_path / "b.log"),
    ):
        settings.RUNWAY_JOB_QUEUE = queue
        backup = pipeline.request_backup(None, target, enqueue=False)
        for _ in range(4):  # the same message delivered four times, to two workers
            run_job.apply_async(("backup", backup.pk), queue=queue)

        def delivered() -> int:
            logs = (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
            return logs.count("succeeded in")

        wait_until(lambda: delivered() == 4, "four deliveries", timeout=60)
    backup.refresh_from_db()
    assert backup.completed and backup.attempts == 1, backup.error
    assert trail(backup) == ["backup.requested", "backup.started", "backup.completed"]
    assert [p.name for p in store.rglob("*.gpg")] == [Path(backup.storage_url).name]


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
    # An 8 MiB part takes 80 s on this link: the worker must stop at its next heartbeat after
    # the reaper took the job, not once the part on the wire has gone.
    link = SlowLink(int(s3_endpoint.rsplit(":", 1)[1]), rate=100_000)
    settings.RUNWAY_S3_ENDPOINT_URL = link.endpoint
    settings.RUNWAY_JOB_STALE_SECONDS = {"backup": 0}
    backup = pipeline.request_backup(None, target, enqueue=False)

    def run() -> None:
        try:
            jobs.run("backup", backup.pk)
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
            reaped.extend(jobs.reap(kinds=["backup"]))
            return bool(reaped)

        wait_until(reap, "the reaper to take the running backup")
        assert [r.job.pk for r in reaped] == [backup.pk]
        runner.join(20)
        assert not runner.is_alive(), "the worker went on uploading after it was reaped"
    finally:
        link.close()
        runner.join(60)
    backup.refresh_from_db()
    assert backup.state == "interrupted"
    assert backup.error.startswith("Interrupted: its worker")
    client = s3_client(s3_endpoint)
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads") is None
    assert client.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0
    assert "backup.completed" not in trail(backup)
