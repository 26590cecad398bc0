"""Schema tests that touch real databases: a seeded target whose last check read 0016, backups
to a local folder, a scratch server (the same as tests/backups/conftest.py offers)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from helpers import BACKUP_PASSPHRASE, TARGET_ROLE, make_database

from dashboard.lib.cluster import Cluster

SCRATCH_PASSWORD_ENV = "RUNWAY_TEST_SCRATCH_PASSWORD"


def checked(db: Any, *current: str) -> Any:
    """A successful connection check of ``db`` that read ``current`` from alembic_version."""
    from dashboard.databases.models import ConnectionCheck

    return ConnectionCheck.objects.create(
        database=db, state="ok", current_revisions=list(current), finished_at=timezone.now()
    )


@pytest.fixture
def checked_target(make_target: Callable[..., str]) -> Any:
    """A managed database at 0016 with 200 seeded users; its last good check read 0016."""
    db = make_database(dsn=make_target())
    checked(db, "0016")
    return db


@pytest.fixture
def local_store(settings: Any, tmp_path: Path) -> Path:
    """Backups go to a local folder; the passphrase is set."""
    store = tmp_path / "store"
    settings.RUNWAY_BACKUP_PASSPHRASE = BACKUP_PASSPHRASE
    settings.RUNWAY_BACKUP_STORAGE = f"file://{store}"
    return store


@pytest.fixture
def scratch_server(settings: Any, pg_cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    """Scratch databases are made by the cluster's superuser (RUNWAY_SCRATCH_DSN)."""
    monkeypatch.setenv(SCRATCH_PASSWORD_ENV, pg_cluster.password)
    settings.RUNWAY_SCRATCH_DSN = (
        f"host={pg_cluster.host} port={pg_cluster.port} dbname=postgres user=postgres"
    )
    settings.RUNWAY_SCRATCH_PASSWORD_REF = f"env:{SCRATCH_PASSWORD_ENV}"
    return pg_cluster


@pytest.fixture
def owner_may_create_databases(pg_cluster: Cluster) -> Iterator[None]:
    """The target's own role has CREATEDB (it owns the target, so it may copy it)."""
    pg_cluster.execute(f"ALTER ROLE {TARGET_ROLE} CREATEDB")
    yield
    pg_cluster.execute(f"ALTER ROLE {TARGET_ROLE} NOCREATEDB")
