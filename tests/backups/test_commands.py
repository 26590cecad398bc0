"""manage.py backup, validate_backup and prune_backups, for real."""

from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from dashboard.backups.models import Backup, Validation
from devstack.cluster import Cluster

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_backup_takes_a_backup_and_prints_what_it_stored(target: Any, local_store: Path) -> None:
    out = run("backup", "analyticbot")
    backup = Backup.objects.get()
    assert backup.completed
    assert f"stored at   {backup.storage_url}" in out
    assert f"sha256      {backup.sha256}" in out
    assert "rows        users: 200" in out
    assert f"Backup #{backup.pk} of analyticbot completed in" in out


def test_backup_takes_the_format_and_compression_asked_for(target: Any, local_store: Path) -> None:
    run("backup", "analyticbot", "--format", "directory", "--compression", "gzip")
    backup = Backup.objects.get()
    assert (backup.format, backup.compression) == ("directory", "gzip")
    assert backup.storage_url.endswith(".tar.gz.gpg")


def test_backup_names_an_unknown_database() -> None:
    with pytest.raises(CommandError, match="No managed database named 'nope'"):
        run("backup", "nope")


def test_backup_refuses_an_unknown_format(target: Any) -> None:
    with pytest.raises(CommandError, match="invalid choice: 'tar'"):
        call_command("backup", "analyticbot", "--format", "tar")


def test_backup_reports_a_failure_with_its_reason(
    target: Any, local_store: Path, settings: Any
) -> None:
    settings.RUNWAY_BACKUP_PASSPHRASE = ""
    with pytest.raises(CommandError, match="failed: No backup passphrase is set"):
        run("backup", "analyticbot")


def test_backup_queue_leaves_it_to_the_workers(target: Any) -> None:
    out = run("backup", "analyticbot", "--queue")
    assert Backup.objects.get().state == "queued"
    assert "queued for the workers" in out


def test_validate_backup_restores_it_and_prints_each_check(
    target: Any, local_store: Path, scratch_server: Cluster
) -> None:
    run("backup", "analyticbot")
    backup = Backup.objects.get()
    out = run("validate_backup", str(backup.pk))
    assert "ok   rows in users: expected 200, found 200" in out
    assert f"Backup #{backup.pk} restores: validation" in out
    assert Validation.objects.get().outcome == "passed"


def test_validate_backup_names_an_unknown_or_unfinished_backup(target: Any) -> None:
    with pytest.raises(CommandError, match="No backup #404"):
        run("validate_backup", "404")
    with pytest.raises(CommandError, match="'latest' is not a backup number"):
        run("validate_backup", "latest")
    queued = Backup.objects.create(database=target)
    with pytest.raises(CommandError, match="is queued: only a completed backup"):
        run("validate_backup", str(queued.pk))


def test_validate_backup_fails_loudly_when_the_backup_does_not_restore(
    target: Any, local_store: Path, scratch_server: Cluster, settings: Any
) -> None:
    run("backup", "analyticbot")
    settings.RUNWAY_BACKUP_PASSPHRASE = "another passphrase"
    with pytest.raises(CommandError, match="failed .*Wrong passphrase"):
        run("validate_backup", str(Backup.objects.get().pk))


def test_prune_backups_dry_run_lists_and_keeps(target: Any, local_store: Path) -> None:
    run("backup", "analyticbot")
    old = timezone.now() - timedelta(days=45)
    Backup.objects.update(started_at=old, created_at=old)
    backup = Backup.objects.get()
    out = run("prune_backups", "--dry-run")
    assert f"would remove backup #{backup.pk} of analyticbot (45 days old)" in out
    assert "Dry run: would remove 1 backup(s)" in out
    assert Backup.objects.get().completed
    out = run("prune_backups", "--database", "analyticbot")
    assert "removed 1 backup(s)" in out
    pruned = Backup.objects.get()
    assert (pruned.state, pruned.outcome) == ("succeeded", "pruned") and pruned.pruned_at


def test_prune_backups_names_an_unknown_database() -> None:
    with pytest.raises(CommandError, match="No managed database named 'nope'"):
        run("prune_backups", "--database", "nope")
