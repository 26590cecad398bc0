"""The project's own alembic as a subprocess: its command line, its environment, its output in the
log with secrets replaced, its config file, and a stop that takes its whole process group."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers import wait_until

from dashboard.lib.alembic import project

URL = "postgresql://app:s3cr%40t@db.internal:5432/app"


def program(tmp_path: Path, body: str) -> str:
    """A stand-in interpreter: a shell script (it ignores the alembic arguments)."""
    path = tmp_path / "python"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def command(interpreter: str, tmp_path: Path) -> project.Command:
    return project.Command(interpreter, tmp_path / "alembic.ini", tmp_path, "DATABASE_URL")


def test_the_command_line_names_the_revision_and_never_the_url(tmp_path: Path) -> None:
    cmd = command("/opt/app/bin/python", tmp_path)
    ini = str(tmp_path / "alembic.ini")
    assert cmd.argv("upgrade", "0017") == [
        "/opt/app/bin/python", "-m", "alembic", "-c", ini, "upgrade", "0017"
    ]  # fmt: skip
    assert cmd.argv("downgrade", "0017")[-2:] == ["downgrade", "0017-1"]
    with pytest.raises(ValueError):
        cmd.argv("stamp", "0017")


def test_the_output_reaches_the_log_line_by_line_with_the_secrets_hidden(tmp_path: Path) -> None:
    python = program(
        tmp_path,
        'echo "INFO  connecting to $DATABASE_URL"\n'
        'echo "Traceback (most recent call last):" >&2\n'
        'echo "ValueError: the password s3cr@t was refused" >&2\n'
        "exit 3\n",
    )
    lines: list[str] = []
    env = project.environment("DATABASE_URL", URL, {"PGOPTIONS": "-c lock_timeout=3min"})
    with pytest.raises(project.ProjectFailed) as caught:
        project.run(
            command(python, tmp_path),
            "upgrade",
            "0017",
            env=env,
            secrets=[URL, "s3cr@t", "s3cr%40t"],
            log=lines.append,
        )
    assert str(caught.value) == (
        "alembic upgrade 0017 exited with 3: ValueError: the password *** was refused"
    )
    assert lines[0].startswith(f"$ {python} -m alembic -c ")
    assert lines[0].endswith(
        "(in " + str(tmp_path) + "; the URL in $DATABASE_URL, the timeouts in $PGOPTIONS)"
    )
    assert "  | INFO  connecting to ***" in lines
    assert not any("s3cr" in line for line in lines)


def test_the_process_gets_none_of_the_workers_other_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNWAY_BACKUP_PASSPHRASE", "not for the project")
    monkeypatch.setenv("PGPASSWORD", "not for the project either")
    python = program(tmp_path, "env | cut -d= -f1 | sort\n")
    lines: list[str] = []
    env = project.environment("APP_DB", URL, {"PGOPTIONS": "-c lock_timeout=3min"})
    project.run(command(python, tmp_path), "upgrade", "1", env=env, secrets=[URL], log=lines.append)
    names = {line.removeprefix("  | ") for line in lines[1:]}
    assert {"APP_DB", "PGOPTIONS", "PATH"} <= names
    assert "RUNWAY_BACKUP_PASSPHRASE" not in names and "PGPASSWORD" not in names
    assert names <= {
        "APP_DB",
        "PGOPTIONS",
        "PATH",
        "HOME",
        "LANG",
        "TZ",
        "TMPDIR",
        "PWD",
        "SHLVL",
        "_",
    } | {n for n in names if n.startswith("LC_")}


def test_an_interrupted_run_kills_the_process_group(tmp_path: Path) -> None:
    python = program(tmp_path, "sleep 30 &\necho started $!\nwait\n")
    children: list[int] = []

    def log(line: str) -> None:
        if "started" in line:
            children.append(int(line.split()[-1]))
            raise KeyboardInterrupt

    began = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        project.run(
            command(python, tmp_path),
            "upgrade",
            "1",
            env=project.environment("DATABASE_URL", URL, {}),
            secrets=[URL],
            log=log,
        )
    assert time.monotonic() - began < 10

    def gone(pid: int) -> bool:  # no such process, or a zombie waiting for its reaper
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    wait_until(lambda: gone(children[0]), "the revision's own child to be killed", 5)


def test_an_interpreter_that_cannot_start_is_named(tmp_path: Path) -> None:
    with pytest.raises(project.ProjectFailed, match="cannot be started"):
        project.run(
            command(str(tmp_path / "no-such-python"), tmp_path),
            "upgrade",
            "1",
            env={},
            secrets=[],
            log=lambda line: None,
        )


@pytest.mark.parametrize(
    "name,refused",
    [
        ("DATABASE_URL", False),
        ("APP_SQLALCHEMY_URL", False),
        ("database_url", True),
        ("PATH", True),
        ("PGOPTIONS", True),
        ("LD_PRELOAD", True),
        ("PYTHONPATH", True),
        ("A B", True),
        ("", True),
    ],
)
def test_the_url_variable_is_a_name_the_process_does_not_depend_on(
    name: str, refused: bool
) -> None:
    assert bool(project.variable_refusal(name)) == refused


def test_the_config_is_the_working_directorys_else_the_script_folders(tmp_path: Path) -> None:
    root = tmp_path / "app"
    location = root / "migrations"
    location.mkdir(parents=True)
    assert project.find_config(location, root) is None
    (location / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s\n")
    assert project.default_directory(location) == location
    assert project.find_config(location, root) == location / "alembic.ini"
    (root / "alembic.ini").write_text("[alembic]\nscript_location = migrations\n")
    assert project.default_directory(location) == root
    assert project.find_config(location, root) == root / "alembic.ini"
    assert project.configured_location(root / "alembic.ini", root) == root / "migrations"
    assert project.configured_location(location / "alembic.ini", root) == location
    (root / "alembic.ini").write_text("[alembic]\nscript_location = myapp:migrations\n")
    assert project.configured_location(root / "alembic.ini", root) is None


def test_the_programs_url_carries_no_options_and_refuses_clear_text() -> None:
    from sqlalchemy.engine import make_url

    from dashboard.lib import pg

    url, options = pg.program_url(
        "host=db.internal port=5432 dbname=app user=app options='-c search_path=app'", "p@ss%"
    )
    assert url == (
        "postgresql://app:p%40ss%25@db.internal:5432/app?application_name=runway"
        "&passfile=/dev/null/runway-has-no-passfile&require_auth=scram-sha-256"
    )
    assert options == "-c search_path=app"
    parsed = make_url(url)
    assert (parsed.password, parsed.query["require_auth"]) == ("p@ss%", "scram-sha-256")
    env = pg.program_libpq_env("p@ss%", f"{options} -c lock_timeout=3min")
    assert env == {
        "PGPASSFILE": "/dev/null/runway-has-no-passfile",
        "PGREQUIREAUTH": "scram-sha-256",
        "PGOPTIONS": "-c search_path=app -c lock_timeout=3min",
    }
