"""Backup settings for tests that run the pipeline in-process (real pg_dump, gpg, zstd, S3)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from helpers import (
    BACKUP_PASSPHRASE,
    S3_ACCESS_KEY,
    S3_SECRET_KEY,
    make_database,
)


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
def target(make_target: Callable[..., str]) -> Any:
    """A managed database at 0016 with 200 seeded users; users and payments are critical."""
    return make_database(dsn=make_target())
