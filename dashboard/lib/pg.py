"""Talking to managed PostgreSQL databases: DSN parsing, connecting, probing.

The only module that opens connections to managed databases (Runway's own database is Django's).
Errors are classified into a small set of problems, each with a message a person can act on.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import conninfo, errors, sql
from psycopg.abc import Params, QueryNoTemplate

from dashboard.lib.secrets import DEFAULT_REQUIRE_AUTH

# This module is the only one that imports the driver (an import-linter contract): what the rest
# of Runway names of it (a connection's type, the errors it raises, ``errors`` and ``sql``) it
# names through here.
Connection = psycopg.Connection
Error = psycopg.Error
OperationalError = psycopg.OperationalError

PROBLEM_MESSAGES = {
    "malformed_dsn": "The connection string cannot be parsed",
    "secret": "The password reference cannot be resolved",
    "unreachable": "The database server cannot be reached",
    "timeout": "The database server did not answer in time",
    "auth_failed": "The server refused the user name or password",
    "auth_method": (
        "The server asked for the password in a way this database does not allow (clear text is "
        "never allowed), so Runway did not send it"
    ),
    "no_database": "The database does not exist on that server",
    "no_alembic_version": (
        "The database has no alembic_version table: it was never stamped by Alembic"
    ),
    "error": "The connection failed",
}


class BadDsn(ValueError):
    pass


# What a managed database's connection string may say. Everything else libpq knows either makes
# the worker read one of its local files (passfile, service, sslcert, sslkey, ...) or decides how
# it authenticates (require_auth, krbsrvname, ...): Runway decides those, never the DSN.
_ALLOWED_KEYS = frozenset(
    {
        "host",
        "hostaddr",
        "port",
        "dbname",
        "user",
        "options",
        "application_name",
        "fallback_application_name",
        "connect_timeout",
        "client_encoding",
        "sslmode",
        "sslrootcert",
        "sslsni",
        "sslnegotiation",
        "sslcompression",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "channel_binding",
        "gssencmode",
        "target_session_attrs",
        "load_balance_hosts",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "tcp_user_timeout",
    }
)
_PARSE_ERRORS = (
    ('missing "="', "a word has no = after it (write key=value pairs)"),
    ("unterminated quoted string", "a quoted value is not closed"),
    ("invalid connection option", "it sets an option libpq does not know"),
    ("uri", "the postgresql:// URL is malformed"),
    ("percent-encoded", "the postgresql:// URL is malformed"),
)
DSN_EXAMPLE = "host=db.internal port=5432 dbname=app user=app, or postgresql://app@db.internal/app"


def parse_dsn(dsn: str) -> dict[str, str]:
    """Parse a libpq DSN or URL; refuse one that carries a password, names no database, or sets
    an option outside ``_ALLOWED_KEYS``. No message quotes the text: it may hold a password."""
    dsn = dsn.strip()
    if not dsn:
        raise BadDsn("The connection string is empty.")
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        text = str(exc).lower()
        why = next((why for marker, why in _PARSE_ERRORS if marker in text), "")
        raise BadDsn(
            f"The connection string cannot be parsed{': ' + why if why else ''}. "
            f"Write it as {DSN_EXAMPLE}."
        ) from None
    if "password" in params:
        raise BadDsn(
            "The connection string contains a password. Remove it and give a password "
            "reference (env:NAME or file:/path) instead."
        )
    refused = sorted(set(params) - _ALLOWED_KEYS)
    if refused:
        raise BadDsn(
            f"The connection string may not set {', '.join(refused)}: that makes the worker "
            "read a local file or changes how it authenticates, which Runway decides itself."
        )
    if not params.get("dbname"):
        raise BadDsn("The connection string names no database (dbname=... or /name in a URL).")
    return {k: str(v) for k, v in params.items() if v is not None}


_URI_USERINFO = re.compile(r"(?i)(postgres(?:ql)?://[^:/@\s]*):[^@\s]*@")
_KEYWORD_SECRET = re.compile(
    r"(?i)\b(password|passwd|pwd|sslpassword)\s*=\s*('(?:[^'\\]|\\.)*'?|\S*)\s*"
)
_QUERY_SECRET = re.compile(r"(?i)([?&](?:password|passwd|pwd|sslpassword)=)[^&\s]*")


def redact(dsn: str) -> str:
    """The DSN without any password in it, for showing back to a person: URI user-info and a
    ``password`` query parameter in a URL, a ``password=`` keyword in any case (quoted or not)
    elsewhere (an error text may quote a DSN among other words)."""
    dsn = _URI_USERINFO.sub(r"\1@", dsn)
    dsn = _QUERY_SECRET.sub(r"\1***", dsn)
    return _KEYWORD_SECRET.sub(lambda m: "" if m.group(2) != "***" else m.group(0), dsn).strip()


def echo(dsn: str) -> str:
    """What to show back in a form for a refused DSN: the options it may hold, rebuilt by
    libpq's own parser, or nothing when it does not parse (any word of it may be a password)."""
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return ""
    kept = {k: str(v) for k, v in params.items() if k in _ALLOWED_KEYS and v is not None}
    return conninfo.make_conninfo(**kept)


def target(dsn: str) -> str:
    """Where a DSN connects, as one canonical line: ``user@host:port/dbname`` (with the
    ``hostaddr`` when given). A password reference is bound to this."""
    params = parse_dsn(dsn)
    host = params.get("host", "") or "(local socket)"
    addr = f" [{params['hostaddr']}]" if params.get("hostaddr") else ""
    port = params.get("port", "") or "5432"
    return f"{params.get('user', '')}@{host}{addr}:{port}/{params['dbname']}"


# --- Which hosts managed databases may live on (RUNWAY_ALLOWED_DB_HOSTS) ---


def _host_rules(allowed: list[str]) -> tuple[list[Any], list[str]]:
    networks, names = [], []
    for entry in allowed:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            names.append(entry.lower().rstrip("."))
    return networks, names


def _name_allowed(name: str, names: list[str]) -> bool:
    name = name.lower().rstrip(".")
    return any(
        name == rule or (rule.startswith(("*.", ".")) and name.endswith(rule.lstrip("*")))
        for rule in names
    )


def host_refusal(dsn: str, allowed: list[str]) -> str:
    """Why ``dsn`` may not be connected to under the allow-list ``allowed`` (host names, ``*.``
    suffixes, networks in CIDR form, socket folders), or "" when it may (or no list is set).
    A host name outside the named hosts must resolve only to addresses in an allowed network."""
    if not allowed:
        return ""
    params = parse_dsn(dsn)
    networks, names = _host_rules(allowed)
    hosts = [h for h in params.get("host", "").split(",") if h] or ["(local socket)"]
    addrs = [a for a in params.get("hostaddr", "").split(",") if a]
    rule = "RUNWAY_ALLOWED_DB_HOSTS"
    for addr in addrs:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return f"hostaddr must be an IP address ({rule} is set)."
        if not any(ip in net for net in networks):
            return f"The address {addr} is not in a network {rule} allows."
    for host in hosts:
        if host.startswith("/") or host == "(local socket)":
            if host not in names:
                return f"The socket folder {host} is not allowed by {rule}."
            continue
        if _name_allowed(host, names) or addrs:
            continue
        try:
            ips = {ipaddress.ip_address(info[4][0]) for info in socket.getaddrinfo(host, None)}
        except (socket.gaierror, UnicodeError, ValueError):
            return f"The host {host} does not resolve here, so it cannot be checked against {rule}."
        if not ips or not all(any(ip in net for net in networks) for ip in ips):
            return f"The host {host} is not allowed by {rule}."
    return ""


# libpq reads a password file when it has no password; Runway's managed connections never use
# one (the worker's ~/.pgpass is for other things). This path cannot exist (/dev/null is a file).
NO_PASSFILE = "/dev/null/runway-has-no-passfile"


def login_params(password: str | None) -> dict[str, str]:
    """The libpq parameters that carry a password: the password itself (empty when there is
    none, so that no PGPASSWORD of the worker's is used), no password file, and ``require_auth``
    so the server cannot ask for the password in clear text (or by any method not allowed)."""
    params = {"password": password or "", "passfile": NO_PASSFILE}
    if password:
        params["require_auth"] = getattr(password, "require_auth", DEFAULT_REQUIRE_AUTH)
    return params


def connect(
    dsn: str, password: str | None, *, timeout: int = 5, autocommit: bool = True, **extra: str
) -> psycopg.Connection:
    params = parse_dsn(dsn)
    params.setdefault("connect_timeout", str(timeout))
    params.setdefault("application_name", "runway")
    params.update(login_params(password))
    params.update(extra)
    return psycopg.connect(conninfo.make_conninfo(**params), autocommit=autocommit)


def sqlalchemy_url(dsn: str, password: str | None, *, options: str = "") -> str:
    """A ``postgresql+psycopg://`` URL for Alembic/SQLAlchemy. Holds the password: never log it.
    ``options`` (e.g. ``-c lock_timeout=3min``) is added to the DSN's own server options."""
    params = parse_dsn(dsn)
    if options:
        params["options"] = f"{params['options']} {options}" if params.get("options") else options
    login = login_params(password)
    login.pop("password")
    params.update(login)
    user = quote(params.pop("user", ""), safe="")
    host = params.pop("host", "")
    port = params.pop("port", "")
    dbname = quote(params.pop("dbname"), safe="")
    auth = user + (f":{quote(password, safe='')}" if password else "")
    netloc = (f"{auth}@" if auth else "") + quote(host, safe="") + (f":{port}" if port else "")
    query = "&".join(f"{quote(k)}={quote(v)}" for k, v in sorted(params.items()))
    return f"postgresql+psycopg://{netloc}/{dbname}" + (f"?{query}" if query else "")


def program_url(dsn: str, password: str | None) -> tuple[str, str]:
    """A plain ``postgresql://`` URL for a program Runway starts (a project's own ``alembic``,
    whatever its driver), and the server options the DSN sets, which the caller passes in
    ``PGOPTIONS`` with its own. Holds the password: only ever in the program's environment.

    No ``options`` in the URL (it would override ``PGOPTIONS``) and nothing ConfigParser
    interpolates but a URL-quoted password's own ``%``. ``require_auth`` and ``passfile`` are in
    the URL, so a driver whose libpq is too old to refuse clear-text passwords fails to connect
    instead of sending one."""
    params = parse_dsn(dsn)
    options = params.pop("options", "")
    params.setdefault("application_name", "runway")
    login = login_params(password)
    login.pop("password")
    params.update(login)
    user = quote(params.pop("user", ""), safe="")
    host = params.pop("host", "")
    port = params.pop("port", "")
    dbname = quote(params.pop("dbname"), safe="")
    auth = user + (f":{quote(password, safe='')}" if password else "")
    netloc = (f"{auth}@" if auth else "") + quote(host, safe="") + (f":{port}" if port else "")
    query = "&".join(f"{quote(k)}={quote(v, safe='/,:')}" for k, v in sorted(params.items()))
    return f"postgresql://{netloc}/{dbname}" + (f"?{query}" if query else ""), options


def program_libpq_env(password: str | None, options: str) -> dict[str, str]:
    """The libpq variables of a program Runway starts with :func:`program_url`: no password
    file, ``require_auth`` for a driver that reads it from the environment, and ``options``
    (Runway's timeouts, after the DSN's own) in ``PGOPTIONS``."""
    env = {"PGPASSFILE": NO_PASSFILE}
    if password:
        env["PGREQUIREAUTH"] = getattr(password, "require_auth", DEFAULT_REQUIRE_AUTH)
    if options:
        env["PGOPTIONS"] = options
    return env


@dataclass
class Probe:
    ok: bool
    problem: str = ""
    message: str = ""
    server_version: str = ""
    current_revisions: list[str] = field(default_factory=list)
    latency_ms: float | None = None
    wal: dict[str, Any] = field(default_factory=dict)
    table_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)


def classify(exc: Exception) -> str:
    text = str(exc).lower()
    if "authentication method requirement" in text:
        return "auth_method"
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


def _one(
    conn: psycopg.Connection, query: QueryNoTemplate, params: Params | None = None
) -> tuple[Any, ...]:
    """The row of a query that always returns exactly one (an aggregate, ``SHOW``, a call)."""
    row = conn.execute(query, params).fetchone()
    if row is None:  # not for any query this module runs
        raise psycopg.ProgrammingError("the query returned no row")
    return tuple(row)


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines[:2]) or exc.__class__.__name__


_WAL_SETTINGS = ("wal_level", "archive_mode", "archive_command", "archive_library")
_ARCHIVER_COLUMNS = (
    "archived_count",
    "last_archived_wal",
    "last_archived_time",
    "failed_count",
    "last_failed_wal",
    "last_failed_time",
    "stats_reset",
)


def read_wal(conn: psycopg.Connection) -> dict[str, Any]:
    """WAL archiving as the server reports it, as JSON values; never fails the probe.

    Settings come from ``pg_settings``, which omits what the role may not read (then the value is
    None). Only the presence of ``archive_command`` is kept: its text may hold credentials.
    ``pg_stat_archiver`` may be unreadable for the role; ``archiver_error`` then says why.
    """
    wal: dict[str, Any] = dict.fromkeys(("wal_level", "archive_mode", "archive_command_set"))
    settings: dict[str, str]
    try:
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", [list(_WAL_SETTINGS)]
            ).fetchall()
        )
        wal["in_recovery"] = _one(conn, "SELECT pg_is_in_recovery()")[0]
    except psycopg.Error as exc:
        wal["settings_error"] = _first_line(exc)
        settings = {}
    wal["wal_level"] = settings.get("wal_level")
    wal["archive_mode"] = settings.get("archive_mode")
    if "archive_command" in settings or "archive_library" in settings:
        command = (settings.get("archive_command") or "").strip()
        wal["archive_command_set"] = bool(
            (command and command != "(disabled)") or settings.get("archive_library")
        )
    try:
        row = conn.execute(
            f"SELECT {', '.join(_ARCHIVER_COLUMNS)} FROM pg_stat_archiver"
        ).fetchone()
    except psycopg.Error as exc:
        wal["archiver"] = None
        wal["archiver_error"] = _first_line(exc)
    else:
        values = dict(zip(_ARCHIVER_COLUMNS, row or (), strict=False))
        wal["archiver"] = {
            k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in values.items()
        }
    return wal


def probe(dsn: str, password: str | None, *, timeout: int = 5) -> Probe:
    """Connect, read the server version, WAL archiving, table sizes and ``alembic_version``;
    classify any failure."""
    try:
        parse_dsn(dsn)
    except BadDsn as exc:
        return Probe(False, "malformed_dsn", str(exc))
    started = time.monotonic()
    try:
        with connect(dsn, password, timeout=timeout) as conn:
            latency = (time.monotonic() - started) * 1000
            version = _one(conn, "SHOW server_version")[0]
            wal = read_wal(conn)
            sizes = table_sizes(conn)
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
                    wal=wal,
                )
    except psycopg.Error as exc:
        problem = classify(exc)
        return Probe(False, problem, f"{PROBLEM_MESSAGES[problem]}: {_first_line(exc)}")
    return Probe(
        True,
        server_version=version,
        current_revisions=sorted(row[0] for row in rows),
        latency_ms=latency,
        wal=wal,
        table_sizes=sizes,
    )


# --- Client tools: pg_dump, pg_restore, psql; snapshots; integrity queries ---
#
# Each tool is the one of the server's major version (``/usr/lib/postgresql/<major>/bin``), found
# from the server's ``server_version_num``; the password reaches it only through PGPASSWORD in
# the subprocess's environment, never its arguments. Tools get a minimal environment: none of the
# worker's other secrets.

_TOOL_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "HOME")
_TOOL_DIRS = Path("/usr/lib/postgresql")
_TRANSIENT_TOOL_MARKERS = (
    "could not connect",
    "connection refused",
    "could not translate host name",
    "no route to host",
    "network is unreachable",
    "timeout expired",
    "server closed the connection unexpectedly",
    "connection to server",
    "the database system is starting up",
    "the database system is shutting down",
    "too many connections",
)


class ToolFailed(RuntimeError):
    """A PostgreSQL client tool failed; the message summarises its stderr (never a secret)."""

    def __init__(self, tool: str, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.tool = tool
        self.transient = transient


def client_tool(name: str, server_version_num: int | None = None) -> str:
    """The path of ``name`` (pg_dump, pg_restore, psql) matching the server's major version.

    The same major when installed, else the oldest newer one (newer clients read older servers),
    else whatever ``PATH`` has.
    """
    if server_version_num:
        major = server_version_num // 10000
        installed = sorted(
            int(p.parent.parent.name)
            for p in _TOOL_DIRS.glob(f"*/bin/{name}")
            if p.parent.parent.name.isdigit()
        )
        for candidate in [m for m in installed if m == major] + [m for m in installed if m > major]:
            return str(_TOOL_DIRS / str(candidate) / "bin" / name)
    found = shutil.which(name)
    if found:
        return found
    raise ToolFailed(name, f"{name} is not installed (apt-get install postgresql-client).")


_REQUIRE_AUTH_SINCE = 160000  # libpq learnt require_auth in PostgreSQL 16


@functools.cache
def _tool_library_path() -> str | None:
    """A folder whose ``libpq.so.5`` knows ``require_auth``, for the client tools; None when
    the system's libpq knows it already.

    Debian 12's tools link the system libpq 15, which does not: they would send a password in
    clear text to any server that asks. psycopg's binary wheel ships libpq 17+, and libpq keeps
    its ABI (soname 5), so the tools load that one instead, as they would PGDG's newer libpq5.
    """
    if psycopg.pq.__impl__ != "binary":
        if psycopg.pq.version() >= _REQUIRE_AUTH_SINCE:
            return None
        raise ToolFailed(
            "libpq",
            "This host's libpq cannot refuse clear-text passwords (require_auth needs libpq 16 "
            "or newer): install psycopg[binary] or a newer libpq5.",
        )
    import psycopg_binary

    libs = Path(psycopg_binary.__file__).resolve().parent.parent / "psycopg_binary.libs"
    found = sorted(libs.glob("libpq-*.so.5*"))
    if not found:
        raise ToolFailed("libpq", f"psycopg's bundled libpq is missing from {libs}.")
    folder = Path(tempfile.gettempdir()) / f"runway-libpq-{os.getuid()}-{found[-1].name}"
    folder.mkdir(mode=0o755, exist_ok=True)
    link = folder / "libpq.so.5"
    if not link.is_symlink() or link.resolve() != found[-1]:
        tmp = folder / f".libpq.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(found[-1])
        tmp.replace(link)
    # The bundled libpq finds its own libssl etc. beside it.
    return f"{folder}:{libs}"


def tool_env(password: str | None, *, options: str = "") -> dict[str, str]:
    """The environment of a client tool: none of the worker's other variables; the password
    through PGPASSWORD with ``require_auth`` (PGREQUIREAUTH) and no password file."""
    env = {k: v for k, v in os.environ.items() if k in _TOOL_ENV or k.startswith("LC_")}
    env["PGPASSFILE"] = NO_PASSFILE
    if password:
        env["PGPASSWORD"] = password
        env["PGREQUIREAUTH"] = getattr(password, "require_auth", DEFAULT_REQUIRE_AUTH)
        library = _tool_library_path()
        if library:
            env["LD_LIBRARY_PATH"] = library
    if options:
        env["PGOPTIONS"] = options
    return env


def tool_conninfo(dsn: str, *, dbname: str | None = None, timeout: int = 10) -> str:
    """A conninfo string for a tool's ``--dbname``: never with a password in it."""
    params = parse_dsn(dsn)
    if dbname:
        params["dbname"] = dbname
    params.setdefault("connect_timeout", str(timeout))
    params.setdefault("application_name", "runway")
    return conninfo.make_conninfo(**params)


def with_dbname(dsn: str, dbname: str) -> str:
    params = parse_dsn(dsn)
    params["dbname"] = dbname
    return conninfo.make_conninfo(**params)


def explain_tool(tool: str, returncode: int, stderr: str) -> ToolFailed:
    """A ToolFailed naming what went wrong, from a tool's exit code and stderr."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    wanted = [
        line for line in lines if re.search(r"\b(error|fatal|FATAL|ERROR|could not)\b", line)
    ] or lines
    summary = "; ".join(" ".join(_strip_prefix(tool, line).split()) for line in wanted[:3])[:600]
    summary = redact(summary) or (
        f"killed by signal {-returncode}" if returncode < 0 else f"exit {returncode}"
    )
    text = stderr.lower()
    permanent = ("password authentication failed", "permission denied", "authentication method")
    transient = any(marker in text for marker in _TRANSIENT_TOOL_MARKERS) and not any(
        marker in text for marker in permanent
    )
    return ToolFailed(tool, f"{tool} failed: {summary}", transient=transient)


def _strip_prefix(tool: str, line: str) -> str:
    for prefix in (f"{tool}: ", "error: ", "pg_restore: ", "pg_dump: "):
        line = line.removeprefix(prefix)
    return line


def pg_dump(
    dsn: str,
    password: str | None,
    *,
    snapshot: str | None,
    fmt: str = "custom",
    directory: Path | None = None,
    jobs: int = 1,
    server_version: int | None = None,
    stdout: Any = None,
    stderr: Any = None,
) -> subprocess.Popen:
    """Start pg_dump: custom format to ``stdout`` uncompressed (compression is a later stage),
    or directory format into ``directory`` with ``jobs`` workers; in ``snapshot`` when given."""
    argv = [client_tool("pg_dump", server_version), "--dbname", tool_conninfo(dsn)]
    argv += ["--no-password", "--compress=0"]
    if snapshot:
        argv += ["--snapshot", snapshot]
    if fmt == "custom":
        argv += ["--format=custom"]
    elif fmt == "directory":
        if directory is None:
            raise ValueError("the directory format needs a directory")
        argv += ["--format=directory", "--jobs", str(jobs), "--file", str(directory)]
    else:
        raise ValueError(f"unknown dump format {fmt!r}")
    return subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=tool_env(password)
    )


def schema_dump(
    dsn: str,
    password: str | None,
    *,
    server_version: int | None = None,
    exclude_tables: Sequence[str] = (),
    timeout: float = 300,
) -> str:
    """The schema of ``dsn``'s database as plain SQL (``pg_dump --schema-only`` without owners
    or privileges), ``exclude_tables`` (pg_dump patterns) left out; waits at most 10 s for a
    table's lock and ``timeout`` s in all. ToolFailed when pg_dump fails."""
    argv = [client_tool("pg_dump", server_version), "--dbname", tool_conninfo(dsn)]
    argv += ["--no-password", "--schema-only", "--no-owner", "--no-privileges"]
    argv += ["--format=plain", "--lock-wait-timeout=10000"]
    argv += [f"--exclude-table={pattern}" for pattern in exclude_tables]
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=tool_env(password),
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise ToolFailed("pg_dump", f"pg_dump failed: no schema after {timeout:g} s") from exc
    if done.returncode != 0:
        raise explain_tool("pg_dump", done.returncode, done.stderr.decode(errors="replace"))
    return done.stdout.decode(errors="replace")


def pg_restore(
    dsn: str,
    password: str | None,
    *,
    source: Path | None = None,
    jobs: int = 1,
    server_version: int | None = None,
    stdin: Any = None,
    stderr: Any = None,
    options: str = "",
    clean: bool = False,
) -> subprocess.Popen:
    """Start pg_restore into ``dsn``'s database without owners or privileges, stopping at the
    first error: from ``stdin`` (custom format) when ``source`` is None, else from ``source``.
    ``clean``: into a database that has the objects already, dropping each first, in one
    transaction (so a failure leaves it as it was; ``jobs`` is then 1)."""
    argv = [client_tool("pg_restore", server_version), "--dbname", tool_conninfo(dsn)]
    argv += ["--no-password", "--no-owner", "--no-privileges", "--exit-on-error"]
    if clean:
        argv += ["--clean", "--if-exists", "--single-transaction"]
    if source is None:
        argv += ["--format=custom"]
    elif clean:
        argv += [str(source)]
    else:
        argv += ["--jobs", str(jobs), str(source)]
    return subprocess.Popen(
        argv,
        stdin=stdin if source is None else subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        env=tool_env(password, options=options),
    )


def psql(
    dsn: str, password: str | None, sql_text: str, *, server_version: int | None = None
) -> str:
    """Run ``sql_text`` with psql (stop at the first error); return its unaligned output."""
    argv = [client_tool("psql", server_version), "--dbname", tool_conninfo(dsn)]
    argv += ["--no-password", "--no-psqlrc", "-v", "ON_ERROR_STOP=1", "-At", "-f", "-"]
    done = subprocess.run(
        argv, input=sql_text, capture_output=True, text=True, env=tool_env(password)
    )
    if done.returncode != 0:
        raise explain_tool("psql", done.returncode, done.stderr)
    return done.stdout


def export_snapshot(conn: psycopg.Connection) -> str:
    """Open a REPEATABLE READ, READ ONLY transaction on ``conn`` and export its snapshot.

    The snapshot stays importable (``pg_dump --snapshot``) while the transaction is open: keep
    ``conn`` open and its transaction uncommitted until the tool has started."""
    if conn.autocommit:
        raise ValueError("export_snapshot needs a connection with autocommit off")
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    return str(_one(conn, "SELECT pg_export_snapshot()")[0])


class MissingTables(ValueError):
    pass


def _table_ident(name: str) -> sql.Identifier:
    return sql.Identifier(*name.split(".", 1))


def check_tables(conn: psycopg.Connection, tables: list[str]) -> None:
    """MissingTables naming each of ``tables`` that does not exist (no error in the transaction)."""
    missing = [
        name for name in tables if _one(conn, "SELECT to_regclass(%s)", (_quoted(name),))[0] is None
    ]
    if missing:
        raise MissingTables(
            "The critical table(s) " + ", ".join(missing) + " do not exist in the database: "
            "fix the managed database's critical tables."
        )


def _quoted(name: str) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split(".", 1))


def row_counts(conn: psycopg.Connection, tables: list[str]) -> dict[str, int]:
    """Exact ``count(*)`` of each table, in the transaction (and snapshot) ``conn`` has open."""
    counts = {}
    for name in tables:
        query = sql.SQL("SELECT count(*) FROM {}").format(_table_ident(name))
        counts[name] = int(_one(conn, query)[0])
    return counts


def alembic_revision(conn: psycopg.Connection) -> str:
    """The ``alembic_version`` revision(s), comma-joined; "" when there is no such table."""
    if _one(conn, "SELECT to_regclass('alembic_version')")[0] is None:
        return ""
    rows = conn.execute("SELECT version_num FROM alembic_version ORDER BY 1").fetchall()
    return ",".join(str(row[0]) for row in rows)


USERS_QUERY = (
    "SELECT COUNT(*) AS user_count, COUNT(DISTINCT plan_id) AS plan_count, "
    "MAX(created_at) AS latest_user FROM users"
)


def users_summary(conn: psycopg.Connection) -> dict[str, Any] | None:
    """The seed's user/plan query, or None when the database has no users(plan_id, created_at)."""
    (has,) = _one(
        conn,
        "SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass('users') "
        "AND attname IN ('plan_id', 'created_at') AND NOT attisdropped",
    )
    if has != 2:
        return None
    user_count, plan_count, latest = _one(conn, USERS_QUERY)
    return {
        "user_count": int(user_count),
        "plan_count": int(plan_count),
        "latest_user": latest.isoformat() if latest is not None else None,
    }


@dataclass(frozen=True)
class ForeignKey:
    name: str
    table: str
    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]
    schema: str = "public"
    ref_schema: str = "public"

    def __str__(self) -> str:
        return (
            f"{self.table}({', '.join(self.columns)}) -> "
            f"{self.ref_table}({', '.join(self.ref_columns)})"
        )


_FOREIGN_KEYS = """
SELECT c.conname, n.nspname, t.relname, rn.nspname, rt.relname,
       ARRAY(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(num, i)
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.num ORDER BY k.i),
       ARRAY(SELECT a.attname FROM unnest(c.confkey) WITH ORDINALITY k(num, i)
             JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.num ORDER BY k.i)
FROM pg_constraint c
JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace
JOIN pg_class rt ON rt.oid = c.confrelid JOIN pg_namespace rn ON rn.oid = rt.relnamespace
WHERE c.contype = 'f' AND c.conparentid = 0
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY n.nspname, t.relname, c.conname
"""


def foreign_keys(conn: psycopg.Connection) -> list[ForeignKey]:
    return [
        ForeignKey(
            name=row[0],
            schema=row[1],
            table=row[2],
            ref_schema=row[3],
            ref_table=row[4],
            columns=tuple(row[5]),
            ref_columns=tuple(row[6]),
        )
        for row in conn.execute(_FOREIGN_KEYS).fetchall()
    ]


def orphan_count(conn: psycopg.Connection, fk: ForeignKey) -> int:
    """Rows of ``fk.table`` whose key (all columns set, MATCH SIMPLE) has no referenced row."""
    child = [sql.SQL("c.{}").format(sql.Identifier(col)) for col in fk.columns]
    parent = [sql.SQL("p.{}").format(sql.Identifier(col)) for col in fk.ref_columns]
    query = sql.SQL(
        "SELECT count(*) FROM {child} AS c WHERE {set} AND NOT EXISTS "
        "(SELECT 1 FROM {parent} AS p WHERE {match})"
    ).format(
        child=sql.Identifier(fk.schema, fk.table),
        parent=sql.Identifier(fk.ref_schema, fk.ref_table),
        set=sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(c) for c in child),
        match=sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(p, c) for p, c in zip(parent, child, strict=True)
        ),
    )
    return int(_one(conn, query)[0])


def create_database(conn: psycopg.Connection, name: str) -> None:
    """CREATE DATABASE ``name`` (from template0) over an autocommit ``conn``."""
    conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))


def drop_database(conn: psycopg.Connection, name: str) -> None:
    """DROP DATABASE IF EXISTS ``name`` WITH (FORCE): its sessions are ended first."""
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# --- Activity, locks and readiness (gates) ---
#
# What the pre-migration gates read from a managed server. Sessions of other roles show in
# ``pg_stat_activity`` without their state, start times or query unless the role is a superuser or
# has ``pg_read_all_stats``; ``hidden_sessions`` counts those so a gate can say it cannot see them.

_QUERY_CHARS = 200


def _seconds(value: Any) -> float | None:
    return round(float(value), 1) if value is not None else None


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


_LONG_TRANSACTIONS = """
SELECT pid, usename, application_name, client_addr::text, state, xact_start,
       extract(epoch FROM now() - xact_start), wait_event_type, left(query, %(chars)s)
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND backend_type = 'client backend'
  AND xact_start < now() - make_interval(secs => %(seconds)s)
ORDER BY xact_start
"""


def long_transactions(conn: psycopg.Connection, seconds: float) -> list[dict[str, Any]]:
    """Other sessions in this database whose transaction has been open longer than ``seconds``,
    oldest first (only those the role may see: see ``hidden_sessions``)."""
    rows = conn.execute(
        _LONG_TRANSACTIONS, {"seconds": float(seconds), "chars": _QUERY_CHARS}
    ).fetchall()
    return [
        {
            "pid": row[0],
            "usename": row[1],
            "application_name": row[2],
            "client_addr": row[3],
            "state": row[4],
            "xact_start": _iso(row[5]),
            "age_s": _seconds(row[6]),
            "wait_event_type": row[7],
            "query": row[8],
        }
        for row in rows
    ]


def hidden_sessions(conn: psycopg.Connection) -> int:
    """Sessions in this database whose activity the role may not read (no pg_read_all_stats)."""
    (count,) = _one(
        conn,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND backend_type IS NULL",
    )
    return int(count)


def existing_tables(conn: psycopg.Connection, tables: list[str]) -> list[str]:
    """Those of ``tables`` (plain or schema-qualified) that exist, as ``schema.table``."""
    rows = conn.execute(
        "SELECT n.nspname || '.' || c.relname FROM unnest(%s::text[]) WITH ORDINALITY AS t(name, i)"
        " JOIN pg_class c ON c.oid = to_regclass(t.name)"
        " JOIN pg_namespace n ON n.oid = c.relnamespace ORDER BY t.i",
        [[_quoted(name) for name in tables]],
    ).fetchall()
    return list(dict.fromkeys(row[0] for row in rows))


_LOCK_HOLDERS = """
SELECT n.nspname || '.' || c.relname, l.pid, l.mode, l.granted, l.virtualtransaction,
       a.usename, a.application_name, a.state, a.xact_start,
       extract(epoch FROM now() - a.xact_start),
       CASE WHEN l.granted THEN NULL ELSE pg_blocking_pids(l.pid) END, left(a.query, %(chars)s),
       a.backend_type
FROM pg_locks l
JOIN pg_class c ON c.oid = l.relation
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'relation'
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.relation = ANY(SELECT to_regclass(name) FROM unnest(%(tables)s::text[]) AS name)
  AND l.pid IS DISTINCT FROM pg_backend_pid()
ORDER BY l.granted DESC, a.xact_start NULLS FIRST, l.pid
"""


def lock_holders(conn: psycopg.Connection, tables: list[str]) -> list[dict[str, Any]]:
    """Other sessions holding or waiting for a lock on any of ``tables`` (plain or
    schema-qualified names; missing tables are skipped). A prepared transaction has no pid."""
    if not tables:
        return []
    rows = conn.execute(
        _LOCK_HOLDERS, {"tables": [_quoted(name) for name in tables], "chars": _QUERY_CHARS}
    ).fetchall()
    return [
        {
            "table": row[0],
            "pid": row[1],
            "mode": row[2],
            "granted": row[3],
            "prepared": row[1] is None,
            "virtualtransaction": row[4],
            "usename": row[5],
            "application_name": row[6],
            "state": row[7],
            "xact_start": _iso(row[8]),
            "xact_age_s": _seconds(row[9]),
            "blocked_by": list(row[10]) if row[10] is not None else None,
            "query": row[11],
            "backend_type": row[12],
        }
        for row in rows
    ]


def data_directory(conn: psycopg.Connection) -> str | None:
    """The server's data directory; None when the role may not read it (it needs superuser or
    pg_read_all_settings, else ``pg_settings`` leaves the row out)."""
    row = conn.execute("SELECT setting FROM pg_settings WHERE name = 'data_directory'").fetchone()
    return str(row[0]) if row and row[0] else None


def runs_from(conn: psycopg.Connection, data_dir: str) -> bool | None:
    """Whether the connected server is the postmaster of ``data_dir`` on this host: its
    ``postmaster.pid`` names the same port and start time. None when that file cannot be read
    here (a worker that is neither root nor the server's user)."""
    try:
        lines = (Path(data_dir) / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return False
    except (PermissionError, NotADirectoryError, IsADirectoryError):
        return None
    started, port = _one(
        conn, "SELECT extract(epoch FROM pg_postmaster_start_time()), current_setting('port')"
    )
    try:
        file_started, file_port = int(lines[2]), lines[3].strip()
    except (IndexError, ValueError):
        return False
    return file_port == str(port) and abs(file_started - float(started)) < 5


def pg_isready(dsn: str, server_version: int | None = None, timeout: int = 5) -> tuple[int, str]:
    """Run ``pg_isready`` (of the server's major) against the DSN's host, port and database.

    Returns its exit code (0 accepting, 1 rejecting, 2 no response, 3 bad parameters) and what
    it printed. Raises BadDsn for a malformed DSN and ToolFailed when the binary is missing."""
    argv = [client_tool("pg_isready", server_version), "--timeout", str(timeout)]
    argv += ["--dbname", tool_conninfo(dsn, timeout=timeout)]
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=tool_env(None),  # pg_isready never authenticates: no password goes to it
            timeout=timeout + 5,
        )
    except subprocess.TimeoutExpired:
        return 2, f"pg_isready gave no answer within {timeout + 5} seconds"
    output = " ".join(f"{done.stdout} {done.stderr}".split())
    return done.returncode, redact(output)


# --- Copies and lock waits (rehearsal) ---


def other_sessions(conn: psycopg.Connection, dbname: str) -> int:
    """Sessions connected to ``dbname`` other than ``conn``'s own. Autovacuum workers are left
    out: ``CREATE DATABASE ... TEMPLATE`` ends them itself."""
    (count,) = _one(
        conn,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() "
        "AND backend_type IS DISTINCT FROM 'autovacuum worker'",
        (dbname,),
    )
    return int(count)


def can_clone(conn: psycopg.Connection, template: str) -> bool:
    """Whether ``conn``'s role may ``CREATE DATABASE ... TEMPLATE template``: a superuser, or a
    role with CREATEDB that owns ``template`` (or ``template`` is marked as a template)."""
    row = conn.execute(
        "SELECT r.rolsuper OR (r.rolcreatedb AND (d.datistemplate "
        "OR pg_has_role(r.oid, d.datdba, 'USAGE'))) "
        "FROM pg_roles r CROSS JOIN pg_database d "
        "WHERE r.rolname = current_user AND d.datname = %s",
        (template,),
    ).fetchone()
    return bool(row and row[0])


def create_database_from_template(conn: psycopg.Connection, name: str, template: str) -> None:
    """CREATE DATABASE ``name`` TEMPLATE ``template`` over an autocommit ``conn``: a file-level
    copy, owned by ``conn``'s role. Fails with ObjectInUse while anyone is connected to
    ``template``."""
    conn.execute(
        sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template)
        )
    )


@dataclass(frozen=True)
class LockWait:
    """A backend of the connected database waiting for a lock, and for how long so far."""

    pid: int
    locktype: str
    mode: str
    relation: str | None
    waited_ms: float


# ``waitstart`` (PostgreSQL 14+) is set a moment after the wait begins: until then count 0 ms.
_LOCK_WAITS = """
SELECT l.pid, l.locktype, l.mode, l.relation::regclass::text,
       EXTRACT(EPOCH FROM clock_timestamp() - {start}) * 1000
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE NOT l.granted AND a.datname = current_database() AND l.pid <> pg_backend_pid()
ORDER BY 5 DESC
"""


def lock_waits(conn: psycopg.Connection) -> list[LockWait]:
    """Every backend of ``conn``'s database waiting for a lock (longest wait first). Before
    PostgreSQL 14 the wait is counted from the start of the waiting statement."""
    start = (
        "coalesce(l.waitstart, clock_timestamp())"
        if conn.info.server_version >= 140000
        else "coalesce(a.query_start, clock_timestamp())"
    )
    rows = conn.execute(sql.SQL(_LOCK_WAITS).format(start=sql.SQL(start))).fetchall()
    return [
        LockWait(
            pid=int(row[0]),
            locktype=str(row[1]),
            mode=str(row[2]),
            relation=row[3],
            waited_ms=max(0.0, float(row[4])),
        )
        for row in rows
    ]


# --- One migration at a time (execution) ---

# Session-level advisory locks live in the database they are taken in, so this one key, taken in
# the managed database itself, serialises every Runway process (on any host) migrating it.
MIGRATION_LOCK_KEY = 0x52_55_4E_4D_49_47  # "RUNMIG"


def try_migration_lock(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", [MIGRATION_LOCK_KEY]).fetchone()
    return bool(row and row[0])


def release_migration_lock(conn: psycopg.Connection) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK_KEY])


def migration_lock_holder(conn: psycopg.Connection) -> dict[str, Any] | None:
    """Who holds the migration lock in this database (pid, user, application, since)."""
    row = conn.execute(
        """
        SELECT a.pid, a.usename, a.application_name, a.backend_start
        FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.database = (
            SELECT oid FROM pg_database WHERE datname = current_database())
          AND ((l.classid::bigint << 32) | l.objid::bigint) = %s
        """,
        [MIGRATION_LOCK_KEY],
    ).fetchone()
    if row is None:
        return None
    return {"pid": row[0], "user": row[1], "application": row[2], "since": row[3].isoformat()}


# --- Table sizes (risk analysis) ---

_TABLE_SIZES = """
SELECT n.nspname, c.relname, c.relkind,
       CASE WHEN c.relkind = 'p' THEN
            (SELECT COALESCE(sum(GREATEST(pc.reltuples, 0)), 0)::bigint
             FROM pg_partition_tree(c.oid) t JOIN pg_class pc ON pc.oid = t.relid WHERE t.isleaf)
            ELSE c.reltuples::bigint END,
       CASE WHEN c.relkind = 'p' THEN
            (SELECT COALESCE(sum(pg_total_relation_size(t.relid)), 0)::bigint
             FROM pg_partition_tree(c.oid) t WHERE t.isleaf)
            ELSE pg_total_relation_size(c.oid) END,
       pg_relation_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
ORDER BY 1, 2
"""
_COUNT_BELOW_BYTES = 50 * 1024 * 1024


def table_sizes(conn: psycopg.Connection) -> dict[str, tuple[int, int]]:
    """Every table's estimated rows and total bytes (heap, indexes, TOAST), keyed by its name
    as the default search path sees it: ``users`` in ``public``, ``schema.table`` elsewhere.

    Rows are the planner's estimate (``pg_class.reltuples``), which costs nothing. A table never
    analysed has no estimate: it is counted exactly when its heap is under 50 MB, and reported
    as -1 (unknown) above that. A partitioned table sums its partitions.
    """
    sizes: dict[str, tuple[int, int]] = {}
    for schema, name, kind, rows, total, heap in conn.execute(_TABLE_SIZES).fetchall():
        key = name if schema == "public" else f"{schema}.{name}"
        rows = int(rows)
        if rows < 0 and kind != "p":
            if heap < _COUNT_BELOW_BYTES:
                query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, name))
                rows = int(_one(conn, query)[0])
            else:
                rows = -1
        sizes[key] = (rows, int(total))
    return sizes


# --- Guarded execution: who holds or waits for a table's locks; CONCURRENTLY's leftovers ---


@dataclass(frozen=True)
class RelationLock:
    """One lock another session holds (``granted``) or waits for on a relation asked about.
    A prepared transaction has no pid; a session the role may not read has no user, query or
    times (``pg_read_all_stats``)."""

    table: str  # the name asked about
    relation: str  # schema.name
    pid: int | None
    mode: str  # as pg_locks says it: AccessShareLock, ..., AccessExclusiveLock
    granted: bool
    user: str | None = None
    application: str | None = None
    backend_type: str | None = None
    state: str | None = None
    query: str | None = None
    xact_start: str | None = None  # ISO
    state_change: str | None = None  # ISO
    wait_start: str | None = None  # ISO (PostgreSQL 14+, while it waits)
    xact_age_ms: float | None = None  # how long its transaction has been open


_RELATION_LOCKS = """
SELECT t.name, n.nspname || '.' || c.relname, l.pid, l.mode, l.granted,
       a.usename, a.application_name, a.backend_type, a.state, left(a.query, %(chars)s),
       a.xact_start, a.state_change, {wait_start},
       extract(epoch FROM clock_timestamp() - a.xact_start) * 1000
FROM unnest(%(tables)s::text[], %(asked)s::text[]) AS t(quoted, name)
JOIN pg_locks l ON l.locktype = 'relation' AND l.relation = to_regclass(t.quoted)
     AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
JOIN pg_class c ON c.oid = l.relation
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.pid IS DISTINCT FROM pg_backend_pid()
  AND (l.pid IS NULL OR l.pid <> ALL(%(exclude)s::int[]))
ORDER BY l.granted DESC, a.xact_start NULLS FIRST, l.pid, t.name
"""


def relation_locks(
    conn: psycopg.Connection, tables: list[str], *, exclude: list[int] | tuple[int, ...] = ()
) -> list[RelationLock]:
    """Every lock other sessions (not ``conn``'s, nor the ``exclude`` pids) hold or wait for
    on ``tables`` (plain or schema-qualified names as the rules write them; missing ones are
    skipped). One cheap catalog read, no lock on the tables themselves: what guarded execution
    polls while it waits."""
    if not tables:
        return []
    start = "l.waitstart" if conn.info.server_version >= 140000 else "NULL::timestamptz"
    rows = conn.execute(
        sql.SQL(_RELATION_LOCKS).format(wait_start=sql.SQL(start)),
        {
            "tables": [_quoted(name) for name in tables],
            "asked": list(tables),
            "exclude": [int(pid) for pid in exclude],
            "chars": _QUERY_CHARS,
        },
    ).fetchall()
    return [
        RelationLock(
            table=row[0],
            relation=row[1],
            pid=row[2],
            mode=row[3],
            granted=bool(row[4]),
            user=row[5],
            application=row[6],
            backend_type=row[7],
            state=row[8],
            query=row[9],
            xact_start=_iso(row[10]),
            state_change=_iso(row[11]),
            wait_start=_iso(row[12]),
            xact_age_ms=float(row[13]) if row[13] is not None else None,
        )
        for row in rows
    ]


def server_version_num(conn: psycopg.Connection) -> int:
    """150008 for PostgreSQL 15.8."""
    return int(conn.info.server_version)


_INVALID_INDEXES = """
SELECT n.nspname, c.relname
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT i.indisvalid
  AND i.indrelid = to_regclass(%(table)s)
  AND (c.relname = ANY(%(names)s::text[])
       OR (%(reindexed)s AND c.relname ~ '_cc(new|old)[0-9]*$'))
  AND NOT EXISTS (SELECT 1 FROM pg_stat_progress_create_index p WHERE p.index_relid = c.oid)
ORDER BY 1, 2
"""


def invalid_indexes(
    conn: psycopg.Connection,
    table: str,
    names: list[str] | tuple[str, ...],
    *,
    reindexed: bool = False,
) -> list[tuple[str, str]]:
    """The INVALID indexes (``pg_index.indisvalid`` false) on ``table`` named one of ``names``
    or, with ``reindexed``, the ``_ccnew``/``_ccold`` ones a failed REINDEX CONCURRENTLY leaves,
    as (schema, name). An index some session is building right now
    (``pg_stat_progress_create_index``) is not one of them."""
    if to_regclass(conn, table) is None:
        return []
    rows = conn.execute(
        _INVALID_INDEXES,
        {"table": _quoted(table), "names": list(names), "reindexed": reindexed},
    ).fetchall()
    return [(str(row[0]), str(row[1])) for row in rows]


def to_regclass(conn: psycopg.Connection, name: str) -> str | None:
    """``name`` (plain or schema-qualified, as the rules write it) as the server resolves it,
    or None when there is no such relation."""
    (found,) = _one(conn, "SELECT to_regclass(%s)::text", (_quoted(name),))
    return str(found) if found is not None else None


def drop_index_concurrently(
    conn: psycopg.Connection,
    schema: str,
    name: str,
    *,
    lock_timeout_ms: int,
    statement_timeout_ms: int,
) -> None:
    """``DROP INDEX CONCURRENTLY IF EXISTS schema.name`` over an autocommit ``conn``, under
    those timeouts; the connection's own timeouts are restored afterwards."""
    saved = _one(
        conn, "SELECT current_setting('lock_timeout'), current_setting('statement_timeout')"
    )
    try:
        set_timeouts(
            conn, lock_timeout_ms=lock_timeout_ms, statement_timeout_ms=statement_timeout_ms
        )
        conn.execute(
            sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(schema, name))
        )
    finally:
        if not conn.closed:
            conn.execute("SELECT set_config('lock_timeout', %s, false)", (saved[0],))
            conn.execute("SELECT set_config('statement_timeout', %s, false)", (saved[1],))


def set_timeouts(
    conn: psycopg.Connection, *, lock_timeout_ms: int, statement_timeout_ms: int
) -> None:
    """Session-level (plain SET) lock and statement timeouts of ``conn``."""
    conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{int(lock_timeout_ms)}ms",))
    conn.execute(
        "SELECT set_config('statement_timeout', %s, false)", (f"{int(statement_timeout_ms)}ms",)
    )


def index_table(conn: psycopg.Connection, index: str) -> str | None:
    """The table of index ``index`` (as the rules write names), as ``schema.table`` without
    ``public.``; None when there is no such index."""
    row = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE i.indexrelid = to_regclass(%s)",
        (_quoted(index),),
    ).fetchone()
    if row is None:
        return None
    return str(row[1]) if row[0] == "public" else f"{row[0]}.{row[1]}"


# --- Watching a migration as it runs (live progress, safe abort, recovery) ---
#
# Read by dashboard/schema/watch.py on a connection of its own, about once a second, while a
# migration runs: the migrating session's activity and who blocks it, its index build's progress,
# and the application around it (the database's commits, the longest lock wait of every other
# session). A session is named by its pid *and* its start time, because pids are reused: a pid
# recorded before a worker died is only ended if it is still the same session.

_WATCH_QUERY_CHARS = 300


@dataclass(frozen=True)
class ActiveSession:
    """A backend of the connected database as ``pg_stat_activity`` shows it now."""

    pid: int
    backend_start: str  # ISO; with ``pid``, the session's identity
    user: str | None
    application: str | None
    state: str | None  # active, idle, idle in transaction, ... (None: not ours to see)
    wait_event_type: str | None
    wait_event: str | None
    query: str | None
    query_start: str | None
    query_seconds: float | None
    xact_start: str | None
    blocked_by: tuple[int, ...] = ()

    @property
    def in_transaction(self) -> bool:
        """An open transaction (running a statement, or idle in one): what a cancel or an end
        of the session rolls back."""
        return self.xact_start is not None or (self.state or "").startswith("idle in")


@dataclass(frozen=True)
class Blocker:
    """A session the watched backend waits for: it holds (``granted``) or waits ahead of it for
    a lock that conflicts with the one the backend asked for."""

    pid: int
    user: str | None
    application: str | None
    state: str | None
    query: str | None
    since: str | None  # its transaction's start (else its statement's)
    seconds: float | None
    mode: str | None
    table: str | None
    granted: bool | None


@dataclass(frozen=True)
class IndexBuild:
    """One row of ``pg_stat_progress_create_index`` (PostgreSQL 12+)."""

    command: str
    phase: str
    table: str | None
    index: str | None
    lockers_total: int
    lockers_done: int
    current_locker_pid: int | None
    blocks_total: int
    blocks_done: int
    tuples_total: int
    tuples_done: int
    partitions_total: int
    partitions_done: int


@dataclass(frozen=True)
class Traffic:
    """The database as a whole at one moment: its commits so far (``pg_stat_database``, every
    session's, flushed by each backend at most once a second) and the other sessions' lock
    waits now."""

    at: float  # the server's clock, epoch seconds
    xact_commit: int
    xact_rollback: int
    longest_lock_wait_ms: float  # of any session but this one and the excluded ones
    waiting_sessions: int


@dataclass(frozen=True)
class WatchSample:
    traffic: Traffic
    backend: ActiveSession | None  # None: no pid given, or the session is gone
    blockers: tuple[Blocker, ...]
    index_build: IndexBuild | None


_SESSION = """
SELECT pid, backend_start, usename, application_name, state, wait_event_type, wait_event,
       left(query, %(chars)s), query_start, extract(epoch FROM clock_timestamp() - query_start),
       xact_start, pg_blocking_pids(pid)
FROM pg_stat_activity WHERE pid = %(pid)s
"""

_BLOCKERS = """
WITH wanted AS (
    SELECT locktype, database, relation, transactionid, virtualxid
    FROM pg_locks WHERE pid = %(pid)s AND NOT granted LIMIT 1
)
SELECT b.pid, a.usename, a.application_name, a.state, left(a.query, %(chars)s),
       coalesce(a.xact_start, a.query_start),
       extract(epoch FROM clock_timestamp() - coalesce(a.xact_start, a.query_start)),
       l.mode, l.relation::regclass::text, l.granted
FROM unnest(pg_blocking_pids(%(pid)s)) WITH ORDINALITY AS b(pid, i)
LEFT JOIN pg_stat_activity a ON a.pid = b.pid
LEFT JOIN LATERAL (
    SELECT h.mode, h.relation, h.granted FROM pg_locks h, wanted w
    WHERE h.pid = b.pid AND h.locktype = w.locktype
      AND h.database IS NOT DISTINCT FROM w.database
      AND h.relation IS NOT DISTINCT FROM w.relation
      AND h.transactionid IS NOT DISTINCT FROM w.transactionid
      AND h.virtualxid IS NOT DISTINCT FROM w.virtualxid
    ORDER BY h.granted DESC LIMIT 1
) l ON true
ORDER BY b.i
"""

_INDEX_BUILD = """
SELECT command, phase, relid::regclass::text, nullif(index_relid, 0)::regclass::text,
       lockers_total, lockers_done, nullif(current_locker_pid, 0), blocks_total, blocks_done,
       tuples_total, tuples_done, partitions_total, partitions_done
FROM pg_stat_progress_create_index WHERE pid = %(pid)s
"""

_TRAFFIC = """
SELECT extract(epoch FROM clock_timestamp()), d.xact_commit, d.xact_rollback,
       coalesce(max(extract(epoch FROM clock_timestamp() - coalesce(l.waitstart,
           clock_timestamp()))) * 1000, 0),
       count(DISTINCT l.pid)
FROM pg_stat_database d
LEFT JOIN pg_locks l ON NOT l.granted AND l.pid <> pg_backend_pid()
     AND l.pid <> ALL(%(exclude)s::int[])
     AND l.pid IN (SELECT pid FROM pg_stat_activity WHERE datname = current_database())
WHERE d.datname = current_database()
GROUP BY d.xact_commit, d.xact_rollback
"""


def _active_session(row: Any) -> ActiveSession:
    return ActiveSession(
        pid=int(row[0]),
        backend_start=str(_iso(row[1])),
        user=row[2],
        application=row[3],
        state=row[4],
        wait_event_type=row[5],
        wait_event=row[6],
        query=row[7],
        query_start=_iso(row[8]),
        query_seconds=_seconds(row[9]),
        xact_start=_iso(row[10]),
        blocked_by=tuple(int(p) for p in row[11] or ()),
    )


def watch_sample(
    conn: psycopg.Connection, backend_pid: int | None, *, exclude: list[int] | None = None
) -> WatchSample:
    """One look at a running migration, in one transaction (so it counts one commit of its
    own in ``xact_commit``): the database's traffic, and, given the migrating ``backend_pid``,
    its session, what blocks it and its index build. ``exclude``: sessions whose lock waits are
    not the application's (the migrating one and Runway's own). Needs PostgreSQL 14+
    (``pg_locks.waitstart``)."""
    others = [p for p in [backend_pid, *(exclude or [])] if p]
    params = {"pid": backend_pid, "chars": _WATCH_QUERY_CHARS, "exclude": others}
    with conn.transaction():
        row = conn.execute(_TRAFFIC, params).fetchone()
        assert row is not None  # the connected database has its pg_stat_database row
        traffic = Traffic(
            at=float(row[0]),
            xact_commit=int(row[1]),
            xact_rollback=int(row[2]),
            longest_lock_wait_ms=max(0.0, float(row[3])),
            waiting_sessions=int(row[4]),
        )
        if backend_pid is None:
            return WatchSample(traffic, None, (), None)
        found = conn.execute(_SESSION, params).fetchone()
        backend = _active_session(found) if found is not None else None
        blockers: tuple[Blocker, ...] = ()
        if backend is not None and backend.blocked_by:
            blockers = tuple(
                Blocker(
                    pid=int(r[0]),
                    user=r[1],
                    application=r[2],
                    state=r[3],
                    query=r[4],
                    since=_iso(r[5]),
                    seconds=_seconds(r[6]),
                    mode=r[7],
                    table=r[8],
                    granted=r[9],
                )
                for r in conn.execute(_BLOCKERS, params).fetchall()
            )
        build = conn.execute(_INDEX_BUILD, params).fetchone()
    index_build = (
        IndexBuild(
            command=str(build[0]),
            phase=str(build[1]),
            table=build[2],
            index=build[3],
            lockers_total=int(build[4] or 0),
            lockers_done=int(build[5] or 0),
            current_locker_pid=build[6],
            blocks_total=int(build[7] or 0),
            blocks_done=int(build[8] or 0),
            tuples_total=int(build[9] or 0),
            tuples_done=int(build[10] or 0),
            partitions_total=int(build[11] or 0),
            partitions_done=int(build[12] or 0),
        )
        if build is not None
        else None
    )
    return WatchSample(traffic, backend, blockers, index_build)


def active_session(
    conn: psycopg.Connection, pid: int, backend_start: str | None = None
) -> ActiveSession | None:
    """The session ``pid`` if it is still there (and, given ``backend_start``, still the same
    session, not a new one that got the pid), else None."""
    row = conn.execute(_SESSION, {"pid": pid, "chars": _WATCH_QUERY_CHARS}).fetchone()
    if row is None:
        return None
    found = _active_session(row)
    if backend_start is not None and not _same_start(found.backend_start, backend_start):
        return None
    return found


def _same_start(a: str, b: str) -> bool:
    from datetime import datetime

    try:
        return datetime.fromisoformat(a) == datetime.fromisoformat(b)
    except ValueError:
        return a == b


def cancel_backend(conn: psycopg.Connection, pid: int) -> bool:
    """Ask the session to cancel its current statement (``pg_cancel_backend``): its transaction
    fails and rolls back when the client rolls back or goes. False when no such session was
    signalled."""
    return bool(_one(conn, "SELECT pg_cancel_backend(%s)", [pid])[0])


def terminate_backend(conn: psycopg.Connection, pid: int) -> bool:
    """End the session (``pg_terminate_backend``): an open transaction rolls back."""
    return bool(_one(conn, "SELECT pg_terminate_backend(%s)", [pid])[0])


def all_invalid_indexes(conn: psycopg.Connection) -> list[str]:
    """Indexes left INVALID (a CREATE INDEX CONCURRENTLY that failed or was cancelled), as
    ``schema.index on table``."""
    rows = conn.execute(
        "SELECT n.nspname || '.' || c.relname || ' on ' || i.indrelid::regclass::text "
        "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT i.indisvalid ORDER BY 1"
    ).fetchall()
    return [str(r[0]) for r in rows]


# --- Data snapshots (data-loss detection) ---
# The SQL of dashboard.schema.snapshot: a table's key, its columns, its key islands (the runs of
# consecutive integer keys), rows per key segment, per-column hashes of sampled rows and
# per-segment sums of per-column hashes. Hashes are of each value's text form
# (``hashtextextended(v::text, 0)``): a type change that keeps the text (varchar to text, int to
# bigint) keeps the hash.


@dataclass(frozen=True)
class TableShape:
    columns: tuple[str, ...]  # in attnum order, without dropped ones
    types: tuple[str, ...]  # format_type of each
    key: str | None  # the single-column integer primary key, if the table has one


_SHAPE = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod),
       coalesce(a.attnum = ANY(
           SELECT i.indkey[0] FROM pg_index i
           WHERE i.indrelid = a.attrelid AND i.indisprimary AND i.indnatts = 1
       ) AND a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype), false)
FROM pg_attribute a
WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


def table_shape(conn: psycopg.Connection, table: str) -> TableShape | None:
    """The table's columns and integer key; None when there is no such table."""
    if _one(conn, "SELECT to_regclass(%s)", (_quoted(table),))[0] is None:
        return None
    rows = conn.execute(_SHAPE, (_quoted(table),)).fetchall()
    keys = [str(r[0]) for r in rows if r[2]]
    return TableShape(
        columns=tuple(str(r[0]) for r in rows),
        types=tuple(str(r[1]) for r in rows),
        key=keys[0] if keys else None,
    )


def _col_hash(column: str) -> sql.Composable:
    return sql.SQL("hashtextextended({}::text, 0)").format(sql.Identifier(column))


def key_range(conn: psycopg.Connection, table: str, key: str) -> tuple[int, int, int]:
    """(rows, lowest key, highest key); keys are 0, 0 for an empty table."""
    query = sql.SQL(
        "SELECT count(*), coalesce(min({k}), 0), coalesce(max({k}), 0) FROM {t}"
    ).format(k=sql.Identifier(key), t=_table_ident(table))
    rows, low, high = _one(conn, query)
    return int(rows), int(low), int(high)


def _islands_params(islands: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    return [a for a, _ in islands], [b for _, b in islands]


def rows_in_islands(
    conn: psycopg.Connection, table: str, key: str, islands: list[tuple[int, int]]
) -> int:
    """How many of the keys the islands hold are still there."""
    query = sql.SQL(
        "SELECT count(*) FROM {t} AS x JOIN unnest(%s::bigint[], %s::bigint[]) AS i(lo, hi) "
        "ON x.{k} BETWEEN i.lo AND i.hi"
    ).format(k=sql.Identifier(key), t=_table_ident(table))
    return int(_one(conn, query, _islands_params(islands))[0])


def missing_keys(
    conn: psycopg.Connection, table: str, key: str, islands: list[tuple[int, int]], limit: int
) -> list[int]:
    """Up to ``limit`` keys of the islands that are gone, lowest first."""
    query = sql.SQL(
        "SELECT g FROM unnest(%s::bigint[], %s::bigint[]) AS i(lo, hi), "
        "generate_series(i.lo, i.hi) g "
        "WHERE NOT EXISTS (SELECT 1 FROM {t} AS x WHERE x.{k} = g) ORDER BY g LIMIT %s"
    ).format(k=sql.Identifier(key), t=_table_ident(table))
    return [int(r[0]) for r in conn.execute(query, (*_islands_params(islands), limit)).fetchall()]


def segment_sums(
    conn: psycopg.Connection,
    table: str,
    key: str,
    columns: list[str],
    low: int,
    high: int,
    segments: int,
) -> dict[int, tuple[int, int, list[int | None]]]:
    """For the keys in [low, high] cut into ``segments`` equal-width segments: per segment, its
    rows, the sum of its keys and per column the sum of the values' hashes (a NULL counts as a
    hash of its own)."""
    sums: sql.Composable = sql.SQL("")
    if columns:
        sums = sql.SQL(", ") + sql.SQL(", ").join(
            sql.SQL("sum(coalesce({h}, 7))::text").format(h=_col_hash(c)) for c in columns
        )
    query = sql.SQL(
        "SELECT width_bucket({k}, %s, %s, %s) AS s, count(*), sum({k})::text{sums} FROM {t} "
        "WHERE {k} BETWEEN %s AND %s GROUP BY 1"
    ).format(k=sql.Identifier(key), t=_table_ident(table), sums=sums)
    out: dict[int, tuple[int, int, list[int | None]]] = {}
    for row in conn.execute(query, (low, high + 1, segments, low, high)).fetchall():
        values = [None if v is None else int(v) for v in row[3:]]
        out[int(row[0])] = (int(row[1]), int(row[2]), values)
    return out


def sampled_rows(
    conn: psycopg.Connection,
    table: str,
    key: str,
    columns: list[str],
    ranges: list[tuple[int, int]],
) -> dict[int, list[int | None]]:
    """Per key in the ranges (first, last): the hash of each of ``columns`` (None for NULL)."""
    if not ranges:
        return {}
    hashes = sql.SQL(", ").join(_col_hash(c) for c in columns) if columns else sql.SQL("NULL")
    query = sql.SQL(
        "SELECT x.{k}, ARRAY[{h}] FROM {t} AS x JOIN unnest(%s::bigint[], %s::bigint[]) AS "
        "i(lo, hi) ON x.{k} BETWEEN i.lo AND i.hi"
    ).format(k=sql.Identifier(key), t=_table_ident(table), h=hashes)
    rows = conn.execute(query, _islands_params(ranges)).fetchall()
    return {int(k): ([] if not columns else list(values)) for k, values in rows}


def count_rows(conn: psycopg.Connection, table: str) -> int:
    return int(_one(conn, sql.SQL("SELECT count(*) FROM {}").format(_table_ident(table)))[0])


@contextmanager
def read_only_snapshot(conn: psycopg.Connection) -> Iterator[None]:
    """One REPEATABLE READ, READ ONLY transaction on ``conn`` (an autocommit connection with no
    transaction open): every query inside sees the same committed state. Rolled back after."""
    conn.autocommit = True
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")


# --- Trigger signals ---


def _read_only(conn: psycopg.Connection, timeout_ms: int) -> None:
    conn.autocommit = True
    conn.execute("BEGIN READ ONLY")
    conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(timeout_ms)))


def probe_latency_ms(
    conn: psycopg.Connection, query: str, runs: int = 3, timeout_ms: int = 5000
) -> float:
    """The median time of ``runs`` runs of ``query`` (a probe a person configured), in a READ
    ONLY transaction with a statement timeout; rolled back."""
    _read_only(conn, timeout_ms)
    try:
        times = []
        for _ in range(max(1, runs)):
            started = time.perf_counter()
            conn.execute(query.encode()).fetchall()  # a configured probe, not built here
            times.append((time.perf_counter() - started) * 1000)
        times.sort()
        return times[len(times) // 2]
    finally:
        conn.execute("ROLLBACK")


def scalar_signal(conn: psycopg.Connection, query: str, timeout_ms: int = 5000) -> float | None:
    """The number the configured query's first column of its first row holds (None for no row or
    NULL), read in a READ ONLY transaction with a statement timeout; rolled back. ValueError when
    it is not a number."""
    _read_only(conn, timeout_ms)
    try:
        row = conn.execute(query.encode()).fetchone()
    finally:
        conn.execute("ROLLBACK")
    if row is None or row[0] is None:
        return None
    try:
        return float(row[0])
    except (TypeError, ValueError):
        raise ValueError(f"the query returned {str(row[0])[:60]!r}, not a number") from None


def terminate_other_sessions(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """End every other client session of ``conn``'s database (before a restore into it); who
    each was and whether it was ended."""
    rows = conn.execute(
        "SELECT pid, usename, application_name, state, pg_terminate_backend(pid) "
        "FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
    ).fetchall()
    return [
        {"pid": r[0], "user": r[1], "application": r[2], "state": r[3], "ended": bool(r[4])}
        for r in rows
    ]


# --- COPY out (Runway's own exports) ---


def copy_out(
    conn: psycopg.Connection[Any], query: str, params: Sequence[Any], *, rows: int
) -> Iterator[bytes]:
    """What ``COPY (query) TO STDOUT (FORMAT csv)`` writes, ``rows`` rows to a chunk (the server
    sends a row a message). ``query`` is one SELECT with ``%s`` placeholders for ``params``
    (merged on the client: COPY takes no bound parameters), e.g. a Django queryset's compiled
    SQL; ``conn`` may be Django's own (``connection.connection``). If the caller stops reading,
    closing the generator cancels the COPY and leaves the connection usable."""
    statement = f"COPY ({query}) TO STDOUT (FORMAT csv)".encode()
    batch: list[bytes] = []
    with conn.cursor() as cursor, cursor.copy(statement, params) as copy:
        for data in copy:
            batch.append(bytes(data))
            if len(batch) >= rows:
                yield b"".join(batch)
                batch = []
    if batch:
        yield b"".join(batch)


def copy_text_rows(
    conn: psycopg.Connection[Any], query: str, params: Sequence[Any]
) -> Iterator[str]:
    """The rows of ``COPY (query) TO STDOUT`` (text format), each as its line without the
    newline, the columns separated by tabs, as the server escapes them (a backslash doubled,
    control characters as ``\\n``, ``\\t``...; NULL as ``\\N``). ``query`` and ``params`` as
    for :func:`copy_out`; closing the generator cancels the COPY."""
    statement = f"COPY ({query}) TO STDOUT".encode()
    with conn.cursor() as cursor, cursor.copy(statement, params) as copy:
        for data in copy:
            yield bytes(data)[:-1].decode()
