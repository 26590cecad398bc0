"""Running one revision at a time the way its database says (``ManagedDatabase.run_mode``).

Execution and rehearsal both get their runner from :func:`runner_for`, so a rehearsal runs the
revisions exactly as the deployment will:

- "runway": :class:`OnlineRunner`, the revision files in Runway's own online environment on a
  connection Runway made with the migration timeouts as server options; every statement is
  logged with its time (SQL text only, never parameters);
- "project": :class:`ProjectRunner`, the project's own alembic and env.py in the application's
  interpreter (one an admin allowed, checked again here), the URL only in its environment.

Either raises :class:`RevisionFailed` with a message that never holds the password.
"""

from __future__ import annotations

from collections.abc import Callable
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
    alembic's own error)."""


class Refused(ValueError):
    """The database cannot run its revisions as configured; nothing ran."""


class Runner(Protocol):
    def run(self, revision: str, direction: str) -> None: ...

    def close(self) -> None: ...


def runner_for(
    db: ManagedDatabase,
    dsn: str,
    password: str | None,
    *,
    options: str,
    log: Log,
    before_statement: online.StatementHook | None = None,
) -> Runner:
    """The runner of ``db``'s revisions against ``dsn`` (the database itself, or a rehearsal's
    copy), with server ``options`` (Runway's timeouts). Refused when its project mode is not
    usable here (an interpreter no longer allowed, a folder outside the project...)."""
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
    return OnlineRunner(chain, url, log=log, before_statement=before_statement)


class OnlineRunner:
    def __init__(
        self,
        chain: online.Chain,
        url: str,
        *,
        log: Log,
        before_statement: online.StatementHook | None = None,
    ) -> None:
        self.log = log
        self.session = online.Session(
            url, chain, before_statement=before_statement, after_statement=self._logged
        )

    def _logged(self, statement: online.Statement) -> None:
        ms = (statement.seconds or 0.0) * 1000
        if statement.error:
            self.log(f"  {ms:9.1f} ms  FAILED {statement.sql}: {statement.error}")
            return
        rows = f"  ({statement.rowcount} rows)" if statement.rowcount is not None else ""
        self.log(f"  {ms:9.1f} ms  {statement.sql}{rows}")

    def run(self, revision: str, direction: str) -> None:
        try:
            self.session.run(revision, direction)
        except online.RevisionFailed as exc:
            raise RevisionFailed(str(exc)) from None

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
        url, own_options = pg.program_url(dsn, password)
        libpq = pg.program_libpq_env(password, " ".join(filter(None, [own_options, options])))
        self.env = project.environment(command.url_variable, url, libpq)
        self.secrets = [url, *([password, quote(password, safe="")] if password else [])]

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
            raise RevisionFailed(str(exc)) from None

    def close(self) -> None:
        pass
