"""How a database's revisions run: chosen on its edit form among the interpreters an admin allowed,
by a lead (an admin for production), audited, refused outside the project, shown on its page."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse
from helpers import ROOT, TARGET_PASSWORD_ENV, make_database

from dashboard.audit.models import AuditEvent
from dashboard.databases import registry, run_modes
from dashboard.databases.models import ManagedDatabase

pytestmark = pytest.mark.django_db

PYTHON = sys.executable


@pytest.fixture
def allowed(settings: Any) -> str:
    settings.RUNWAY_PROJECT_PYTHONS = [PYTHON, "relative/python"]
    return PYTHON


@pytest.fixture
def app_project(tmp_path: Path) -> Path:
    """A project folder: alembic.ini beside the script folder, as most projects keep it."""
    root = tmp_path / "app"
    shutil.copytree(ROOT / "migrations_target", root / "migrations")
    (root / "migrations" / "alembic.ini").rename(root / "alembic.ini")
    text = (root / "alembic.ini").read_text().replace("%(here)s", "%(here)s/migrations", 2)
    (root / "alembic.ini").write_text(text)
    return root


def edit_data(db: ManagedDatabase, **overrides: Any) -> dict[str, Any]:
    data = {
        "name": db.name,
        "environment": db.environment,
        "dsn": db.dsn,
        "password_ref": db.password_ref,
        "require_auth": db.require_auth,
        "script_location": db.script_location,
        "critical_tables": ", ".join(db.critical_tables),
        "run_mode": db.run_mode,
        "project_python": db.project_python,
        "project_directory": db.project_directory,
        "project_url_variable": db.project_url_variable,
    }
    return data | overrides


def edit(client: Any, db: ManagedDatabase, **overrides: Any) -> Any:
    return client.post(reverse("database-edit", args=[db.name]), edit_data(db, **overrides))


def test_a_lead_chooses_the_projects_env_py_and_it_is_audited(
    client: Any, lead: Any, allowed: str, app_project: Path
) -> None:
    db = make_database(environment="staging", script_location=str(app_project / "migrations"))
    client.force_login(lead)
    response = edit(client, db, run_mode="project", project_python=PYTHON)
    assert response.status_code == 302, response.content.decode()[-2000:]
    db.refresh_from_db()
    assert (db.run_mode, db.project_python) == ("project", PYTHON)
    assert run_modes.command(db).config == app_project / "alembic.ini"
    assert run_modes.command(db).directory == app_project.resolve()
    changes = AuditEvent.objects.get(action="database.updated").details["changes"]
    assert changes["run_mode"] == ["runway", "project"]
    assert changes["project_python"] == ["", PYTHON]


def test_the_interpreter_is_a_choice_of_the_allowed_ones(
    client: Any, lead: Any, allowed: str
) -> None:
    db = make_database(environment="staging")
    client.force_login(lead)
    body = client.get(reverse("database-edit", args=[db.name])).content.decode()
    assert f'<option value="{PYTHON}">{PYTHON}</option>' in body
    assert "relative/python" not in body  # not an absolute path: never offered
    response = edit(client, db, run_mode="project", project_python="/usr/bin/perl")
    assert "Select a valid choice" in response.content.decode()
    db.refresh_from_db()
    assert db.run_mode == "runway"


def test_an_interpreter_no_longer_allowed_is_refused_on_the_form(
    client: Any, lead: Any, settings: Any, app_project: Path
) -> None:
    settings.RUNWAY_PROJECT_PYTHONS = []
    db = make_database(environment="staging", script_location=str(app_project / "migrations"))
    client.force_login(lead)
    response = edit(client, db, run_mode="project", project_python="")
    assert "Choose the application&#x27;s Python" in response.content.decode()
    ManagedDatabase.objects.filter(pk=db.pk).update(run_mode="project", project_python=PYTHON)
    db.refresh_from_db()
    body = client.get(reverse("database-edit", args=[db.name])).content.decode()
    assert f"{PYTHON} (no longer allowed)" in body
    response = edit(client, db, project_directory=str(app_project))
    assert "is not one of the interpreters an admin allowed" in response.content.decode()


# "elsewhere": a folder of its own (a clone may itself live under /tmp, and a folder up to
# three levels above the script folder is allowed).
@pytest.mark.parametrize("folder", ["elsewhere", "/", "migrations_target/versions"])
def test_a_working_directory_outside_the_project_is_refused(
    client: Any, lead: Any, allowed: str, folder: str, tmp_path: Path
) -> None:
    if folder == "elsewhere":
        folder = str(tmp_path)
    db = make_database(environment="staging")
    client.force_login(lead)
    response = edit(client, db, run_mode="project", project_python=PYTHON, project_directory=folder)
    assert "is outside the project" in response.content.decode()
    db.refresh_from_db()
    assert db.run_mode == "runway"


def test_a_config_naming_other_revisions_is_refused(
    client: Any, lead: Any, allowed: str, app_project: Path
) -> None:
    db = make_database(environment="staging", script_location=str(app_project / "migrations"))
    (app_project / "alembic.ini").write_text("[alembic]\nscript_location = elsewhere\n")
    client.force_login(lead)
    response = edit(client, db, run_mode="project", project_python=PYTHON)
    assert "would run other revisions than Runway analysed" in response.content.decode()


def test_a_bad_url_variable_is_refused(client: Any, lead: Any, allowed: str) -> None:
    db = make_database(environment="staging")
    client.force_login(lead)
    response = edit(client, db, project_url_variable="LD_PRELOAD")
    assert "a variable the process itself depends on" in response.content.decode()


def test_an_engineer_cannot_change_how_revisions_run(
    client: Any, engineer: Any, allowed: str
) -> None:
    db = make_database(environment="staging")
    client.force_login(engineer)
    body = client.get(reverse("database-edit", args=[db.name])).content.decode()
    assert "Only a lead may change this: it decides which program the workers run." in body
    response = edit(client, db, run_mode="project", project_python=PYTHON, critical_tables="users")
    assert response.status_code == 302  # the disabled fields keep their values
    db.refresh_from_db()
    assert (db.run_mode, db.project_python, db.critical_tables) == ("runway", "", ["users"])
    db.run_mode, db.project_python = "project", PYTHON
    with pytest.raises(registry.NotAllowed, match="needs the lead role"):
        registry.update(engineer, db)


def test_production_needs_an_admin(
    client: Any, lead: Any, admin_user: Any, allowed: str, app_project: Path
) -> None:
    db = make_database(script_location=str(app_project / "migrations"))  # production
    client.force_login(lead)
    response = edit(client, db, run_mode="project", project_python=PYTHON)
    assert response.status_code == 302
    db.refresh_from_db()
    assert db.run_mode == "runway"  # a lead's fields were disabled
    client.force_login(admin_user)
    assert edit(client, db, run_mode="project", project_python=PYTHON).status_code == 302
    db.refresh_from_db()
    assert db.run_mode == "project"


def test_registering_in_the_project_mode_needs_a_lead(
    client: Any, engineer: Any, lead: Any, allowed: str, app_project: Path
) -> None:
    data = {
        "name": "billing",
        "environment": "staging",
        "dsn": "host=db.internal port=5432 dbname=billing user=app",
        "password_ref": f"env:{TARGET_PASSWORD_ENV}",
        "require_auth": "scram-sha-256",
        "script_location": str(app_project / "migrations"),
        "critical_tables": "users",
        "run_mode": "project",
        "project_python": PYTHON,
        "project_url_variable": "DATABASE_URL",
    }
    client.force_login(engineer)
    assert client.post(reverse("database-register"), data).status_code == 302
    assert ManagedDatabase.objects.get(name="billing").run_mode == "runway"
    client.force_login(lead)
    assert (
        client.post(reverse("database-register"), data | {"name": "billing-2"}).status_code == 302
    )
    assert ManagedDatabase.objects.get(name="billing-2").run_mode == "project"
    with pytest.raises(registry.NotAllowed):
        registry.register(
            engineer, ManagedDatabase(name="x", environment="staging", run_mode="project")
        )


def test_the_page_says_how_the_revisions_run(
    client: Any, viewer: Any, allowed: str, app_project: Path
) -> None:
    db = make_database(script_location=str(app_project / "migrations"))
    client.force_login(viewer)
    body = client.get(db.get_absolute_url()).content.decode()
    assert "Runway's environment</strong>: each revision file on its own, never env.py" in body
    assert "lock_timeout 3min, statement_timeout 5min" in body
    ManagedDatabase.objects.filter(pk=db.pk).update(run_mode="project", project_python=PYTHON)
    body = client.get(db.get_absolute_url()).content.decode()
    assert "The project's own env.py</strong>" in body
    assert f"<code>{PYTHON}</code>" in body and f"<code>{app_project.resolve()}</code>" in body
    assert f"<code>{app_project / 'alembic.ini'}</code>" in body
    assert "<code>$DATABASE_URL</code>, never on the command line" in body
    assert "cannot run" not in body


def test_a_project_registered_as_its_alembic_ini_runs_with_that_file_and_section(
    allowed: str, app_project: Path
) -> None:
    ini = app_project / "alembic.ini"
    ini.write_text(ini.read_text() + "\n[billing]\nscript_location = %(here)s/migrations\n")
    db = make_database(
        environment="staging",
        script_location=str(ini),
        run_mode="project",
        project_python=PYTHON,
    )
    command = run_modes.command(db)
    assert (command.config, command.directory, command.section) == (ini, app_project, None)
    db.script_location = f"{ini}#billing"
    command = run_modes.command(db)
    assert command.section == "billing"
    assert command.argv("upgrade", "0017")[3:7] == ["-c", str(ini), "-n", "billing"]
