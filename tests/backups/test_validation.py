"""Validating backups for real: restore into a scratch database, integrity queries, drop it."""

from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.utils import timezone
from helpers import TARGET_PASSWORD, make_database, scratch_databases, wait_until

from dashboard.audit.models import AuditEvent
from dashboard.backups import pipeline, validation
from dashboard.backups.models import Backup, BackupPolicy, Validation
from dashboard.jobs import lifecycle as jobs
from devstack.cluster import Cluster

pytestmark = pytest.mark.django_db


def back_up(db: Any, **kwargs: Any) -> Backup:
    backup = jobs.run("backup", pipeline.request_backup(None, db, enqueue=False, **kwargs).pk)
    assert isinstance(backup, Backup) and backup.completed, backup and backup.error
    return backup


def validate(backup: Backup, actor: Any = None) -> Validation:
    requested = validation.request_validation(actor, backup, enqueue=False)
    done = jobs.run("validation", requested.pk)
    assert isinstance(done, Validation)
    return done


def by_name(checks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in checks}


def test_a_backup_restores_and_every_integrity_check_passes(
    target: Any, local_store: Path, scratch_server: Cluster, lead: Any
) -> None:
    backup = back_up(target)
    proof = validate(backup, lead)
    assert (proof.state, proof.passed) == ("succeeded", True), proof.error
    checks = by_name(proof.checks)
    assert checks["rows in users"] == {
        "name": "rows in users",
        "ok": True,
        "expected": 200,
        "found": 200,
        "detail": "",
    }
    assert checks["rows in payments"]["found"] == 253
    assert checks["sha256 of the stored object"]["found"] == backup.sha256
    assert checks["Alembic revision"]["found"] == "0016"
    users = checks["users and plans (the seed's query)"]
    assert users["ok"] and users["found"].startswith("200 users, 4 plans, newest 2025-")
    orphans = [c for c in proof.checks if c["name"].startswith("orphaned rows")]
    assert len(orphans) == 10  # every foreign key of the schema at 0016
    assert "orphaned rows: payments(subscription_id) -> subscriptions(id)" in checks
    assert all(c["ok"] and c["found"] == 0 for c in orphans)
    assert proof.restore_s > 0 and proof.queries_s > 0
    assert proof.scratch_database == f"runway_scratch_{proof.pk}"
    assert scratch_databases(scratch_server) == []
    actions = AuditEvent.objects.filter(object_type="validation", object_id=str(proof.pk))
    assert list(actions.order_by("id").values_list("action", flat=True)) == [
        "validation.requested",
        "validation.started",
        "validation.passed",
    ]


def test_a_directory_format_backup_on_s3_restores(
    target: Any, s3_store: str, scratch_server: Cluster
) -> None:
    proof = validate(back_up(target, format="directory", compression="gzip"))
    assert (proof.state, proof.passed) == ("succeeded", True), proof.error
    assert scratch_databases(scratch_server) == []


def test_the_sources_own_role_may_make_the_scratch_database_beside_it(
    target: Any, local_store: Path, owner_may_create_databases: None, pg_cluster: Cluster
) -> None:
    proof = validate(back_up(target))
    assert (proof.state, proof.passed) == ("succeeded", True), proof.error
    assert scratch_databases(pg_cluster) == []


def test_a_role_that_may_not_create_databases_is_named(
    target: Any, local_store: Path, pg_cluster: Cluster
) -> None:
    proof = validate(back_up(target))
    assert (proof.state, proof.passed, proof.outcome) == ("failed", None, "failed")  # could not run
    assert "app_owner may not create the scratch database" in proof.error
    assert "CREATEDB" in proof.error and "RUNWAY_SCRATCH_DSN" in proof.error
    assert scratch_databases(pg_cluster) == []


def test_rows_lost_since_the_dump_fail_the_count_check(
    target: Any, local_store: Path, scratch_server: Cluster
) -> None:
    backup = back_up(target)
    Backup.objects.filter(pk=backup.pk).update(row_counts={"users": 201, "payments": 253})
    proof = validate(Backup.objects.get(pk=backup.pk))
    # It ran and found a problem: the job succeeded, the backup did not pass.
    assert (proof.state, proof.passed, proof.outcome) == ("succeeded", False, "failed")
    assert proof.error == "1 integrity check(s) failed: rows in users"
    assert by_name(proof.checks)["rows in users"] == {
        "name": "rows in users",
        "ok": False,
        "expected": 201,
        "found": 200,
        "detail": "",
    }
    assert AuditEvent.objects.filter(action="validation.failed").exists()


def test_orphaned_rows_behind_a_not_valid_foreign_key_are_found(
    target: Any, local_store: Path, scratch_server: Cluster
) -> None:
    with psycopg.connect(target.dsn, password=TARGET_PASSWORD, autocommit=True) as conn:
        conn.execute("ALTER TABLE payments DROP CONSTRAINT fk_payments_user_id_users")
        conn.execute("UPDATE payments SET user_id = 999999 WHERE id IN (1, 2)")
        conn.execute(
            "ALTER TABLE payments ADD CONSTRAINT fk_payments_user_id_users "
            "FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID"
        )
    proof = validate(back_up(target))
    assert (proof.state, proof.passed) == ("succeeded", False)
    check = by_name(proof.checks)["orphaned rows: payments(user_id) -> users(id)"]
    assert (check["ok"], check["expected"], check["found"]) == (False, 0, 2)
    assert check["detail"] == "fk_payments_user_id_users"
    assert scratch_databases(scratch_server) == []


def test_a_different_revision_on_restore_fails_the_revision_check(
    target: Any, local_store: Path, scratch_server: Cluster
) -> None:
    backup = back_up(target)
    Backup.objects.filter(pk=backup.pk).update(revision="0015")
    proof = validate(Backup.objects.get(pk=backup.pk))
    check = by_name(proof.checks)["Alembic revision"]
    assert (check["ok"], check["expected"], check["found"]) == (False, "0015", "0016")


def test_a_tampered_object_fails_and_the_scratch_database_is_still_dropped(
    target: Any, local_store: Path, scratch_server: Cluster
) -> None:
    backup = back_up(target)
    path = Path(backup.storage_url.removeprefix("file://"))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    proof = validate(backup)
    assert (proof.state, proof.passed) == ("failed", None)  # it could not be restored
    assert "The backup was altered after it was written" in proof.error
    assert scratch_databases(scratch_server) == []


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"state": "failed"}, "failed"),
        ({"state": "interrupted"}, "interrupted"),
        ({"state": "succeeded", "pruned_at": timezone.now()}, "pruned"),
    ],
)
def test_only_a_completed_backup_can_be_validated(
    target: Any, fields: dict[str, Any], said: str
) -> None:
    backup = Backup.objects.create(database=target, **fields)
    with pytest.raises(ValueError, match=f"is {said}: only a completed backup"):
        validation.request_validation(None, backup)
    assert not Validation.objects.exists()


def test_a_validation_runs_once_even_if_performed_twice(
    target: Any, local_store: Path, scratch_server: Cluster
) -> None:
    requested = validation.request_validation(None, back_up(target), enqueue=False)
    assert jobs.run("validation", requested.pk) is not None
    assert jobs.run("validation", requested.pk) is None
    assert Validation.objects.get(pk=requested.pk).attempts == 1


def test_a_backup_of_a_database_without_the_seed_schema_skips_the_users_query(
    pg_cluster: Cluster, local_store: Path, scratch_server: Cluster
) -> None:
    pg_cluster.create_database("plain_app", owner="app_owner", replace=True)
    with psycopg.connect(pg_cluster.dsn("plain_app", "app_owner", TARGET_PASSWORD)) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY)")
        conn.execute("INSERT INTO items SELECT generate_series(1, 10)")
    db = make_database(
        name="plain",
        dsn=f"host={pg_cluster.host} port={pg_cluster.port} dbname=plain_app user=app_owner",
        critical_tables=["items"],
    )
    backup = back_up(db)
    assert (backup.row_counts, backup.revision, backup.facts) == ({"items": 10}, "", {})
    proof = validate(backup)
    assert (proof.state, proof.passed) == ("succeeded", True), proof.error
    assert [c["name"] for c in proof.checks] == [
        "sha256 of the stored object",
        "rows in items",
        "Alembic revision",
    ]


@pytest.mark.django_db(transaction=True)
def test_the_worker_validates_a_backup(
    celery_worker: Path,
    target: Any,
    tmp_path: Path,
    owner_may_create_databases: None,
    pg_cluster: Cluster,
    lead: Any,
) -> None:
    BackupPolicy.objects.create(database=target, storage_url=f"file://{tmp_path}/store")
    backup = pipeline.request_backup(lead, target)
    wait_until(lambda: Backup.objects.get(pk=backup.pk).is_done, "the worker's backup", 60)
    backup.refresh_from_db()
    proof = validation.request_validation(lead, backup)
    wait_until(lambda: Validation.objects.get(pk=proof.pk).is_done, "the worker's validation", 60)
    proof.refresh_from_db()
    assert (proof.state, proof.passed) == ("succeeded", True), proof.error
    assert scratch_databases(pg_cluster) == []
