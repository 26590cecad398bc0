"""WAL archiving status, read for real by the worker's connection check (never by the web)."""

import psycopg
import pytest
from django.urls import reverse
from helpers import TARGET_PASSWORD, TARGET_ROLE, make_database, wait_until

from dashboard.databases import checks
from dashboard.databases.models import ConnectionCheck
from dashboard.lib import pg

pytestmark = pytest.mark.django_db(transaction=True)


def run_check(db, engineer):
    check = checks.request_check(engineer, db)
    wait_until(lambda: ConnectionCheck.objects.get(pk=check.pk).is_done, "the worker's check")
    return ConnectionCheck.objects.get(pk=check.pk)


def test_a_connection_check_records_wal_archiving_and_the_page_warns_it_is_off(
    celery_worker, make_target, engineer, viewer, client
):
    db = make_database(dsn=make_target())
    check = run_check(db, engineer)
    assert check.outcome == "connected", check.message
    # The test cluster runs with wal_level=replica and archiving off.
    assert check.wal["wal_level"] == "replica"
    assert check.wal["archive_mode"] == "off"
    assert check.wal["in_recovery"] is False
    assert check.wal["archiver"]["archived_count"] == 0
    assert check.wal["archiver"]["failed_count"] == 0
    assert check.wal["archiver"]["last_archived_wal"] is None
    assert "archiver_error" not in check.wal
    client.force_login(viewer)
    body = client.get(reverse("backup-status", args=[db.name])).content.decode()
    assert "WAL archiving is off (archive_mode = off)" in body
    assert "<code>replica</code>" in body and "<code>off</code>" in body


def test_the_archive_command_text_is_never_kept(pg_cluster, make_target):
    result = pg.probe(make_target(), TARGET_PASSWORD)
    assert result.ok, result.message
    assert "archive_command" not in result.wal
    assert result.wal["archive_command_set"] in (False, None)


def test_an_unreadable_pg_stat_archiver_is_recorded_and_the_probe_still_succeeds(
    pg_cluster, make_target
):
    dsn = make_target()
    dbname = dsn.split("dbname=")[1].split()[0]
    # System views live in each database: revoking here touches only this clone.
    with psycopg.connect(pg_cluster.dsn(dbname), autocommit=True) as conn:
        conn.execute("REVOKE SELECT ON pg_catalog.pg_stat_archiver FROM PUBLIC")
    result = pg.probe(dsn, TARGET_PASSWORD)
    assert result.ok and result.current_revisions == ["0016"]
    assert result.wal["archiver"] is None
    assert "permission denied" in result.wal["archiver_error"]
    assert result.wal["wal_level"] == "replica"


def test_wal_is_read_even_when_the_database_was_never_stamped(pg_cluster):
    pg_cluster.create_database("wal_unstamped", owner=TARGET_ROLE, replace=True)
    result = pg.probe(
        f"host={pg_cluster.host} port={pg_cluster.port} dbname=wal_unstamped user={TARGET_ROLE}",
        TARGET_PASSWORD,
    )
    assert result.problem == "no_alembic_version"
    assert result.wal["archive_mode"] == "off"


def test_a_failed_connection_has_no_wal_status():
    result = pg.probe("host=127.0.0.1 port=1 dbname=x user=x", None, timeout=1)
    assert not result.ok and result.wal == {}
