"""The runbook library on disk (settings.RUNWAY_RUNBOOK_LIBRARY), loaded against the registered
actions and re-read when a file changes."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from django.conf import settings

from runbooks.actions import REGISTRY
from runbooks.loader import Runbook, RunbookError, load_library


def folder() -> Path:
    return Path(settings.RUNWAY_RUNBOOK_LIBRARY)


def _stamp(path: Path) -> tuple[tuple[str, float, int], ...]:
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError:
        return ()
    return tuple(
        (e.name, e.stat().st_mtime, e.stat().st_size) for e in entries if e.name.endswith(".yaml")
    )


@lru_cache(maxsize=8)
def _load(path: str, stamp: tuple[tuple[str, float, int], ...]) -> dict[str, Runbook]:
    return load_library(Path(path), REGISTRY.keys())


def books() -> dict[str, Runbook]:
    """Every runbook by id. RunbookError when a file is bad (the message names it)."""
    path = folder()
    if not path.is_dir():
        raise RunbookError(f"The runbook library {path} is not a folder.")
    return _load(str(path), _stamp(path))


def get(runbook_id: str) -> Runbook:
    found = books().get(runbook_id)
    if found is None:
        raise RunbookError(f"No runbook {runbook_id!r} in the library.")
    return found
