"""How a managed database's revisions run, and what may be chosen for it.

"runway" (the default) runs each revision file in Runway's own online environment
(:mod:`dashboard.lib.alembic.online`). "project" runs the project's own ``alembic`` with its
``env.py`` (:mod:`dashboard.lib.alembic.project`): a program the worker starts, so the
interpreter must be one an admin listed in ``RUNWAY_PROJECT_PYTHONS`` (checked when the database
is saved and again before every run), and the working directory, which decides what that
interpreter imports first, must be the script folder or a folder up to three levels above it
(the project around it, as the risk analysis sees it), never anywhere else.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings

from dashboard.databases.models import ManagedDatabase, RunMode
from dashboard.lib import alembic
from dashboard.lib.alembic import project
from dashboard.lib.alembic.locations import DEFAULT_SECTION, ScriptConfig

LEVELS_UP = 3


class RunModeRefused(ValueError):
    """The database's project run mode cannot be used as configured; the message says why."""


def allowed_pythons() -> list[str]:
    """The interpreters an admin allowed, as written (a venv's ``bin/python`` is a symbolic link
    whose own path decides the environment: it is not resolved)."""
    return [
        os.path.normpath(p) for p in settings.RUNWAY_PROJECT_PYTHONS if os.path.isabs(p.strip())
    ]


def python_refusal(path: str, *, here: bool = True) -> str:
    """Why ``path`` may not run the project's alembic ("" when it may). ``here``: also check
    that it is an executable on this host (the worker's; a web host may not have it)."""
    if not path:
        return "Choose the application's Python (one of RUNWAY_PROJECT_PYTHONS)."
    if not os.path.isabs(path) or os.path.normpath(path) not in allowed_pythons():
        return (
            f"{path} is not one of the interpreters an admin allowed (RUNWAY_PROJECT_PYTHONS): "
            "the workers run only those."
        )
    if here and not (os.path.isfile(path) and os.access(path, os.X_OK)):
        return f"{path} is not an executable file on this host."
    return ""


def _scripts(db: ManagedDatabase) -> ScriptConfig | None:
    """Where the registered project keeps its scripts (None when that cannot be read)."""
    try:
        return alembic.check_config(db.script_path)
    except (alembic.NotAnAlembicProject, OSError, ValueError):
        return None


def directory(db: ManagedDatabase) -> Path:
    """The working directory the project's alembic runs in: the one configured, else the
    folder of the registered alembic.ini (or pyproject.toml), else beside the script folder's
    alembic.ini."""
    if db.project_directory.strip():
        path = Path(db.project_directory.strip())
        return path if path.is_absolute() else Path(settings.BASE_DIR) / path
    scripts = _scripts(db)
    if scripts is not None and scripts.config_file is not None:
        return scripts.config_file.parent
    return project.default_directory(scripts.script_location if scripts else db.script_path)


def allowed_directories(db: ManagedDatabase) -> list[Path]:
    """The script folder and up to three folders above it, and the registered file's folder."""
    scripts = _scripts(db)
    script = (scripts.script_location if scripts else db.script_path).resolve()
    found = [p for p in [script, *list(script.parents)[:LEVELS_UP]] if p != Path(p.anchor)]
    if scripts is not None and scripts.config_file is not None:
        found.append(scripts.config_file.parent.resolve())
    return found


def directory_refusal(db: ManagedDatabase) -> str:
    folder = directory(db)
    try:
        if not folder.is_dir():
            return f"The working directory {folder} does not exist."
        inside = folder.resolve() in allowed_directories(db)
    except (OSError, ValueError):  # a NUL, an unencodable name, a loop of links
        return "The working directory cannot be read."
    if not inside:
        return (
            f"The working directory {folder} is outside the project: it must be the script "
            f"folder or a folder up to {LEVELS_UP} levels above it."
        )
    return ""


def config_file(db: ManagedDatabase) -> tuple[Path | None, str | None]:
    """The file the project's alembic reads, and its section when not ``[alembic]``: the
    registered alembic.ini or pyproject.toml, else the one :func:`project.find_config` finds."""
    scripts = _scripts(db)
    if scripts is not None and scripts.config_file is not None:
        named = scripts.config_file.suffix != ".toml" and scripts.section != DEFAULT_SECTION
        return scripts.config_file, scripts.section if named else None
    script = scripts.script_location if scripts else db.script_path
    return project.find_config(script, directory(db).resolve()), None


def command(db: ManagedDatabase, *, here: bool = True) -> project.Command:
    """The project's alembic for ``db``, checked; RunModeRefused naming what is wrong."""
    problem = python_refusal(db.project_python, here=here) or directory_refusal(db)
    problem = problem or project.variable_refusal(db.project_url_variable)
    scripts = _scripts(db)
    if not problem and scripts is None:
        problem = f"{db.script_location} is not an Alembic project that can be read."
    if problem:
        raise RunModeRefused(problem)
    assert scripts is not None
    folder = directory(db).resolve()
    config, section = config_file(db)
    if config is None:
        raise RunModeRefused(
            f"No {project.CONFIG_NAME} in {folder}, in the script folder or beside it: the "
            "project's alembic needs one (or register the project as its alembic.ini)."
        )
    if scripts.config_file is None:  # found by Runway: it must name the registered folder
        named = project.configured_location(config, folder)
        if named is not None and named.resolve() != scripts.script_location.resolve():
            raise RunModeRefused(
                f"{config} names the script folder {named}, not {scripts.script_location}: "
                "the project's alembic would run other revisions than Runway analysed."
            )
    return project.Command(
        os.path.normpath(db.project_python),
        config,
        folder,
        db.project_url_variable,
        section=section,
    )


def refusal(db: ManagedDatabase, *, here: bool = True) -> str:
    """Why ``db`` cannot run as configured ("" when it can, or when it runs in Runway's)."""
    if db.run_mode != RunMode.PROJECT:
        return ""
    try:
        command(db, here=here)
    except RunModeRefused as exc:
        return str(exc)
    return ""


def summary(db: ManagedDatabase) -> dict[str, object]:
    """How ``db``'s revisions run, for its page: the mode, and in the project mode the
    interpreter, the folder, the alembic.ini and what is wrong (as this host sees it)."""
    facts: dict[str, object] = {
        "project": db.run_mode == RunMode.PROJECT,
        "lock_timeout": settings.RUNWAY_MIGRATION_LOCK_TIMEOUT,
        "statement_timeout": settings.RUNWAY_MIGRATION_STATEMENT_TIMEOUT,
    }
    if db.run_mode == RunMode.PROJECT:
        folder = directory(db)
        facts |= {
            "python": db.project_python,
            "directory": folder,
            "config": config_file(db)[0],
            "variable": db.project_url_variable,
            "refusal": refusal(db, here=False),
        }
    return facts
