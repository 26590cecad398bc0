"""Running revisions through the project's own ``env.py``, in the application's Python environment.

For chains whose revisions need the application (its models, its column types): the worker starts
``<interpreter> -m alembic -c <alembic.ini> upgrade <revision>`` (``downgrade <revision>-1``) in
the project's working directory, one revision per process. The database URL reaches it only in
its environment (a variable the project's ``env.py`` reads, ``DATABASE_URL`` by default), with
``PGOPTIONS`` carrying Runway's ``lock_timeout``/``statement_timeout`` so that any libpq driver
applies them; never on its command line. The process gets no other variable of the worker's
but ``PATH``, the locale, ``TZ``, ``HOME`` and ``TMPDIR``. Its output goes line by line to the
caller's log with the URL and the password replaced by ``***``.

Which interpreters and folders are allowed is decided by the caller (Runway's settings); this
module only runs what it is given. No Django.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

CONFIG_NAME = "alembic.ini"
DEFAULT_URL_VARIABLE = "DATABASE_URL"
TAIL_LINES = 12  # of the output, kept for the error message
_VARIABLE = re.compile(r"^[A-Z_][A-Z0-9_]{0,63}$")
# Variables the process needs for itself, or that decide what it loads: never the URL's.
_RESERVED = ("PATH", "HOME", "TMPDIR", "TZ", "LANG", "SHELL", "USER", "PWD")
_RESERVED_PREFIXES = ("PG", "LC_", "LD_", "PYTHON")
_PASSED_ON = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "HOME", "TMPDIR")


class ProjectFailed(RuntimeError):
    """The project's alembic exited with an error (or could not start); the message holds the
    last lines of its output, redacted."""


def variable_refusal(name: str) -> str:
    """Why ``name`` cannot carry the URL ("" when it can)."""
    if not _VARIABLE.match(name):
        return f"{name!r} is not an environment variable name (A-Z, 0-9 and _)."
    if name in _RESERVED or name.startswith(_RESERVED_PREFIXES):
        return f"{name} is a variable the process itself depends on: choose another name."
    return ""


def find_config(location: Path, directory: Path) -> Path | None:
    """The ``alembic.ini`` the project's alembic reads: the working directory's, else the
    script folder's, else the one beside the script folder."""
    for folder in (directory, location, location.parent):
        candidate = folder / CONFIG_NAME
        if candidate.is_file():
            return candidate
    return None


def default_directory(location: Path) -> Path:
    """Where to run without a configured folder: beside ``alembic.ini`` (the script folder's
    parent, where a project keeps it, else the script folder when it holds its own)."""
    if (location.parent / CONFIG_NAME).is_file() or not (location / CONFIG_NAME).is_file():
        return location.parent
    return location


def configured_location(config: Path, directory: Path) -> Path | None:
    """The script folder ``config`` names (``%(here)s`` expanded, relative to ``directory``);
    None when it names none or a package resource (``package:folder``)."""
    parser = configparser.ConfigParser(defaults={"here": str(config.parent)})
    try:
        parser.read(config, encoding="utf-8")
        value = parser.get("alembic", "script_location", fallback="").strip()
    except (configparser.Error, UnicodeDecodeError, OSError):
        return None
    if not value or (":" in value and not os.path.isabs(value)):
        return None
    path = Path(value)
    return path if path.is_absolute() else directory / path


@dataclass(frozen=True)
class Command:
    interpreter: str
    config: Path
    directory: Path
    url_variable: str = DEFAULT_URL_VARIABLE
    section: str | None = None  # an alembic.ini section other than [alembic] (alembic -n)

    def argv(self, direction: str, revision: str) -> list[str]:
        if direction not in ("upgrade", "downgrade"):
            raise ValueError(f"direction must be upgrade or downgrade, not {direction!r}")
        target = revision if direction == "upgrade" else f"{revision}-1"
        named = ["-n", self.section] if self.section else []
        return [
            self.interpreter,
            "-m",
            "alembic",
            "-c",
            str(self.config),
            *named,
            direction,
            target,
        ]


def environment(url_variable: str, url: str, extra: dict[str, str]) -> dict[str, str]:
    """The process's whole environment: a few of the worker's variables, the URL, ``extra``
    (``PGOPTIONS`` and the libpq settings the caller adds)."""
    env = {k: v for k, v in os.environ.items() if k in _PASSED_ON or k.startswith("LC_")}
    env.update(extra)
    env[url_variable] = url
    return env


def run(
    command: Command,
    direction: str,
    revision: str,
    *,
    env: dict[str, str],
    secrets: Iterable[str],
    log: Callable[[str], None],
    started: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> None:
    """Run one revision through the project's alembic; ProjectFailed when it exits non-zero.

    ``secrets`` (the URL, the password) never reach the log or the message. ``started`` is
    called with the process once it runs (to stop it from elsewhere). Interrupted (an
    exception in ``log``, the worker stopping), the process group is killed."""
    hidden = sorted({s for s in secrets if s}, key=len, reverse=True)

    def redact(text: str) -> str:
        for secret in hidden:
            text = text.replace(secret, "***")
        return text

    argv = command.argv(direction, revision)
    log(
        f"$ {' '.join(argv)}  (in {command.directory}; the URL in ${command.url_variable}, "
        f"the timeouts in $PGOPTIONS)"
    )
    try:
        proc = subprocess.Popen(
            argv,
            cwd=command.directory,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped with everything it starts
        )
    except OSError as exc:
        raise ProjectFailed(f"{command.interpreter} cannot be started: {exc.strerror}") from None
    tail: list[str] = []
    try:
        if started is not None:
            started(proc)
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = redact(raw.decode("utf-8", "replace").rstrip())
            if not line.strip():
                continue
            log(f"  | {line}")
            tail = [*tail[-(TAIL_LINES - 1) :], line]
        code = proc.wait()
    except BaseException:
        _kill(proc)
        raise
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
    if code != 0:
        reason = _reason(tail) or "no output"
        raise ProjectFailed(f"alembic {direction} {argv[-1]} exited with {code}: {reason}")


def _reason(tail: list[str]) -> str:
    """The line that says what went wrong: Alembic's ``FAILED:``, else a traceback's last
    line, else the last line."""
    for line in reversed(tail):
        if line.startswith("FAILED:"):
            return line
    for line in reversed(tail):
        if re.match(r"^[A-Za-z_.]*(Error|Exception|Exit)\b", line):
            return line
    return tail[-1] if tail else ""


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
