"""Backup settings for tests that run the pipeline in-process (real pg_dump, gpg, zstd, S3)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    BACKUP_PASSPHRASE,
    S3_ACCESS_KEY,
    S3_SECRET_KEY,
    TARGET_ROLE,
    make_database,
)

from dashboard.lib.cluster import Cluster

SCRATCH_PASSWORD_ENV = "RUNWAY_TEST_SCRATCH_PASSWORD"


@pytest.fixture
def local_store(settings: Any, tmp_path: Path) -> Path:
    """Backups go to a local folder; the passphrase is set."""
    store = tmp_path / "store"
    settings.RUNWAY_BACKUP_PASSPHRASE = BACKUP_PASSPHRASE
    settings.RUNWAY_BACKUP_STORAGE = f"file://{store}"
    return store


@pytest.fixture
def s3_store(settings: Any, s3_endpoint: str, s3_bucket: str) -> str:
    """Backups go to a fresh bucket on the S3 endpoint (moto's server); returns its base URL."""
    settings.RUNWAY_BACKUP_PASSPHRASE = BACKUP_PASSPHRASE
    settings.RUNWAY_S3_ENDPOINT_URL = s3_endpoint
    settings.RUNWAY_S3_ACCESS_KEY_ID = S3_ACCESS_KEY
    settings.RUNWAY_S3_SECRET_ACCESS_KEY = S3_SECRET_KEY
    settings.RUNWAY_BACKUP_STORAGE = f"s3://{s3_bucket}/runway"
    return settings.RUNWAY_BACKUP_STORAGE


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
    """The target's own role may create the scratch database (no RUNWAY_SCRATCH_DSN)."""
    pg_cluster.execute(f"ALTER ROLE {TARGET_ROLE} CREATEDB")
    yield
    pg_cluster.execute(f"ALTER ROLE {TARGET_ROLE} NOCREATEDB")


@pytest.fixture
def target(make_target: Callable[..., str]) -> Any:
    """A managed database at 0016 with 200 seeded users; users and payments are critical."""
    return make_database(dsn=make_target())
