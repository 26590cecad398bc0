"""Running one revision at a time the way its database says (``ManagedDatabase.run_mode``).

Execution and rehearsal both get their runner from :func:`runner_for`, so a rehearsal runs the
revisions exactly as the deployment will:

- "runway": :class:`OnlineRunner`, the revision files in Runway's own online environment on a
  connection Runway made with the migration timeouts as server options; every statement is
  logged with its time (SQL text only, never parameters);
- "project": :class:`ProjectRunner`, the project's own alembic and env.py in the application's
  interpreter (one an admin allowed, checked again here), the URL only in its environment.

Either raises :class:`RevisionFailed` with a message that never holds the password, and the
server's error code when it can tell (55P03 lock not available, 57014 cancelled, 40P01
deadlock): guarded execution (:mod:`.guard`) retries on the first and last.

Before each attempt, :meth:`Runner.prepare` hands over the session settings the attempt runs
with (``lock_timeout``, ``statement_timeout``, ``client_connection_check_interval``): Runway's
environment sets them on its session with plain ``SET``; the project's alembic gets them in
``PGOPTIONS`` for its next run (its env.py may override them: Runway cannot see that).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Protocol
from urllib.parse import quote

from dashboard.databases import run_modes
from dashboard.databases.models import ManagedDatabase, RunMode
from dashboard.lib import pg
from dashboard.lib.alembic import NotAnAlembicProject, online, project
from dashboard.schema.status import scripts_of

Log = Callable[[str], None]


class RevisionFailed(RuntimeError):
    """One revision did not apply; the message says why (category and line, or the project's
    alembic's own error). ``sqlstate``: the server's error code when known; ``disconnected``:
    the connection was lost with it; ``partial``: statements outside its transaction (an
    autocommit block) had run, and what they did stays."""

    def __init__(
        self,
        message: str,
        *,
        sqlstate: str | None = None,
        disconnected: bool = False,
        partial: bool = False,
    ) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.disconnected = disconnected
        self.partial = partial


class Refused(ValueError):
    """The database cannot run its revisions as configured; nothing ran."""


class Runner(Protocol):
    def prepare(self, settings: Mapping[str, str]) -> None:
        """The session settings the next :meth:`run` uses (kept for the runs after it)."""
        ...

    def run(self, revision: str, direction: str) -> None: ...

    def close(self) -> None: ...

    @property
    def backend_pid(self) -> int | None:
        """The migrating session's backend (None before it connects, or not known)."""
        ...


def runner_for(
    db: ManagedDatabase,
    dsn: str,
    password: str | None,
    *,
    options: str,
    log: Log,
    before_statement: online.StatementHook | None = None,
    after_statement: online.StatementHook | None = None,
) -> Runner:
    """The runner of ``db``'s revisions against ``dsn`` (the database itself, or a rehearsal's
    copy), with server ``options`` (Runway's timeouts). Refused when its project mode is not
    usable here (an interpreter no longer allowed, a folder outside the project...).
    ``after_statement`` is called after each statement (after it is logged), in Runway's
    environment only."""
    if db.run_mode == RunMode.PROJECT:
        try:
            command = run_modes.command(db)
        except run_modes.RunModeRefused as exc:
            raise Refused(f"Refused to run the project's alembic: {exc} Nothing ran.") from None
        return ProjectRunner(command, dsn, password, options=options, log=log)
    try:
        chain = online.Chain.of(scripts_of(db))
    except NotAnAlembicProject as exc:
        raise Refused(f"{exc}. Nothing ran.") from None
    url = pg.sqlalchemy_url(dsn, password, options=options)
    return OnlineRunner(
        chain, url, log=log, before_statement=before_statement, after_statement=after_statement
    )


class OnlineRunner:
    def __init__(
        self,
        chain: online.Chain,
        url: str,
        *,
        log: Log,
        before_statement: online.StatementHook | None = None,
        after_statement: online.StatementHook | None = None,
    ) -> None:
        self.log = log
        self.after_statement = after_statement
        self.session = online.Session(
            url, chain, before_statement=before_statement, after_statement=self._logged
        )

    @property
    def backend_pid(self) -> int | None:
        return self.session.backend_pid

    def _logged(self, statement: online.Statement) -> None:
        ms = (statement.seconds or 0.0) * 1000
        if statement.error:
            self.log(f"  {ms:9.1f} ms  FAILED {statement.sql}: {statement.error}")
        else:
            rows = f"  ({statement.rowcount} rows)" if statement.rowcount is not None else ""
            self.log(f"  {ms:9.1f} ms  {statement.sql}{rows}")
        if self.after_statement is not None:
            self.after_statement(statement)

    def prepare(self, settings: Mapping[str, str]) -> None:
        """Set at once on the session (plain ``SET``); a CONCURRENTLY statement runs without a
        lock timeout, bounded by the ``statement_timeout`` alone (its waits never queue the
        application, and a lock timeout in its last wait would throw away a finished build)."""
        try:
            self.session.configure(settings)
        except online.RevisionFailed as exc:
            raise RevisionFailed(
                str(exc), sqlstate=exc.sqlstate, disconnected=exc.disconnected
            ) from None
        self.session.concurrently_lock_timeout = "0"

    def run(self, revision: str, direction: str) -> None:
        try:
            self.session.run(revision, direction)
        except online.RevisionFailed as exc:
            raise RevisionFailed(
                str(exc),
                sqlstate=exc.sqlstate,
                disconnected=exc.disconnected,
                partial=self.session.autocommitted,
            ) from None

    def close(self) -> None:
        self.session.close()


class ProjectRunner:
    def __init__(
        self,
        command: project.Command,
        dsn: str,
        password: str | None,
        *,
        options: str,
        log: Log,
    ) -> None:
        self.command = command
        self.log = log
        self.password = password
        self.url, own_options = pg.program_url(dsn, password)
        self.options = " ".join(filter(None, [own_options, options]))
        self.settings: dict[str, str] = {}
        self.env = self._environment()
        self.secrets = [self.url, *([password, quote(password, safe="")] if password else [])]

    def _environment(self) -> dict[str, str]:
        # The attempt's settings replace Runway's own options of the same name (after the DSN's).
        kept = [
            f"-c {name}={value}"
            for name, value in _OPTION.findall(self.options)
            if name not in self.settings
        ]
        rest = _OPTION.sub("", self.options).split()
        attempt = [f"-c {name}={value}" for name, value in self.settings.items()]
        libpq = pg.program_libpq_env(self.password, " ".join([*rest, *kept, *attempt]))
        return project.environment(self.command.url_variable, self.url, libpq)

    @property
    def backend_pid(self) -> int | None:
        return None  # the project's alembic connects on its own

    def prepare(self, settings: Mapping[str, str]) -> None:
        """In ``PGOPTIONS`` of the next run (the project's env.py may set its own over them)."""
        for name, value in settings.items():
            if not _SETTING.match(name) or not _VALUE.match(value):
                raise ValueError(f"not a setting PGOPTIONS can carry: {name}={value}")
        self.settings.update(settings)
        self.env = self._environment()

    def run(self, revision: str, direction: str) -> None:
        try:
            project.run(
                self.command,
                direction,
                revision,
                env=self.env,
                secrets=self.secrets,
                log=self.log,
            )
        except project.ProjectFailed as exc:
            raise RevisionFailed(str(exc), sqlstate=sqlstate_in(str(exc))) from None

    def close(self) -> None:
        pass


_OPTION = re.compile(r"-c\s*([a-z_]+)=(\S+)")
_SETTING = re.compile(r"^[a-z_]+$")
_VALUE = re.compile(r"^[A-Za-z0-9_.]+$")
# How the project's driver names the errors guarded execution tells apart (psycopg, psycopg2,
# asyncpg and libpq's own words), read from the last lines of its output.
_SQLSTATES = (
    ("55P03", re.compile(r"LockNotAvailable|lock timeout|55P03", re.IGNORECASE)),
    ("40P01", re.compile(r"DeadlockDetected|deadlock detected|40P01", re.IGNORECASE)),
    ("57014", re.compile(r"QueryCanceled|canceling statement|57014", re.IGNORECASE)),
)


def sqlstate_in(message: str) -> str | None:
    """The error code a project's alembic failed with, as far as its message tells."""
    for code, pattern in _SQLSTATES:
        if pattern.search(message):
            return code
    return None
