"""Small parsers for settings read from the environment (``NAME`` or ``NAME_FILE``)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

_TRUE = {"1", "true", "yes", "on"}

# Every name the settings read, and every secret file they read: a managed database's password
# reference may never point at one of them (see lib.secrets.Scope).
NAMES_READ: set[str] = set()
FILES_READ: set[Path] = set()
_FALSE = {"0", "false", "no", "off", ""}


def env(name: str, default: str = "") -> str:
    """``NAME`` from the environment, else the contents of the file named by ``NAME_FILE``."""
    NAMES_READ.update((name, f"{name}_FILE"))
    if name in os.environ:
        return os.environ[name]
    path = os.environ.get(f"{name}_FILE")
    if path:
        FILES_READ.add(Path(path).resolve())
        return Path(path).read_text().strip()
    return default


def envbool(name: str, default: bool) -> bool:
    raw = env(name, "1" if default else "0").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no, on/off)")


def envint(name: str, default: int) -> int:
    raw = env(name, str(default)).strip()
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a whole number") from None


def envlist(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


def database_from_url(url: str) -> dict[str, object]:
    """Django's DATABASES entry for ``postgresql://user:pass@host:port/name``."""
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql"}:
        raise ValueError(f"DATABASE_URL must start with postgresql:// (got {parts.scheme!r})")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")) or "runway",
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        "CONN_MAX_AGE": 0,
    }
