"""Rendering revisions offline, one file at a time, never through the project's ``env.py``.

:func:`render_revisions` starts one render worker per chain (``_render_worker.py``, an isolated
Python process writing no bytecode) and hands it the revision files; each comes back as its
upgrade's SQL (and its downgrade's), or as a :class:`~.revision_files.Failure` saying why it
cannot be shown: it imports the application, needs a package that is not installed, reads the
database, raises, uses an operation no loaded plugin provides, or took longer than the time
limit. One revision's failure never stops the others; a worker stuck past the limit is killed
and a new one takes the rest.

``env.py`` is only read (:mod:`ast`): the plugins it imports are loaded in the worker when they
are installed, so their operations exist, and the lock and statement timeouts it sets are
reported (:func:`env_facts`).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dashboard.lib.alembic.revision_files import Failure, env_imports

WORKER = Path(__file__).with_name("_render_worker.py")
PYTHON = sys.executable  # the interpreter Runway runs in: Alembic and SQLAlchemy are there
DEFAULT_TIMEOUT = 10.0
_START_SECONDS = 20.0


@dataclass
class Rendered:
    """One direction of one revision, rendered offline."""

    sql: str = ""
    failure: Failure | None = None
    # (line in ``sql``, line in the revision file) for each statement emitted, in order; the
    # file line is None for what Alembic adds (BEGIN, COMMIT, the version table).
    lines: list[tuple[int, int | None]] = field(default_factory=list)
    printed: str = ""

    @property
    def ok(self) -> bool:
        return self.failure is None

    def file_line(self, sql_line: int) -> int | None:
        """The revision file's line that produced what starts at ``sql_line`` of the SQL."""
        found = None
        for start, line in self.lines:
            if start > sql_line:
                break
            found = line
        return found

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Rendered:
        failure = data.get("failure")
        return cls(
            sql=data.get("sql", ""),
            failure=Failure.from_json(failure) if failure else None,
            lines=[(int(a), None if b is None else int(b)) for a, b in data.get("lines", [])],
            printed=data.get("printed") or "",
        )


@dataclass
class RevisionRender:
    upgrade: Rendered
    downgrade: Rendered | None = None


@dataclass
class EnvFacts:
    """What the project's env.py says, read without running it."""

    plugins: list[str] = field(default_factory=list)  # imports that are not stdlib/alembic/sa
    loaded: list[str] = field(default_factory=list)  # of those, installed and loaded here
    missing: list[str] = field(default_factory=list)  # not installed (or the application's)
    timeouts: dict[str, str] = field(default_factory=dict)  # lock_timeout etc. it sets

    def to_json(self) -> dict[str, Any]:
        return {
            "plugins": list(self.plugins),
            "loaded": list(self.loaded),
            "missing": list(self.missing),
            "timeouts": dict(self.timeouts),
        }


_TIMEOUT = re.compile(
    r"(?i)\b(lock_timeout|statement_timeout|idle_in_transaction_session_timeout)"
    r"\b\s*(?:=|\bTO\b)\s*['\"]?(\d+\s*(?:ms|s|min|h)?)"
)


def env_facts(location: Path) -> EnvFacts:
    """The plugins ``env.py`` imports and the timeouts it sets, read as text."""
    env_py = location / "env.py"
    facts = EnvFacts(plugins=env_imports(env_py))
    try:
        text = env_py.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return facts
    for name, value in _TIMEOUT.findall(text):
        facts.timeouts.setdefault(name.lower(), value.replace(" ", ""))
    return facts


@dataclass
class Job:
    id: str
    path: Path
    parents: tuple[str, ...]
    downgrade: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": str(self.path),
            "parents": list(self.parents),
            "downgrade": self.downgrade,
        }


def render_revisions(
    location: Path,
    jobs: Iterable[Job],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    facts: EnvFacts | None = None,
) -> tuple[dict[str, RevisionRender], EnvFacts]:
    """Render each job's revision file offline (see the module's docstring). Returns each
    revision's rendering by id, and the env.py facts (with the plugins the worker loaded)."""
    facts = facts or env_facts(location)
    todo = list(jobs)
    results: dict[str, RevisionRender] = {}
    while todo:
        done, died = _run_worker(location, todo, timeout, facts, results)
        todo = todo[done:]
        if todo and todo[0].id not in results:
            # The worker stopped on this one: stuck past its time limit, or it died.
            failure = (
                Failure("raises", f"the render worker died on it ({died})")
                if died
                else Failure("timed_out", f"rendering it took longer than {timeout:g} s")
            )
            results[todo[0].id] = RevisionRender(Rendered(failure=failure))
            todo = todo[1:]
    return results, facts


def _run_worker(
    location: Path,
    jobs: list[Job],
    timeout: float,
    facts: EnvFacts,
    results: dict[str, RevisionRender],
) -> tuple[int, str]:
    """Render ``jobs`` in one worker: how many it handled, and how it died if it died
    ("" when it finished, or was killed for taking too long)."""
    request = {
        "location": str(location),
        "jobs": [job.to_json() for job in jobs],
        "plugins": facts.plugins,
        "timeout": timeout,
    }
    proc = _warm(location) or _spawn(location)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(json.dumps(request).encode())
        proc.stdin.close()
    except BrokenPipeError:
        pass
    reader = _Lines(proc.stdout)
    handled = 0
    try:
        ready = reader.next(_START_SECONDS)
        if ready is None:
            return 0, _death(proc)
        plugins = json.loads(ready).get("plugins", {})
        facts.loaded = plugins.get("loaded", [])
        facts.missing = plugins.get("missing", [])
        for _ in jobs:
            # The worker stops itself at the limit; this is for one stuck in C code.
            line = reader.next(timeout + 5)
            if line is None:
                return handled, _death(proc)
            data = json.loads(line)
            down = data.get("downgrade")
            results[data["id"]] = RevisionRender(
                Rendered.from_json(data["upgrade"]),
                Rendered.from_json(down) if down else None,
            )
            handled += 1
        return handled, ""
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()


def _spawn(location: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ", "HOME")}
    return subprocess.Popen(
        [PYTHON, "-I", "-B", str(WORKER)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=location,
        env=env,
    )


_WARM: list[tuple[Path, subprocess.Popen[bytes]]] = []
_WARM_LOCK = threading.Lock()


def prestart(location: Path, count: int = 1) -> None:
    """Start ``count`` render workers for ``location`` now: each spends most of a second
    importing Alembic and SQLAlchemy before it reads its request, which the caller's own
    preparation (reading the scripts) can overlap. Unused ones are ended at exit."""
    location = location.resolve()
    with _WARM_LOCK:
        for _ in range(count):
            _WARM.append((location, _spawn(location)))


def _warm(location: Path) -> subprocess.Popen[bytes] | None:
    with _WARM_LOCK:
        for number, (where, proc) in enumerate(_WARM):
            if where == location and proc.poll() is None:
                del _WARM[number]
                return proc
    return None


@atexit.register
def _end_warm() -> None:
    for _, proc in _WARM:
        proc.kill()
        proc.wait()


def _death(proc: subprocess.Popen[bytes]) -> str:
    """How the worker ended, when it ended by itself ("" while it still runs: it was stuck)."""
    try:
        code = proc.wait(0.2)
    except subprocess.TimeoutExpired:
        return ""
    return f"killed by signal {-code}" if code < 0 else f"exit {code}"


class _Lines:
    """Lines from a pipe, each waited for with a time limit."""

    def __init__(self, pipe: Any) -> None:
        self._fd = pipe.fileno()
        self._buffer = b""

    def next(self, seconds: float) -> str | None:
        deadline = time.monotonic() + seconds
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            readable, _, _ = select.select([self._fd], [], [], left)
            if not readable:
                return None
            chunk = os.read(self._fd, 1 << 16)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()
