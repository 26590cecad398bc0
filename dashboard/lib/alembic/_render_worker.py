"""The render worker: renders revision files offline, one at a time, in a process of its own.

Started by ``dashboard.lib.alembic.render`` as ``python -I -B _render_worker.py``: isolated
(no PYTHONPATH, no user site, not Runway's folder on ``sys.path``), writing no bytecode into the
project. It reads one JSON request on stdin and writes one JSON line per revision on the
standard output it had when it started; whatever a revision prints is kept apart.

Each revision file is loaded by its path and its ``upgrade()`` (and ``downgrade()``) runs in an
offline PostgreSQL migration context configured here, never by the project's ``env.py``: literal
binds, the named paramstyle (``%`` is not doubled), transactional DDL (an autocommit block
renders as COMMIT/BEGIN), parameters given to ``execute()`` bound into the SQL, and a connection
that refuses to be read from (a revision that reads the database cannot be shown offline).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same file the worker loads by its path below
    from dashboard.lib.alembic import revision_files as rf
else:
    # Run isolated (-I): not even this folder is on sys.path, so a revision's imports never
    # reach Runway's files. The one sibling it needs is loaded by its path.
    _spec = importlib.util.spec_from_file_location(
        "revision_files", Path(__file__).resolve().with_name("revision_files.py")
    )
    assert _spec is not None and _spec.loader is not None
    rf = importlib.util.module_from_spec(_spec)
    sys.modules["revision_files"] = rf
    _spec.loader.exec_module(rf)

import sqlalchemy as sa  # noqa: E402
from alembic.operations import Operations  # noqa: E402
from alembic.runtime.environment import EnvironmentContext  # noqa: E402
from alembic.runtime.migration import MigrationContext  # noqa: E402
from sqlalchemy import inspection  # noqa: E402
from sqlalchemy.sql import dml, sqltypes  # noqa: E402


class ReadsDatabase(Exception):
    def __init__(self, query: str) -> None:
        super().__init__(query)
        self.query = query


class _Rows:
    """What ``execute()`` returns offline: no rows exist to read."""

    rowcount = -1  # DB-API's "not known"

    def __init__(self, query: str) -> None:
        self._query = query

    def _read(self, *args: Any, **kwargs: Any) -> Any:
        raise ReadsDatabase(self._query)

    fetchall = fetchone = fetchmany = first = one = one_or_none = all = _read
    scalar = scalar_one = scalar_one_or_none = scalars = mappings = keys = _read
    __iter__ = __next__ = __len__ = __getitem__ = _read

    def close(self) -> None:
        pass


class _Transaction:
    def __enter__(self) -> _Transaction:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    close = rollback


class OfflineBind:
    """``op.get_bind()`` offline: what is executed is rendered, with its parameters bound;
    what would be read raises ReadsDatabase naming the query."""

    def __init__(self, context: MigrationContext) -> None:
        self._context = context
        self.dialect = context.dialect

    @property
    def engine(self) -> OfflineBind:
        return self

    def _compile(self, statement: Any) -> str:
        try:
            return str(
                statement.compile(dialect=self.dialect, compile_kwargs={"literal_binds": True})
            )
        except Exception:
            return str(statement)

    def execute(self, statement: Any, parameters: Any = None, **kwargs: Any) -> _Rows:
        if isinstance(statement, str):
            statement = sa.text(statement)
        batches = parameters if isinstance(parameters, list | tuple) else [parameters]
        bound = statement
        for params in batches:
            bound = _bind(statement, params)
            self._context.impl._exec(bound)
        return _Rows(" ".join(self._compile(bound).split()))

    def exec_driver_sql(self, statement: str, parameters: Any = None, **kwargs: Any) -> _Rows:
        if parameters:
            raise ReadsDatabase(statement)  # driver-level parameters: cannot be bound here
        return self.execute(sa.text(statement))

    def scalar(self, statement: Any, parameters: Any = None, **kwargs: Any) -> Any:
        return self.execute(statement, parameters).scalar()

    def scalars(self, statement: Any, parameters: Any = None, **kwargs: Any) -> Any:
        return self.execute(statement, parameters).scalars()

    def begin(self) -> _Transaction:
        return _Transaction()

    begin_nested = begin

    def in_transaction(self) -> bool:
        return True

    def execution_options(self, **kwargs: Any) -> OfflineBind:
        return self

    def get_isolation_level(self) -> str:
        return "READ COMMITTED"

    def commit(self) -> None:
        pass

    rollback = close = commit


def _untyped_literal(self: Any, dialect: Any) -> Any:
    """A column of a lightweight ``sa.table()`` has no type; online the driver sends its
    values as they are, so offline render them as literals of their Python type."""

    def process(value: Any) -> str:
        literal = sa.literal(value)
        return str(literal.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))

    return process


# Patched on the class, in this worker process only: SQLAlchemy has no hook for it.
sqltypes.NullType.literal_processor = _untyped_literal  # type: ignore[method-assign]


@inspection._inspects(OfflineBind)
def _no_inspection(bind: OfflineBind) -> Any:
    raise ReadsDatabase("sqlalchemy.inspect(): reflects the live schema")


def _bind(statement: Any, params: Any) -> Any:
    if not params:
        return statement
    if isinstance(statement, sa.TextClause):
        known = set(statement._bindparams)
        return statement.bindparams(**{k: v for k, v in params.items() if k in known})
    if isinstance(statement, dml.Insert | dml.Update) and not statement._values:
        # A literal typed from its Python value: a lightweight sa.table()'s columns have none.
        return statement.values(
            {k: v if isinstance(v, sa.ClauseElement) else sa.literal(v) for k, v in params.items()}
        )
    return statement.params(**params)


def _caller_line(path: Path) -> int | None:
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename == str(path):
            return frame.f_lineno
        frame = frame.f_back
    return None


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _version_sql(emit: Any, job: dict[str, Any], direction: str) -> None:
    """The version table's statements, written as Alembic renders them (text, not compiled
    constructs: it is the same SQL every time)."""
    rid, parents = job["id"], list(job["parents"])
    where = "WHERE alembic_version.version_num = "
    insert = (
        "INSERT INTO alembic_version (version_num) VALUES ({}) "
        "RETURNING alembic_version.version_num;"
    )
    update = "UPDATE alembic_version SET version_num={} " + where + "{};"
    delete = "DELETE FROM alembic_version " + where + "{};"
    if direction == "upgrade":
        if not parents:
            emit(insert.format(_quote(rid)))
            return
        for other in parents[1:]:
            emit(delete.format(_quote(other)))
        emit(update.format(_quote(rid), _quote(parents[0])))
    else:
        if not parents:
            emit(delete.format(_quote(rid)))
            return
        emit(update.format(_quote(parents[0]), _quote(rid)))
        for other in parents[1:]:
            emit(insert.format(_quote(other)))


class _Offline:
    """One offline migration context for the whole worker, its output swapped per revision:
    configuring one costs more than rendering most revisions. A revision that fails may have
    left it half-way through something, so it is made again after any failure."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()
        self.context = MigrationContext.configure(
            dialect_name="postgresql",
            dialect_opts={"paramstyle": "named"},
            opts={
                "as_sql": True,
                "output_buffer": self.buffer,
                "literal_binds": True,
                "transactional_ddl": True,
                "transaction_per_migration": True,
            },
        )
        self.stdout = self.context.connection  # Alembic's own offline connection
        self.bind = OfflineBind(self.context)
        self.write = type(self.context.impl).static_output.__get__(self.context.impl)

    def start(self) -> io.StringIO:
        self.buffer = io.StringIO()
        # The context reads its own output_buffer only when it is configured; its impl writes.
        self.context.impl.output_buffer = self.buffer
        self.context.connection = self.context.impl.connection = self.stdout
        return self.buffer


_OFFLINE: _Offline | None = None


def _offline() -> _Offline:
    global _OFFLINE
    if _OFFLINE is None:
        _OFFLINE = _Offline()
    return _OFFLINE


def _render(
    module: Any, job: dict[str, Any], direction: str, project: rf.Project
) -> dict[str, Any]:
    global _OFFLINE
    path = Path(job["path"])
    offline = _offline()
    buffer = offline.start()
    context, impl = offline.context, offline.context.impl
    if direction == "upgrade" and not job["parents"]:
        context._ensure_version_table()  # CREATE TABLE alembic_version, as Alembic renders it
    # A stand-in that refuses reads; typed as SQLAlchemy's Connection, which it cannot subclass.
    context.connection = impl.connection = offline.bind  # type: ignore[assignment]
    lines: list[list[int | None]] = []
    at = [buffer.getvalue().count("\n")]
    write = offline.write

    def static_output(text: str) -> None:
        lines.append([at[0], _caller_line(path)])
        write(text)
        at[0] += text.count("\n") + 2  # static_output adds a blank line

    # Alembic has no hook for its output: this instance's method is replaced, on purpose.
    impl.static_output = static_output  # type: ignore[method-assign]
    # No ScriptDirectory: the project's scripts are never run through Alembic's environment.
    env = EnvironmentContext(_config(), None)  # type: ignore[arg-type]
    env.context_opts = {"as_sql": True, "literal_binds": True}
    env._migration_context = context
    printed = io.StringIO()
    try:
        with (
            contextlib.redirect_stdout(printed),
            contextlib.redirect_stderr(printed),
            env,
            Operations.context(context),
            context.begin_transaction(_per_migration=True),
        ):
            getattr(module, direction)()
            _version_sql(static_output, job, direction)
    except ReadsDatabase as exc:
        _OFFLINE = None
        failure = rf.Failure(
            "reads_database",
            f"it tried {exc.query[:300]}; what it runs depends on what it finds there, so "
            "it cannot be shown offline",
            rf.line_in(exc, path),
            query=exc.query[:1000],
        )
        return {"sql": "", "lines": [], "failure": failure.to_json(), "printed": _cut(printed)}
    except _Timeout:
        _OFFLINE = None
        raise
    except Exception as exc:  # the revision's own failure, whatever it is
        _OFFLINE = None
        failure = rf.describe(exc, path, project)
        return {"sql": "", "lines": [], "failure": failure.to_json(), "printed": _cut(printed)}
    return {"sql": buffer.getvalue(), "lines": lines, "failure": None, "printed": _cut(printed)}


def _cut(printed: io.StringIO) -> str:
    text = printed.getvalue()
    return text if len(text) <= 2000 else text[:2000] + "…"


_CONFIG: Any = None


def _config() -> Any:
    global _CONFIG
    if _CONFIG is None:
        from alembic.config import Config

        _CONFIG = Config()
        _CONFIG.cmd_opts = None
    return _CONFIG


class _Timeout(BaseException):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout


def main() -> None:
    out = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # what C code prints goes nowhere
    request = json.load(sys.stdin)
    location = Path(request["location"])
    project = rf.Project.around(location)
    loaded, missing = [], []
    for plugin in request.get("plugins", []):
        if project.owns(plugin.split(".")[0]):
            continue  # the application's own code: never imported
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                __import__(plugin)
        except Exception:
            missing.append(plugin)
        else:
            loaded.append(plugin)
    out.write(json.dumps({"ready": True, "plugins": {"loaded": loaded, "missing": missing}}) + "\n")
    baseline = set(sys.modules)
    limit = float(request.get("timeout", 10))
    signal.signal(signal.SIGALRM, _alarm)
    for number, job in enumerate(request["jobs"]):
        result: dict[str, Any] = {"id": job["id"]}
        path = Path(job["path"])
        rf.STUBS.tops.clear()
        signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            try:
                module = rf.load(path, f"runway_revision_{number}")
            except _Timeout:
                raise
            except Exception as exc:
                failure = rf.describe(exc, path, project)
                result["upgrade"] = {"sql": "", "lines": [], "failure": failure.to_json()}
            else:
                result["upgrade"] = _render(module, job, "upgrade", project)
                if job.get("downgrade") and callable(getattr(module, "downgrade", None)):
                    result["downgrade"] = _render(module, job, "downgrade", project)
        except _Timeout:
            failure = rf.Failure(
                "timed_out", f"rendering it took longer than {limit:g} s (a loop, or a wait)"
            )
            result["upgrade"] = {"sql": "", "lines": [], "failure": failure.to_json()}
            result.pop("downgrade", None)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        for name in set(sys.modules) - baseline:
            del sys.modules[name]
        out.write(json.dumps(result) + "\n")
    out.close()


if __name__ == "__main__":
    main()
