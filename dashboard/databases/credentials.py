"""The one way to a managed database's password: scoped, bound, allowed.

Every connection to a managed database takes its password from ``password(db)``. It refuses
(SecretError, naming the rule) unless the database's reference is bound to where its DSN
connects now, its host is allowed (RUNWAY_ALLOWED_DB_HOSTS), and the reference lies in the
managed databases' scope (``env:`` prefix, secrets directory) and is none of Runway's own
secrets. The password it returns carries the authentication methods the server may ask it with,
and ``lib.pg`` passes them to libpq as ``require_auth``: never clear text.
"""

from __future__ import annotations

import contextlib
from urllib.parse import urlsplit

from django.conf import settings

from dashboard.databases.models import ManagedDatabase
from dashboard.lib import env, pg, secrets
from dashboard.lib.secrets import Password, SecretError

# Runway's own secrets by setting name: their values never resolve for a managed database.
_OWN_SECRET_SETTINGS = (
    "SECRET_KEY",
    "RUNWAY_BACKUP_PASSPHRASE",
    "RUNWAY_S3_SECRET_ACCESS_KEY",
    "RUNWAY_S3_ACCESS_KEY_ID",
    "EMAIL_HOST_PASSWORD",
)


def _own_values() -> list[str | None]:
    values: list[str | None] = [getattr(settings, name, None) for name in _OWN_SECRET_SETTINGS]
    values += list(getattr(settings, "SECRET_KEY_FALLBACKS", []))
    values += [str(db.get("PASSWORD") or "") for db in settings.DATABASES.values()]
    values.append(urlsplit(settings.CELERY_BROKER_URL or "").password)
    # Not resolvable on this host: then no database's reference can resolve to it here either.
    with contextlib.suppress(SecretError):
        values.append(scratch_password())
    return values


def _own_references() -> tuple[list[str], list[str]]:
    """The names and files Runway's own configuration reads (its scratch server's reference)."""
    names, paths = [], []
    kind, _, target = (settings.RUNWAY_SCRATCH_PASSWORD_REF or "").partition(":")
    if kind == "env":
        names.append(target)
    elif kind == "file":
        paths.append(target)
    return names, paths


def scope() -> secrets.Scope:
    names, paths = _own_references()
    return secrets.Scope.build(
        env_prefix=settings.RUNWAY_SECRET_ENV_PREFIX,
        secrets_dir=settings.RUNWAY_SECRETS_DIR or None,
        own_names=[*env.NAMES_READ, *names],
        own_paths=[*env.FILES_READ, *paths],
        own_values=_own_values(),
    )


def check_reference(ref: str) -> str:
    """A managed database's reference normalised, or SecretError naming the rule it breaks."""
    return secrets.check_reference(ref, scope())


def host_refusal(dsn: str) -> str:
    return pg.host_refusal(dsn, settings.RUNWAY_ALLOWED_DB_HOSTS)


def password(db: ManagedDatabase) -> Password | None:
    """The password to connect to ``db`` with (None without a reference), or SecretError.
    A DSN that does not parse gets None: connecting fails on it with its own message."""
    try:
        pg.parse_dsn(db.dsn)
    except pg.BadDsn:
        return None
    refusal = host_refusal(db.dsn)
    if refusal:
        raise SecretError(refusal)
    if not db.password_ref:
        return None
    if not db.secret_is_bound:
        raise SecretError(
            f"The connection of {db.name} changed since its password reference was confirmed: "
            "Runway sends the password nowhere until a lead confirms it again on the "
            "database's page."
        )
    return secrets.resolve(db.password_ref, scope(), require_auth=db.require_auth)


def scratch_password() -> Password | None:
    """The password of Runway's scratch server (RUNWAY_SCRATCH_PASSWORD_REF): Runway's own
    configuration, so it is not held to the managed databases' scope."""
    return secrets.resolve(
        settings.RUNWAY_SCRATCH_PASSWORD_REF or "",
        require_auth=settings.RUNWAY_SCRATCH_REQUIRE_AUTH,
    )
