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
from dashboard.lib.alembic import project

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


def directory(db: ManagedDatabase) -> Path:
    """The working directory the project's alembic runs in."""
    if db.project_directory.strip():
        path = Path(db.project_directory.strip())
        return path if path.is_absolute() else Path(settings.BASE_DIR) / path
    return project.default_directory(db.script_path)


def allowed_directories(db: ManagedDatabase) -> list[Path]:
    script = db.script_path.resolve()
    return [p for p in [script, *list(script.parents)[:LEVELS_UP]] if p != Path(p.anchor)]


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


def command(db: ManagedDatabase, *, here: bool = True) -> project.Command:
    """The project's alembic for ``db``, checked; RunModeRefused naming what is wrong."""
    problem = python_refusal(db.project_python, here=here) or directory_refusal(db)
    problem = problem or project.variable_refusal(db.project_url_variable)
    if problem:
        raise RunModeRefused(problem)
    folder = directory(db).resolve()
    config = project.find_config(db.script_path, folder)
    if config is None:
        raise RunModeRefused(
            f"No {project.CONFIG_NAME} in {folder}, in the script folder or beside it: the "
            "project's alembic needs one."
        )
    named = project.configured_location(config, folder)
    if named is not None and named.resolve() != db.script_path.resolve():
        raise RunModeRefused(
            f"{config} names the script folder {named}, not {db.script_path}: the project's "
            "alembic would run other revisions than Runway analysed."
        )
    return project.Command(
        os.path.normpath(db.project_python), config, folder, db.project_url_variable
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
            "config": project.find_config(db.script_path, folder),
            "variable": db.project_url_variable,
            "refusal": refusal(db, here=False),
        }
    return facts
