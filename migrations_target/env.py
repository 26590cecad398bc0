"""Alembic environment for the analytics bot's PostgreSQL database.

Where the database is, in order of precedence:

1. a SQLAlchemy ``Connection`` handed over in ``config.attributes["connection"]`` (programmatic
   callers that manage the connection themselves);
2. ``-x url=URL`` on the command line;
3. ``sqlalchemy.url`` set on the Config object by a programmatic caller (never in alembic.ini);
4. the ``DATABASE_URL`` environment variable.

``postgresql://`` and ``postgres://`` URLs (and ``postgresql+psycopg2://``) are rewritten to the
``postgresql+psycopg://`` driver (psycopg 3). Offline mode (``--sql``) needs no database: without
a URL it renders PostgreSQL SQL. The URL is never logged or printed: it may hold a password.
"""

from __future__ import annotations

import os
from logging.config import fileConfig

from alembic import context
from alembic.util import CommandError
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError

config = context.config

# Configure logging from alembic.ini for command-line runs only. Callers embedding Alembic in a
# process that has its own logging pass attributes["configure_logger"] = False. Existing loggers
# are kept either way.
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

# The schema is described by the revisions themselves: no autogenerate metadata.
target_metadata = None

DRIVER = "postgresql+psycopg"
POSTGRES_SCHEMES = {"postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2"}


class DatabaseUrlError(CommandError):
    """No usable database URL (the CLI prints "FAILED: ..."). Never contains the URL itself."""


def normalise_url(raw: str) -> URL:
    """Parse a PostgreSQL URL and point it at the psycopg 3 driver."""
    try:
        url = make_url(raw.strip())
    except ArgumentError:
        # SQLAlchemy's own message repeats the URL (and so the password): do not chain it.
        raise DatabaseUrlError(
            "The database URL cannot be parsed. Expected postgresql://user:password@host:port/dbname"
        ) from None
    if url.drivername not in POSTGRES_SCHEMES:
        raise DatabaseUrlError(
            f"The database URL uses the scheme {url.drivername!r}; this project needs PostgreSQL "
            "(postgresql:// or postgres://)."
        )
    if not url.database:
        raise DatabaseUrlError("The database URL names no database (…/dbname at its end).")
    return url.set(drivername=DRIVER)


def raw_url() -> str | None:
    """The URL from -x url=..., the Config object, or $DATABASE_URL, in that order."""
    x_url = context.get_x_argument(as_dictionary=True).get("url")
    if x_url:
        return x_url
    configured = config.get_main_option("sqlalchemy.url")
    if configured:
        return configured
    return os.environ.get("DATABASE_URL") or None


def database_url(*, required: bool) -> URL | None:
    raw = raw_url()
    if raw is None:
        if required:
            raise DatabaseUrlError(
                "No database URL. Pass -x url=postgresql://user:password@host:port/dbname "
                "or set the DATABASE_URL environment variable."
            )
        return None
    return normalise_url(raw)


def run_migrations_offline() -> None:
    """Render the migrations as SQL (``--sql``) without connecting to a database."""
    url = database_url(required=False)
    options: dict[str, object] = {
        "target_metadata": target_metadata,
        "literal_binds": True,
        "dialect_opts": {"paramstyle": "named"},
        "transaction_per_migration": True,
    }
    if url is None:
        options["dialect_name"] = "postgresql"
    else:
        options["url"] = url
    context.configure(**options)  # type: ignore[arg-type]
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations against a live database, one transaction per revision."""
    handed_over = config.attributes.get("connection")
    if isinstance(handed_over, Connection):
        run_migrations_on(handed_over)
        return
    url = database_url(required=True)
    engine = create_engine(url, poolclass=pool.NullPool)  # type: ignore[arg-type]
    try:
        with engine.connect() as connection:
            run_migrations_on(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
