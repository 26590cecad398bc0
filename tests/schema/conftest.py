"""Schema tests that touch real databases: a seeded target whose last check read 0016 (backups,
scratch servers and CREATEDB come from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from helpers import checked, make_database


@pytest.fixture
def checked_target(make_target: Callable[..., str]) -> Any:
    """A managed database at 0016 with 200 seeded users; its last good check read 0016."""
    db = make_database(dsn=make_target())
    checked(db, "0016")
    return db
