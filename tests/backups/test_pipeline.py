"""Taking backups for real: pg_dump, zstd, gpg, a local folder and S3 (moto's server)."""

import hashlib
import subprocess
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import BACKUP_PASSPHRASE, TARGET_PASSWORD, s3_client, wait_until

from dashboard.audit.chain import verify
from dashboard.audit.models import AuditEvent
from dashboard.backups import pipeline, validation
from dashboard.backups.models import Backup, BackupPolicy
from dashboard.jobs import lifecycle as jobs
from dashboard.lib import gpg
from devstack.cluster import Cluster

pytestmark = pytest.mark.django_db


def back_up(db: Any, **kwargs: Any) -> Backup:
    backup = pipeline.request_backup(None, db, enqueue=False, **kwargs)
    done = jobs.run("backup", backup.pk)
    assert isinstance(done, Backup)
    return done


def source_counts(db: Any) -> dict[str, int]:
    with psycopg.connect(db.dsn, password=TARGET_PASSWORD) as conn:
        return {
            table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
            for table in ("users", "payments")
        }


def opened(path: Path, tmp_path: Path) -> bytes:
    """The stored object decrypted with the passphrase alone (gpg) and decompressed."""
    gpg.decrypt_file(BACKUP_PASSPHRASE, path, tmp_path / "opened")
    return (tmp_path / "opened").read_bytes()


def test_a_backup_to_a_local_folder_records_size_sha256_counts_and_revision(
    target: Any, local_store: Path
) -> None:
    backup = back_up(target)
    assert backup.completed, backup.error
    path = Path(backup.storage_url.removeprefix("file://"))
    assert path.parent == local_store / "analyticbot"
    assert path.name.endswith(f"-{backup.pk}.dump.zst.gpg")
    assert backup.size_bytes == path.stat().st_size == backup.progress_bytes
    assert backup.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert backup.row_counts == source_counts(target) == {"users": 200, "payments": 253}
    assert backup.revision == "0016"
    assert backup.facts["users"]["user_count"] == 200
    assert (backup.format, backup.compression, backup.encrypted) == ("custom", "zstd", True)
    assert backup.duration_s > 0 and backup.finished_at and backup.attempts == 1
    assert backup.upload_id == "" and backup.error == ""
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no partial file left


def test_a_backup_is_a_zstd_compressed_pg_dump_archive_under_gpg(
    target: Any, local_store: Path, tmp_path: Path
) -> None:
    backup = back_up(target)
    sealed = Path(backup.storage_url.removeprefix("file://"))
    assert b"PGDMP" not in sealed.read_bytes()
    packed = opened(sealed, tmp_path)
    assert packed[:4] == b"\x28\xb5\x2f\xfd"  # zstd's magic number
    archive = subprocess.run(["zstd", "-d", "-c"], input=packed, capture_output=True, check=True)
    assert archive.stdout[:5] == b"PGDMP"


@pytest.mark.parametrize(
    ("compression", "suffix", "magic"),
    [("gzip", ".dump.gz.gpg", b"\x1f\x8b"), ("none", ".dump.gpg", b"PGDMP")],
)
def test_gzip_or_no_compression_can_be_chosen(
    target: Any, local_store: Path, tmp_path: Path, compression: str, suffix: str, magic: bytes
) -> None:
    backup = back_up(target, compression=compression)
    assert backup.completed, backup.error
    assert backup.storage_url.endswith(suffix)
    assert opened(Path(backup.storage_url.removeprefix("file://")), tmp_path).startswith(magic)


def test_the_directory_format_is_a_tar_of_pg_dumps_folder(
    target: Any, local_store: Path, tmp_path: Path
) -> None:
    backup = back_up(target, format="directory")
    assert backup.completed, backup.error
    assert backup.storage_url.endswith(".tar.zst.gpg")
    packed = opened(Path(backup.storage_url.removeprefix("file://")), tmp_path)
    tar = subprocess.run(
        "zstd -d -c | tar -t", shell=True, input=packed, capture_output=True, check=True
    )
    assert "./toc.dat" in tar.stdout.decode().split()
    assert backup.row_counts == {"users": 200, "payments": 253}


def test_a_backup_to_s3_is_one_object_and_leaves_no_open_upload(
    target: Any, s3_store: str, s3_endpoint: str, s3_bucket: str
) -> None:
    backup = back_up(target)
    assert backup.completed, backup.error
    key = backup.storage_url.removeprefix(f"s3://{s3_bucket}/")
    assert key.startswith("runway/analyticbot/") and key.endswith(".dump.zst.gpg")
    client = s3_client(s3_endpoint)
    body = client.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    assert (len(body), hashlib.sha256(body).hexdigest()) == (backup.size_bytes, backup.sha256)
    assert client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    assert backup.upload_id == ""


def test_a_policy_storage_url_overrides_the_setting(
    target: Any, local_store: Path, tmp_path: Path
) -> None:
    BackupPolicy.objects.create(database=target, storage_url=f"file://{tmp_path}/elsewhere")
    backup = back_up(target)
    assert backup.storage_url.startswith(f"file://{tmp_path}/elsewhere/analyticbot/")
    assert not local_store.exists()


def test_the_row_counts_come_from_the_dumps_own_snapshot(
    target: Any, local_store: Path, scratch_server: Cluster, pg_cluster: Cluster
) -> None:
    """A user inserted while the dump waits for a lock is in neither the counts nor the dump."""
    dbname = psycopg.conninfo.conninfo_to_dict(target.dsn)["dbname"]
    blocker = psycopg.connect(pg_cluster.dsn(str(dbname)))
    blocker.execute("LOCK TABLE payments IN ACCESS EXCLUSIVE MODE")

    def insert_while_the_backup_waits() -> None:
        with psycopg.connect(pg_cluster.dsn(str(dbname)), autocommit=True) as conn:

            def waiting() -> bool:
                query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                return bool(conn.execute(query).fetchone()[0])  # type: ignore[index]

            wait_until(waiting, "the backup to wait for the lock")
            conn.execute("INSERT INTO users (telegram_id, plan_id) VALUES (999999999999, 1)")
        blocker.rollback()

    helper = threading.Thread(target=insert_while_the_backup_waits)
    helper.start()
    try:
        backup = back_up(target)
    finally:
        helper.join()
        blocker.close()
    assert source_counts(target)["users"] == 201
    assert backup.row_counts == {"users": 200, "payments": 253}
    assert backup.facts["users"]["user_count"] == 200
    proof = jobs.run("validation", validation.request_validation(None, backup, enqueue=False).pk)
    assert proof is not None and proof.outcome == "passed", proof.error
    assert {"name": "rows in users", "ok": True, "expected": 200, "found": 200, "detail": ""} in (
        proof.checks
    )


def test_a_backup_is_taken_once_even_if_performed_twice(target: Any, local_store: Path) -> None:
    backup = pipeline.request_backup(None, target, enqueue=False)
    assert jobs.run("backup", backup.pk) is not None
    assert jobs.run("backup", backup.pk) is None
    assert Backup.objects.get(pk=backup.pk).attempts == 1
    assert len(list(local_store.rglob("*.gpg"))) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"format": "tar"}, "Unknown dump format 'tar'"), ({"compression": "xz"}, "compression")],
)
def test_an_unknown_format_or_compression_is_refused(
    target: Any, kwargs: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        pipeline.request_backup(None, target, **kwargs)
    assert not Backup.objects.exists()


def test_every_step_is_audited_and_the_chain_holds(
    target: Any, local_store: Path, engineer: Any
) -> None:
    backup = pipeline.request_backup(engineer, target, reason="pre-migration", enqueue=False)
    jobs.run("backup", backup.pk)
    events = AuditEvent.objects.filter(object_type="backup", object_id=str(backup.pk))
    assert list(events.order_by("id").values_list("action", "actor_name")) == [
        ("backup.requested", "erin"),
        ("backup.started", "system"),
        ("backup.completed", "system"),
    ]
    completed = events.get(action="backup.completed")
    assert completed.details["sha256"] == Backup.objects.get(pk=backup.pk).sha256
    assert verify().ok


def test_no_secret_reaches_the_row_or_the_audit_trail(target: Any, local_store: Path) -> None:
    backup = back_up(target)
    stored = str(Backup.objects.filter(pk=backup.pk).values().get())
    trail = str(list(AuditEvent.objects.values_list("details", flat=True)))
    for secret in (BACKUP_PASSPHRASE, TARGET_PASSWORD):
        assert secret not in stored and secret not in trail


@pytest.mark.django_db(transaction=True)
def test_the_worker_takes_a_requested_backup(
    celery_worker: Path, target: Any, tmp_path: Path, engineer: Any
) -> None:
    BackupPolicy.objects.create(database=target, storage_url=f"file://{tmp_path}/store")
    backup = pipeline.request_backup(engineer, target, reason="on demand")
    wait_until(lambda: Backup.objects.get(pk=backup.pk).is_done, "the worker's backup", 60)
    backup.refresh_from_db()
    assert backup.completed, backup.error
    assert backup.storage_url.startswith(f"file://{tmp_path}/store/analyticbot/")
    path = Path(backup.storage_url.removeprefix("file://"))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == backup.sha256
