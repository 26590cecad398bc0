"""Password references: ``env:NAME`` or ``file:/path``. The reference is stored; the secret is
read only at the moment of connecting, on the host that connects, and never kept.

A managed database's reference resolves only inside a ``Scope``: ``env:`` names must carry the
configured prefix, ``file:`` paths must lie (symbolic links followed) inside the secrets
directory, and nothing that is one of Runway's own secrets (a setting's variable or file, or any
of their values) ever resolves, whatever the prefix and directory say. Refusals name the rule that
was broken, never the reference's value: a person may have typed the password itself.
"""

from __future__ import annotations

import hmac
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Libraries the workers use read these from the environment; never a managed database's secret.
_ALWAYS_FORBIDDEN = ("PG", "AWS_", "CELERY_", "DJANGO_", "REDIS", "GNUPG")
DEFAULT_REQUIRE_AUTH = "scram-sha-256"


class SecretError(ValueError):
    """A reference that is malformed, out of scope, or that cannot be resolved here."""


class Password(str):
    """A secret read from a reference. Its ``repr`` never shows it (tracebacks, logs), and it
    carries the authentication methods the server may ask for it (libpq's ``require_auth``)."""

    require_auth: str

    def __new__(cls, value: str, require_auth: str = DEFAULT_REQUIRE_AUTH) -> Password:
        obj = super().__new__(cls, value)
        obj.require_auth = require_auth
        return obj

    def __repr__(self) -> str:
        return "Password('***')"


@dataclass(frozen=True)
class Scope:
    """Where a managed database's references may point."""

    env_prefix: str = "RUNWAY_DB_"
    secrets_dir: Path | None = None
    forbidden_names: frozenset[str] = frozenset()
    forbidden_paths: frozenset[Path] = frozenset()
    forbidden_values: tuple[str, ...] = field(default=(), repr=False)

    @classmethod
    def build(
        cls,
        *,
        env_prefix: str,
        secrets_dir: str | Path | None,
        own_names: Iterable[str] = (),
        own_paths: Iterable[str | Path] = (),
        own_values: Iterable[str | None] = (),
    ) -> Scope:
        return cls(
            env_prefix=env_prefix,
            secrets_dir=Path(os.path.abspath(secrets_dir)) if secrets_dir else None,
            forbidden_names=frozenset(own_names),
            forbidden_paths=frozenset(Path(p).resolve() for p in own_paths),
            forbidden_values=tuple(v for v in own_values if v),
        )


def _form(ref: str) -> tuple[str, str]:
    kind, sep, target = ref.partition(":")
    if not sep or kind not in {"env", "file"}:
        raise SecretError(
            "A password reference is env:VARIABLE_NAME or file:/absolute/path, "
            "never the password itself."
        )
    if kind == "env" and not _ENV_NAME.match(target):
        raise SecretError(
            "After env: comes an environment variable's name: letters, digits and _, "
            "not starting with a digit."
        )
    if kind == "file" and not target.startswith("/"):
        raise SecretError("A file reference needs an absolute path, e.g. file:/run/secrets/db.")
    return kind, target


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_env(name: str, scope: Scope) -> None:
    if name in scope.forbidden_names or name.upper().startswith(_ALWAYS_FORBIDDEN):
        raise SecretError(
            "That variable is one of Runway's own settings or a library's: a managed database "
            "can never use it."
        )
    if not name.startswith(scope.env_prefix):
        raise SecretError(
            f"env: names must start with {scope.env_prefix} (RUNWAY_SECRET_ENV_PREFIX), so that "
            "only variables meant for managed databases can be used."
        )


def _check_file(target: str, scope: Scope, *, follow: bool) -> Path:
    if scope.secrets_dir is None:
        raise SecretError(
            "file: references are off: set RUNWAY_SECRETS_DIR to the folder that holds the "
            "managed databases' password files."
        )
    configured = scope.secrets_dir
    real_dir = configured.resolve()
    lexical = Path(os.path.normpath(target))
    if not (_inside(lexical, configured) or _inside(lexical, real_dir)):
        raise SecretError(
            f"file: paths must lie inside the secrets directory {configured} (RUNWAY_SECRETS_DIR)."
        )
    path = Path(target).resolve() if follow else lexical
    if follow and not _inside(path, real_dir):
        raise SecretError(
            "The path leaves the secrets directory through a symbolic link: it must resolve "
            f"inside {configured}."
        )
    if path in scope.forbidden_paths or lexical in scope.forbidden_paths:
        raise SecretError(
            "That file holds one of Runway's own secrets: a managed database can never use it."
        )
    return path


def check_reference(ref: str, scope: Scope | None = None) -> str:
    """Return ``ref`` normalised, or raise SecretError naming the rule it breaks. With a
    ``scope``, the rules of a managed database's reference apply (the file system is consulted
    only where the path exists on this host: the workers check again when they resolve it)."""
    ref = ref.strip()
    if not ref:
        return ""
    kind, target = _form(ref)
    if scope is not None:
        if kind == "env":
            _check_env(target, scope)
        else:
            _check_file(target, scope, follow=_exists(Path(target)))
    return f"{kind}:{target}"


def _exists(path: Path) -> bool:
    """Whether ``path`` exists; False for one the system cannot even look up (a name longer
    than the file system allows), which no file can have."""
    try:
        return path.exists()
    except OSError:
        return False


def _read(kind: str, target: str, path: Path | None) -> str:
    if kind == "env":
        if target not in os.environ:
            raise SecretError(f"The environment variable {target} is not set on this host.")
        return os.environ[target]
    assert path is not None
    if _exists(path) and not path.is_file():
        raise SecretError("The reference names a folder or a device, not a password file.")
    try:
        return path.read_text().rstrip("\r\n")
    except FileNotFoundError:
        raise SecretError(f"The password file {target} does not exist on this host.") from None
    except PermissionError:
        raise SecretError(f"The password file {target} is not readable by Runway.") from None
    except OSError as exc:  # a name too long, a loop of links, an I/O error
        raise SecretError(f"The password file cannot be read: {exc.strerror}.") from None


def resolve(
    ref: str, scope: Scope | None = None, *, require_auth: str = DEFAULT_REQUIRE_AUTH
) -> Password | None:
    """The secret a reference points at, or None for an empty reference.

    With a ``scope`` (every managed database's reference), the reference must be inside it and
    the secret must not be one of Runway's own. Without one, the reference is Runway's own
    configuration (e.g. RUNWAY_SCRATCH_PASSWORD_REF) and is trusted.
    """
    ref = check_reference(ref)
    if not ref:
        return None
    kind, target = _form(ref)
    path: Path | None = None
    if scope is not None:
        if kind == "env":
            _check_env(target, scope)
        else:
            path = _check_file(target, scope, follow=True)
    elif kind == "file":
        path = Path(target)
    value = _read(kind, target, path)
    if scope is not None and any(
        hmac.compare_digest(value.encode(), own.encode()) for own in scope.forbidden_values
    ):
        raise SecretError(
            "The reference resolves to one of Runway's own secrets: a managed database can "
            "never use it."
        )
    return Password(value, require_auth)
