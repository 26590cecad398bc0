"""Runs need a managed database whose last check read 0016, a library runbook, and a cast."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import checked, make_database


@pytest.fixture
def analyticbot(db: None) -> Any:
    """Registered (unreachable DSN), its last check read 0016: enough for runs without actions."""
    found = make_database()
    checked(found, "0016")
    return found


@pytest.fixture
def live_target(make_target: Callable[..., str], tmp_path: Path) -> Any:
    """A real seeded target at 0016, backups to a local folder through its policy."""
    from dashboard.backups.models import BackupPolicy

    found = make_database(dsn=make_target())
    checked(found, "0016")
    BackupPolicy.objects.create(database=found, storage_url=f"file://{tmp_path}/store")
    return found
