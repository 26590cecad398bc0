"""What the triggers call that lives above them: starting the rollback runbook. The runbook
engine registers it when it loads (runbooks/apps.py), so this app never imports it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# start(run_id, reason, source=..., grace_seconds=...) -> the rollback run's id and its URL
RollbackStarter = Callable[..., Any]
_rollback: list[RollbackStarter] = []


def register_rollback(start: RollbackStarter) -> None:
    _rollback[:] = [start]


def rollback_starter() -> RollbackStarter | None:
    return _rollback[0] if _rollback else None
