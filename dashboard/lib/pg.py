"""Talking to managed PostgreSQL databases: DSN parsing, connecting, probing.

The only module that opens connections to managed databases (Runway's own database is Django's).
Errors are classified into a small set of problems, each with a message a person can act on.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from urllib.parse import quote

import psycopg
from psycopg import conninfo, errors

PROBLEM_MESSAGES = {
    "malformed_dsn": "The connection string cannot be parsed",
    "secret": "The password reference cannot be resolved",
    "unreachable": "The database server cannot be reached",
    "timeout": "The database server did not answer in time",
    "auth_failed": "The server refused the user name or password",
    "no_database": "The database does not exist on that server",
    "no_alembic_version": (
        "The database has no alembic_version table: it was never stamped by Alembic"
    ),
    "error": "The connection failed",
}


class BadDsn(ValueError):
    pass


def parse_dsn(dsn: str) -> dict[str, str]:
    """Parse a libpq DSN or URL; refuse one that carries a password or names no database."""
    dsn = dsn.strip()
    if not dsn:
        raise BadDsn("The connection string is empty.")
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        detail = str(exc).split("\n")[0]
        raise BadDsn(f"The connection string cannot be parsed: {detail}") from None
    if "password" in params:
        raise BadDsn(
            "The connection string contains a password. Remove it and give a password "
            "reference (env:NAME or file:/path) instead."
        )
    if not params.get("dbname"):
        raise BadDsn("The connection string names no database (dbname=... or /name in a URL).")
    return {k: str(v) for k, v in params.items() if v is not None}


def redact(dsn: str) -> str:
    """The DSN without any password in it, for showing back to a person."""
    dsn = re.sub(r"(://[^:/@\s]*):[^@\s]*@", r"\1@", dsn)
    return re.sub(r"\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S*)\s*", "", dsn).strip()


def connect(
    dsn: str, password: str | None, *, timeout: int = 5, autocommit: bool = True, **extra: str
) -> psycopg.Connection:
    params = parse_dsn(dsn)
    params.setdefault("connect_timeout", str(timeout))
    params.setdefault("application_name", "runway")
    if password is not None:
        params["password"] = password
    params.update(extra)
    return psycopg.connect(conninfo.make_conninfo(**params), autocommit=autocommit)


def sqlalchemy_url(dsn: str, password: str | None) -> str:
    """A ``postgresql+psycopg://`` URL for Alembic/SQLAlchemy. Holds the password: never log it."""
    params = parse_dsn(dsn)
    user = quote(params.pop("user", ""), safe="")
    host = params.pop("host", "")
    port = params.pop("port", "")
    dbname = quote(params.pop("dbname"), safe="")
    auth = user + (f":{quote(password, safe='')}" if password else "")
    netloc = (f"{auth}@" if auth else "") + quote(host, safe="") + (f":{port}" if port else "")
    query = "&".join(f"{quote(k)}={quote(v)}" for k, v in sorted(params.items()))
    return f"postgresql+psycopg://{netloc}/{dbname}" + (f"?{query}" if query else "")


@dataclass
class Probe:
    ok: bool
    problem: str = ""
    message: str = ""
    server_version: str = ""
    current_revisions: list[str] = field(default_factory=list)
    latency_ms: float | None = None


def classify(exc: Exception) -> str:
    text = str(exc).lower()
    if isinstance(exc, errors.InvalidPassword) or "password authentication failed" in text:
        return "auth_failed"
    if "no password supplied" in text or "authentication failed" in text:
        return "auth_failed"
    if isinstance(exc, errors.InvalidCatalogName) or (
        "database" in text and "does not exist" in text
    ):
        return "no_database"
    if "timeout expired" in text or "timed out" in text:
        return "timeout"
    if any(
        marker in text
        for marker in (
            "connection refused",
            "could not translate host name",
            "name or service not known",
            "no route to host",
            "network is unreachable",
            "could not connect",
            "no such file or directory",
        )
    ):
        return "unreachable"
    return "error"


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines[:2]) or exc.__class__.__name__


def probe(dsn: str, password: str | None, *, timeout: int = 5) -> Probe:
    """Connect, read the server version and ``alembic_version``; classify any failure."""
    try:
        parse_dsn(dsn)
    except BadDsn as exc:
        return Probe(False, "malformed_dsn", str(exc))
    started = time.monotonic()
    try:
        with connect(dsn, password, timeout=timeout) as conn:
            latency = (time.monotonic() - started) * 1000
            version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            try:
                rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
            except errors.UndefinedTable:
                return Probe(
                    False,
                    "no_alembic_version",
                    PROBLEM_MESSAGES["no_alembic_version"]
                    + ". Run `alembic stamp <revision>` on it, or pick the right database.",
                    server_version=version,
                    latency_ms=latency,
                )
    except psycopg.Error as exc:
        problem = classify(exc)
        return Probe(False, problem, f"{PROBLEM_MESSAGES[problem]}: {_first_line(exc)}")
    return Probe(
        True,
        server_version=version,
        current_revisions=sorted(row[0] for row in rows),
        latency_ms=latency,
    )
