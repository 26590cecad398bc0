"""Password references: ``env:NAME`` or ``file:/path``. The reference is stored; the secret is
read only at the moment of connecting, on the host that connects, and never kept."""

from __future__ import annotations

import os
import re
from pathlib import Path

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SecretError(ValueError):
    """A reference that is malformed, or that cannot be resolved here."""


def check_reference(ref: str) -> str:
    """Return ``ref`` normalised, or raise SecretError saying what is wrong with its form."""
    ref = ref.strip()
    if not ref:
        return ""
    kind, sep, target = ref.partition(":")
    if not sep or kind not in {"env", "file"}:
        raise SecretError(
            "A password reference is env:VARIABLE_NAME or file:/absolute/path, "
            "never the password itself."
        )
    if kind == "env" and not _ENV_NAME.match(target):
        raise SecretError(f"{target!r} is not a valid environment variable name.")
    if kind == "file" and not target.startswith("/"):
        raise SecretError("A file reference needs an absolute path, e.g. file:/run/secrets/db.")
    return f"{kind}:{target}"


def resolve(ref: str) -> str | None:
    """The secret a reference points at, or None for an empty reference."""
    ref = check_reference(ref)
    if not ref:
        return None
    kind, _, target = ref.partition(":")
    if kind == "env":
        if target not in os.environ:
            raise SecretError(f"The environment variable {target} is not set on this host.")
        return os.environ[target]
    try:
        return Path(target).read_text().rstrip("\r\n")
    except FileNotFoundError:
        raise SecretError(f"The password file {target} does not exist on this host.") from None
    except PermissionError:
        raise SecretError(f"The password file {target} is not readable by Runway.") from None
    except IsADirectoryError:
        raise SecretError(f"{target} is a folder, not a password file.") from None
