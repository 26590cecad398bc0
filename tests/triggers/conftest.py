"""Triggers watch a real seeded target at 0016."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from helpers import checked, make_database


@pytest.fixture
def live_target(make_target: Callable[..., str]) -> Any:
    found = make_database(dsn=make_target())
    checked(found, "0016")
    return found
