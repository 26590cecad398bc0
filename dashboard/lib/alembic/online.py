"""Runway's own online migration environment: one revision file at a time, on Runway's connection.

The project's ``env.py`` never runs (real ones import the application). Each revision file is
loaded by its path (:func:`.revision_files.load`, with stand-ins for modules that are not
installed) and its ``upgrade()`` or ``downgrade()`` runs in a :class:`MigrationContext` that
Runway configures on a connection it made (:func:`dashboard.lib.pg.sqlalchemy_url`, carrying
Runway's ``lock_timeout``/``statement_timeout`` as server options), mirroring the offline
renderer (``_render_worker.py``):

- one transaction per revision; a revision that raises rolls back, and the error names its
  category and the line of the file (:func:`.revision_files.describe`);
- ``from alembic import context`` works (``is_offline_mode()`` is False, ``get_x_argument()`` is
  empty) and ``op.get_context().autocommit_block()`` commits the revision's transaction first,
  as Alembic does;
- the version table is written by Runway in the revision's own transaction, the way Alembic
  writes it (a root inserts, creating ``alembic_version`` when missing; a revision moves its
  parent's row; a merge, or a revision with ``depends_on``, deletes the other parents' rows;
  a downgrade the reverse), and only from the state it expects: a database that is not at the
  revision's parents is refused before anything runs, naming what ``alembic_version`` holds,
  and an UPDATE or DELETE that matches no row rolls the revision back;
- every statement goes through the caller's hooks (``before_statement``, ``after_statement``:
  SQLAlchemy's ``before_cursor_execute``/``after_cursor_execute``/``handle_error``), its SQL text
  only, never its parameters (they may hold data);
- the caller's session settings (:meth:`Session.configure`: plain ``SET``, committed at once, so
  they hold in the revision's transaction, in its autocommit blocks and after a rollback, and are
  set again on a new connection) decide ``lock_timeout``/``statement_timeout`` per attempt;
- CREATE/DROP INDEX CONCURRENTLY and REINDEX CONCURRENTLY run only outside the transaction (in an
  autocommit block): inside it they are refused before they are sent, naming the fix. Their
  waits (a SHARE UPDATE EXCLUSIVE lock, then for older transactions) never queue the
  application's reads and writes, so they run with ``concurrently_lock_timeout`` (guarded
  execution sets "0": no lock timeout, the statement timeout bounds them) instead of the
  attempt's short lock timeout: a long transaction elsewhere does not throw away a finished
  build;
- a connection the server ended (``pg_terminate_backend``) is given up, and the next revision or
  attempt connects again.

No Django. Alembic's ``op`` and ``context`` are module globals, so a process runs one revision
at a time (a lock here); each revision's module, and the stand-ins it needed, are forgotten after
it ran. The revision files are the team's code and run in this process, as ``alembic upgrade``
would run them.
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dashboard.lib.alembic import revision_files as rf

# SQLAlchemy and Alembic are imported where a session first uses them, not here: this module is
# imported by every Runway process (the job kinds register at start-up), and they cost about
# 0.35 s of each process's start, web servers and manage.py commands included.
if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy.engine import Connection, Engine

    from dashboard.lib.alembic import ScriptTree

VERSION_TABLE = "alembic_version"
SQL_CHARS = 300  # of a statement shown in the log
_ONE_AT_A_TIME = threading.Lock()


class RevisionFailed(RuntimeError):
    """A revision did not apply; it was rolled back (or, past an autocommit block, stopped
    there). ``failure`` has the category and the line; the message never holds the password.
    ``sqlstate`` is the server's error code when the database refused a statement (55P03: lock
    not available, 57014: cancelled); ``disconnected`` when the connection was lost with it."""

    def __init__(
        self,
        message: str,
        failure: rf.Failure,
        *,
        sqlstate: str | None = None,
        disconnected: bool = False,
    ) -> None:
        super().__init__(message)
        self.failure = failure
        self.sqlstate = sqlstate
        self.disconnected = disconnected


class ConcurrentlyInTransaction(Exception):
    """A CONCURRENTLY statement was about to be sent inside the revision's transaction."""


_CONCURRENTLY = re.compile(
    r"^\s*(?:CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY"
    r"|DROP\s+INDEX\s+CONCURRENTLY"
    r"|REINDEX\s+(?:\([^)]*\bCONCURRENTLY\b[^)]*\)"
    r"|(?:\([^)]*\)\s*)?(?:INDEX|TABLE|SCHEMA|DATABASE|SYSTEM)\s+CONCURRENTLY))\b",
    re.IGNORECASE,
)


def is_concurrently(statement: str) -> bool:
    """Whether ``statement`` is CREATE/DROP INDEX CONCURRENTLY or REINDEX ... CONCURRENTLY
    (which PostgreSQL runs only outside a transaction block)."""
    return _CONCURRENTLY.match(statement) is not None


class VersionTableRefused(Exception):
    """The database is not where the revision starts, or alembic_version changed under it."""


# --- The chain ---


@dataclass(frozen=True)
class RevisionFile:
    id: str
    path: Path  # absolute
    requires: tuple[str, ...]  # down_revisions and depends_on that exist, as written
    unusable: tuple[str, ...] = ()  # those named that no file defines (or that close a cycle)


@dataclass
class Chain:
    """What running a revision needs of the script folder: each file, and the graph (for the
    version table's bookkeeping, which follows down_revision and depends_on as Alembic does)."""

    location: Path
    files: dict[str, RevisionFile] = field(default_factory=dict)

    @classmethod
    def of(cls, tree: ScriptTree) -> Chain:
        location = tree.location.resolve()
        files = {}
        for rev in tree.revisions.values():
            requires = tuple(dict.fromkeys([*rev.parents, *rev.dependencies]))
            named = [*rev.down_revisions, *rev.depends_on]
            unusable = tuple(r for r in dict.fromkeys(named) if r not in requires)
            files[rev.id] = RevisionFile(rev.id, location / rev.path, requires, unusable)
        return cls(location, files)

    def ancestors(self, revs: Iterable[str], *, include_self: bool = True) -> set[str]:
        seen: set[str] = set()
        stack: list[str] = []
        for rev in revs:
            if include_self:
                seen.add(rev)
            stack.extend(self.files[rev].requires if rev in self.files else ())
        while stack:
            rid = stack.pop()
            if rid in seen:
                continue
            seen.add(rid)
            stack.extend(self.files[rid].requires if rid in self.files else ())
        return seen

    def parents(self, rid: str) -> tuple[str, ...]:
        """Alembic's normalised down revisions: what the revision's row replaces, without any
        that is an ancestor of another (a dependency already reached through a parent)."""
        requires = self.files[rid].requires
        return tuple(
            r
            for r in requires
            if not any(r in self.ancestors([o], include_self=False) for o in requires if o != r)
        )


# --- Statements ---


@dataclass
class Statement:
    """One statement sent to the database: its SQL (one line, shortened, no parameters)."""

    revision: str
    sql: str
    started: float  # time.monotonic()
    seconds: float | None = None  # None while it runs
    rowcount: int | None = None
    error: str = ""


StatementHook = Callable[[Statement], None]


def _one_line(statement: str) -> str:
    text = " ".join(str(statement).split())
    return text if len(text) <= SQL_CHARS else text[: SQL_CHARS - 1] + "…"


# --- Running ---


@dataclass
class Ran:
    revision: str
    direction: str
    seconds: float
    statements: int


class Session:
    """A connection to one database for a series of revisions, each its own transaction.

    ``url`` holds the password (from :func:`dashboard.lib.pg.sqlalchemy_url`); it is never
    shown. Use as a context manager; :meth:`run` runs one revision."""

    def __init__(
        self,
        url: str,
        chain: Chain,
        *,
        before_statement: StatementHook | None = None,
        after_statement: StatementHook | None = None,
    ) -> None:
        self.url = url
        self.chain = chain
        self.before_statement = before_statement
        self.after_statement = after_statement
        self._secrets = _secrets_of(url)
        self._engine: Engine | None = None
        self._connection: Connection | None = None
        self._revision = ""
        self._count = 0
        self._settings: dict[str, str] = {}
        self.backend_pid: int | None = None
        # The lock_timeout a CONCURRENTLY statement runs with (None: the session's own).
        self.concurrently_lock_timeout: str | None = None
        # Whether the last run() sent statements outside its transaction (an autocommit block):
        # what they did stays even when the revision fails afterwards.
        self.autocommitted = False

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def configure(self, settings: Mapping[str, str]) -> None:
        """Set ``settings`` (e.g. ``lock_timeout``: ``"200ms"``) on the session with plain
        ``SET`` semantics (``set_config(..., false)``), committed at once: they hold for every
        revision and autocommit block that follows, survive a rolled-back revision, and are set
        again on a new connection. RevisionFailed when the server refuses one."""
        import sqlalchemy as sa

        self._settings.update(settings)
        connection = self._connect()
        try:
            self._apply_settings(connection, settings)
        except sa.exc.DBAPIError as exc:
            text = self._redact(_first_line(exc.orig if exc.orig is not None else exc))
            if connection.in_transaction():
                connection.rollback()
            raise RevisionFailed(
                f"cannot set {', '.join(settings)}: {text}",
                rf.Failure("database_error", text),
                sqlstate=getattr(exc.orig, "sqlstate", None),
                disconnected=bool(exc.connection_invalidated),
            ) from None

    def _apply_settings(self, connection: Connection, settings: Mapping[str, str]) -> None:
        import sqlalchemy as sa

        for name, value in settings.items():
            connection.execute(
                sa.text("SELECT set_config(:name, :value, false)"), {"name": name, "value": value}
            )
        connection.commit()

    def _connect(self) -> Connection:
        import sqlalchemy as sa
        from sqlalchemy import event, pool

        if self._connection is not None and not self._connection.closed:
            if not self._connection.invalidated:
                return self._connection
            self.close()  # the server ended it (or it broke): a new connection, a new backend
        query = sa.engine.make_url(self.url).query
        args = {} if "application_name" in query else {"application_name": "runway"}
        engine = sa.create_engine(self.url, poolclass=pool.NullPool, connect_args=args)
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)
        event.listen(engine, "handle_error", self._error)
        self._engine = engine
        try:
            self._connection = engine.connect()
        except sa.exc.DBAPIError as exc:
            text = self._redact(_first_line(exc.orig if exc.orig is not None else exc))
            raise RevisionFailed(
                f"cannot connect: {text}", rf.Failure("database_error", text)
            ) from None
        self.backend_pid = self._connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        self._connection.commit()
        if self._settings:
            self._apply_settings(self._connection, self._settings)
        return self._connection

    # SQLAlchemy's events: the statement's text, never its parameters.
    def _before(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not self._revision:
            return  # Runway's own question (the backend's pid), not the revision's
        dbapi = getattr(cursor, "connection", None)
        autocommit = bool(getattr(dbapi, "autocommit", False))
        self.autocommitted = self.autocommitted or autocommit
        if is_concurrently(statement):
            if not autocommit:
                raise ConcurrentlyInTransaction(
                    f"{_one_line(statement)} cannot run inside the revision's transaction "
                    "(PostgreSQL refuses CONCURRENTLY in a transaction block): run it in "
                    "`with op.get_context().autocommit_block():`. Runway did not send it"
                )
            if self.concurrently_lock_timeout is not None and dbapi is not None:
                dbapi.execute(
                    "SELECT set_config('lock_timeout', %s, false)",
                    [self.concurrently_lock_timeout],
                )
                restore = self._settings.get("lock_timeout", "0")
                conn.info["runway_restore_lock_timeout"] = (dbapi, restore)
        running = Statement(self._revision, _one_line(statement), time.monotonic())
        conn.info["runway_statement"] = running
        self._count += 1
        if self.before_statement is not None:
            self.before_statement(running)

    def _restore(self, conn: Any) -> None:
        """The attempt's lock_timeout again after a CONCURRENTLY statement's own."""
        saved = conn.info.pop("runway_restore_lock_timeout", None) if conn else None
        if saved is None:
            return
        dbapi, restore = saved
        if dbapi.closed:
            return
        with contextlib.suppress(Exception):  # a broken connection is given up by run()
            dbapi.execute("SELECT set_config('lock_timeout', %s, false)", [restore])

    def _after(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self._restore(conn)
        running: Statement | None = conn.info.pop("runway_statement", None)
        if running is None:
            return
        running.seconds = time.monotonic() - running.started
        rowcount = getattr(cursor, "rowcount", -1)
        running.rowcount = rowcount if isinstance(rowcount, int) and rowcount >= 0 else None
        if self.after_statement is not None:
            self.after_statement(running)

    def _error(self, context: Any) -> None:
        conn = context.connection
        self._restore(conn)
        running: Statement | None = conn.info.pop("runway_statement", None) if conn else None
        if running is None:
            return
        running.seconds = time.monotonic() - running.started
        original = context.original_exception
        running.error = self._redact(_first_line(original) if original is not None else "failed")
        if self.after_statement is not None:
            self.after_statement(running)

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def run(self, revision: str, direction: str = "upgrade") -> Ran:
        """Run one revision's ``upgrade()`` (or ``downgrade()``) and write the version table,
        in one transaction. RevisionFailed when it does not apply (rolled back)."""
        import sqlalchemy as sa

        if direction not in ("upgrade", "downgrade"):
            raise ValueError(f"direction must be upgrade or downgrade, not {direction!r}")
        found = self.chain.files.get(revision)
        if found is None:
            failure = rf.Failure("unknown_revision", f"no file defines revision {revision!r}")
            raise RevisionFailed(failure.message, failure)
        with _ONE_AT_A_TIME:
            connection = self._connect()
            self._revision, self._count = revision, 0
            self.autocommitted = False
            started = time.monotonic()
            try:
                with _loaded(found) as module:
                    self._apply(connection, module, found, direction)
            except RevisionFailed:
                raise
            except VersionTableRefused as exc:
                failure = rf.Failure("version_table", str(exc))
                raise RevisionFailed(str(exc), failure) from None
            except ConcurrentlyInTransaction as exc:
                failure = rf.Failure(
                    "concurrently_in_transaction", str(exc), rf.line_in(exc, found.path)
                )
                raise RevisionFailed(self._message(failure, found), failure) from None
            except Exception as exc:
                failure = self._describe(exc, found)
                dbapi_error = exc if isinstance(exc, sa.exc.DBAPIError) else None
                raise RevisionFailed(
                    self._message(failure, found),
                    failure,
                    sqlstate=getattr(dbapi_error.orig, "sqlstate", None) if dbapi_error else None,
                    disconnected=bool(dbapi_error and dbapi_error.connection_invalidated),
                ) from None
            finally:
                self._revision = ""
                self._finish(connection)
            return Ran(revision, direction, time.monotonic() - started, self._count)

    def _finish(self, connection: Connection) -> None:
        """Roll back what is left open; give up a connection the server ended."""
        import sqlalchemy as sa

        try:
            if connection.in_transaction():
                connection.rollback()
        except sa.exc.DBAPIError:
            pass
        if connection.invalidated or connection.closed:
            self.close()

    def _apply(
        self, connection: Connection, module: Any, found: RevisionFile, direction: str
    ) -> None:
        from alembic.operations import Operations
        from alembic.runtime.environment import EnvironmentContext
        from alembic.runtime.migration import MigrationContext

        function = getattr(module, direction, None)
        if not callable(function):
            failure = rf.Failure("no_function", f"{found.path.name} has no {direction}() function")
            raise RevisionFailed(failure.message, failure)
        context = MigrationContext.configure(
            connection=connection,
            opts={"transaction_per_migration": True, "as_sql": False},
        )
        # No ScriptDirectory: the project's scripts are never run through Alembic's environment.
        environment = EnvironmentContext(_config(), None)  # type: ignore[arg-type]
        environment.context_opts = {"as_sql": False}
        environment._migration_context = context
        with (
            environment,
            Operations.context(context),
            context.begin_transaction(_per_migration=True),
        ):
            plan = self._plan(context, found.id, direction)
            function()
            self._write(context, plan)

    # --- The version table ---

    def _plan(self, context: MigrationContext, rid: str, direction: str) -> list[tuple[str, str]]:
        """What to write into alembic_version (("insert"|"delete", rev) or ("update",
        "from>to")), from what it holds now; VersionTableRefused when the revision does not
        start there. Takes the rows' locks for the transaction."""
        unusable = self.chain.files[rid].unusable
        if unusable:
            raise VersionTableRefused(
                f"{rid} builds on {_names(unusable)}, which no file defines (or which closes a "
                "cycle): where it starts is unknown, so it is not run"
            )
        exists = self._has_version_table(context)
        heads = self._heads(context) if exists else []
        parents = self.chain.parents(rid)
        holds = _holds(heads)
        if direction == "upgrade":
            if rid in self.chain.ancestors(heads):
                raise VersionTableRefused(f"{rid} is already applied: {holds}")
            if not parents:
                if not exists:
                    assert context.connection is not None
                    context._version.create(context.connection)
                return [("insert", rid)]
            if not exists:
                raise VersionTableRefused(
                    f"the database is not at {_names(parents)}, the parent of {rid}: it has no "
                    f"{VERSION_TABLE} table (at no revision)"
                )
            applied = self.chain.ancestors(heads)
            missing = [p for p in parents if p not in applied]
            if missing:
                raise VersionTableRefused(
                    f"the database is not at {_names(missing)}, the parent of {rid}: {holds}"
                )
            present = [p for p in parents if p in heads]
            if not present:  # a branch off a revision already built on: a new row
                return [("insert", rid)]
            return [("delete", p) for p in present[:-1]] + [("update", f"{present[-1]}>{rid}")]
        if rid not in heads:
            raise VersionTableRefused(f"{rid} is not the current revision: {holds}")
        others = self.chain.ancestors([h for h in heads if h != rid])
        targets = [p for p in parents if p not in others]
        if not targets:
            return [("delete", rid)]
        return [("update", f"{rid}>{targets[-1]}")] + [("insert", p) for p in targets[:-1]]

    def _has_version_table(self, context: MigrationContext) -> bool:
        import sqlalchemy as sa

        assert context.connection is not None
        found = context.connection.execute(sa.select(sa.func.to_regclass(VERSION_TABLE)))
        return found.scalar() is not None

    def _heads(self, context: MigrationContext) -> list[str]:
        import sqlalchemy as sa

        assert context.connection is not None
        table = context._version
        rows = context.connection.execute(
            sa.select(table.c.version_num).with_for_update()
        ).scalars()
        return sorted(str(r) for r in rows)

    def _write(self, context: MigrationContext, plan: list[tuple[str, str]]) -> None:
        assert context.connection is not None
        table = context._version
        for what, rev in plan:
            if what == "insert":
                context.connection.execute(table.insert().values(version_num=rev))
                continue
            if what == "delete":
                done = context.connection.execute(table.delete().where(table.c.version_num == rev))
                shown = f"deleting {rev!r}"
            else:
                old, new = rev.split(">")
                done = context.connection.execute(
                    table.update().values(version_num=new).where(table.c.version_num == old)
                )
                shown = f"moving {old!r} to {new!r}"
            if done.rowcount != 1:
                heads = self._heads(context)
                raise VersionTableRefused(
                    f"{VERSION_TABLE} changed while the revision ran: {shown} matched "
                    f"{done.rowcount} rows; {_holds(heads)}"
                )

    # --- Errors ---

    def _describe(self, exc: Exception, found: RevisionFile) -> rf.Failure:
        import sqlalchemy as sa

        line = rf.line_in(exc, found.path)
        if isinstance(exc, sa.exc.DBAPIError):
            orig = exc.orig if exc.orig is not None else exc
            text = self._redact(_first_line(orig))
            return rf.Failure("database_error", f"{type(orig).__name__}: {text}", line)
        if isinstance(exc, ModuleNotFoundError) and exc.name:  # imported inside upgrade()
            missing = rf.MissingImport(exc.name.split(".")[0], f"imports {exc.name}")
            missing.__traceback__ = exc.__traceback__
            exc = missing
        failure = rf.describe(exc, found.path, rf.Project.around(self.chain.location))
        failure.message = self._redact(
            failure.message.replace(" (it fails this way online too)", "")
        )
        return failure

    def _message(self, failure: rf.Failure, found: RevisionFile) -> str:
        try:
            shown = found.path.relative_to(self.chain.location)
        except ValueError:
            shown = found.path
        where = f", line {failure.line} of {shown}" if failure.line else f", in {shown}"
        return f"{failure.message} ({failure.category}{where})"


@contextmanager
def _loaded(found: RevisionFile) -> Iterator[Any]:
    """The revision's module, forgotten afterwards with the stand-ins it needed; no bytecode
    is written into the project meanwhile."""
    name = f"runway_online_{found.id}"
    tops_before = set(rf.STUBS.tops)
    bytecode = sys.dont_write_bytecode
    try:
        yield rf.load(found.path, name)
    finally:
        sys.modules.pop(name, None)
        for top in rf.STUBS.tops - tops_before:
            rf.STUBS.tops.discard(top)
            for module in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
                del sys.modules[module]
        sys.dont_write_bytecode = bytecode


_CONFIG: Config | None = None


def _config() -> Config:
    from alembic.config import Config

    global _CONFIG
    if _CONFIG is None:
        _CONFIG = Config()
        _CONFIG.cmd_opts = None  # get_x_argument(): empty
    return _CONFIG


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _names(revs: Iterable[str]) -> str:
    return " and ".join(repr(r) for r in revs)


def _holds(heads: list[str]) -> str:
    if not heads:
        return f"{VERSION_TABLE} is empty"
    return f"{VERSION_TABLE} holds {', '.join(repr(h) for h in heads)}"


def _secrets_of(url: str) -> list[str]:
    """The URL and its password (as written and decoded): never shown."""
    from urllib.parse import quote, unquote, urlsplit

    found = [url]
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        found += [password, unquote(password), quote(unquote(password), safe="")]
    return sorted({s for s in found if s}, key=len, reverse=True)
