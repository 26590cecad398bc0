import pytest
from django.urls import reverse
from helpers import TARGET_PASSWORD_ENV, make_database, two_location_project

from dashboard.audit.models import AuditEvent
from dashboard.databases.models import ConnectionCheck, ManagedDatabase

REGISTER = reverse("database-register")


def form_data(**overrides):
    data = {
        "name": "billing",
        "environment": "staging",
        "dsn": "host=db.internal port=5432 dbname=billing user=app",
        "password_ref": f"env:{TARGET_PASSWORD_ENV}",
        "require_auth": "scram-sha-256",
        "script_location": "migrations_target",
        "critical_tables": "users, payments",
    }
    return data | overrides


def test_an_engineer_registers_a_database(client, engineer, django_capture_on_commit_callbacks):
    client.force_login(engineer)
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(REGISTER, form_data())
    db = ManagedDatabase.objects.get(name="billing")
    assert response.status_code == 302 and response["Location"] == db.get_absolute_url()
    assert db.critical_tables == ["users", "payments"]
    assert AuditEvent.objects.filter(action="database.registered", object_id=str(db.pk)).exists()
    assert ConnectionCheck.objects.filter(database=db, state="queued").count() == 1
    assert len(callbacks) == 1  # the connection test is enqueued only once the row is committed


@pytest.mark.parametrize("who,status", [("viewer", 403), ("outsider", 403), ("lead", 200)])
def test_register_needs_the_engineer_role(client, request, who, status):
    client.force_login(request.getfixturevalue(who))
    assert client.get(REGISTER).status_code == status
    response = client.post(REGISTER, form_data())
    assert response.status_code == (302 if status == 200 else 403)
    assert ManagedDatabase.objects.filter(name="billing").exists() == (status == 200)


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("dsn", "host=db port=5432 dbname", "cannot be parsed"),
        ("dsn", "postgresql://app:hunter2@db/app", "contains a password"),
        ("dsn", "host=db user=app password=hunter2 dbname=app", "contains a password"),
        ("dsn", "host=db user=app", "names no database"),
        ("password_ref", "hunter2", "never the password itself"),
        ("password_ref", "env:NOT-A-NAME", "an environment variable&#x27;s name"),
        ("password_ref", "file:relative/path", "absolute path"),
        ("script_location", "/nonexistent/place", "not an Alembic project"),
        ("script_location", "templates", "not an Alembic project"),
        ("critical_tables", "users; drop table x", "Not a table name"),
        ("name", "Has Spaces", "letters, numbers"),
        ("environment", "prod", "Select a valid choice"),
    ],
)
def test_it_explains_bad_input_and_saves_nothing(client, engineer, field, value, message):
    client.force_login(engineer)
    response = client.post(REGISTER, form_data(**{field: value}))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not ManagedDatabase.objects.exists()
    assert not AuditEvent.objects.filter(action="database.registered").exists()


def broken_ini(tmp_path, what):
    """An alembic.ini beside a project (app/migrations, billing/versions), wrong in one way."""
    good = two_location_project(tmp_path)
    bodies = {
        "no section": "[loggers]\nkeys = root\n",
        "no script_location": "[alembic]\nsqlalchemy.url = driver://u:p@h/db\n",
        "package": "[alembic]\nscript_location = runway_no_such_pkg:migrations\n",
        "version location": good.read_text().replace("billing/versions", "billing/versons"),
    }
    if what == "missing":
        good.unlink()
    else:
        good.write_text(bodies[what])
    return good


@pytest.mark.parametrize(
    "what,message",
    [
        ("missing", "is not an Alembic project: the file does not exist"),
        ("no section", "it has no [alembic] section"),
        ("no script_location", "its [alembic] section has no script_location"),
        ("package", "which Runway cannot find (not importable here, and no runway_no_such_pkg/"),
        ("version location", "version location billing/versons (version_locations) does not exist"),
    ],
)
def test_an_alembic_ini_that_is_not_usable_is_explained(client, engineer, tmp_path, what, message):
    ini = broken_ini(tmp_path, what)
    client.force_login(engineer)
    response = client.post(REGISTER, form_data(script_location=str(ini)))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not ManagedDatabase.objects.exists()


def test_an_alembic_ini_registers_and_nothing_in_the_project_runs(client, engineer, tmp_path):
    ini = two_location_project(tmp_path)
    ran = tmp_path / "ran"
    code = f"open({str(ran)!r}, 'w').write(__name__)\n"
    (tmp_path / "app" / "migrations" / "env.py").write_text(code)
    for revision in (tmp_path / "billing" / "versions").glob("*.py"):
        revision.write_text(code + revision.read_text())
    package = tmp_path / "apppkg"  # found beside the ini, as a package resource
    (package / "db").mkdir(parents=True)
    (package / "__init__.py").write_text(code)
    (package / "db" / "__init__.py").write_text(code)
    (tmp_path / "app" / "migrations").rename(package / "db" / "migrations")
    ini.write_text(
        ini.read_text()
        .replace("%(here)s/app/migrations\n", "apppkg.db:migrations\n")
        .replace("%(here)s/app/migrations/versions", "apppkg.db:migrations/versions")
    )
    client.force_login(engineer)
    response = client.post(REGISTER, form_data(script_location=f"{ini}"))
    assert response.status_code == 302, response.content.decode()
    assert not ran.exists()
    db = ManagedDatabase.objects.get(name="billing")
    body = client.get(reverse("schema-history", args=[db.name])).content.decode()
    assert 'data-rev="b200"' in body and 'data-rev="3c2e"' in body
    assert "apppkg/db/migrations/versions/" in body


def test_the_script_location_says_it_takes_an_alembic_ini(client, engineer):
    client.force_login(engineer)
    body = client.get(REGISTER).content.decode()
    assert "or the project&#x27;s alembic.ini (alembic.ini#name for another section)" in body


def test_the_form_never_echoes_a_password_back(client, engineer):
    client.force_login(engineer)
    response = client.post(REGISTER, form_data(dsn="postgresql://app:hunter2@db/app"))
    assert "hunter2" not in response.content.decode()


def test_a_duplicate_name_is_refused(client, engineer):
    make_database(name="billing")
    client.force_login(engineer)
    response = client.post(REGISTER, form_data())
    assert "already exists" in response.content.decode()


def test_an_engineer_edits_a_database_and_the_change_is_audited(client, engineer):
    db = make_database()
    client.force_login(engineer)
    response = client.post(
        reverse("database-edit", args=[db.name]),
        form_data(name=db.name, environment="production", critical_tables="users"),
    )
    assert response.status_code == 302
    db.refresh_from_db()
    assert db.critical_tables == ["users"]
    event = AuditEvent.objects.get(action="database.updated")
    assert event.details["changes"]["critical_tables"] == [["users", "payments"], ["users"]]


def test_a_viewer_cannot_edit(client, viewer):
    db = make_database()
    client.force_login(viewer)
    assert client.get(reverse("database-edit", args=[db.name])).status_code == 403
    assert client.post(reverse("database-edit", args=[db.name]), form_data()).status_code == 403


def test_the_detail_page_shows_settings_to_a_viewer(client, viewer):
    db = make_database()
    client.force_login(viewer)
    body = client.get(db.get_absolute_url()).content.decode()
    assert db.dsn in body and f"env:{TARGET_PASSWORD_ENV}" in body
    assert "Test connection" not in body  # a viewer cannot start one


def test_an_unknown_database_is_404(client, viewer):
    client.force_login(viewer)
    assert client.get(reverse("database-detail", args=["nope"])).status_code == 404


def test_test_connection_rejects_get(client, engineer):
    db = make_database()
    client.force_login(engineer)
    assert client.get(reverse("database-test", args=[db.name])).status_code == 405


def test_a_viewer_cannot_test_a_connection(client, viewer):
    db = make_database()
    client.force_login(viewer)
    assert client.post(reverse("database-test", args=[db.name])).status_code == 403
    assert not ConnectionCheck.objects.exists()


def test_test_connection_answers_htmx_with_a_polling_fragment(client, engineer):
    db = make_database()
    client.force_login(engineer)
    response = client.post(reverse("database-test", args=[db.name]), headers={"HX-Request": "true"})
    body = response.content.decode()
    check = ConnectionCheck.objects.get()
    assert 'hx-trigger="every 1s"' in body and f"/checks/{check.pk}/" in body
    assert "<html" not in body


def test_a_check_of_another_database_is_not_reachable_through_this_one(client, viewer):
    a, b = make_database(name="a"), make_database(name="b")
    check = ConnectionCheck.objects.create(database=b)
    client.force_login(viewer)
    assert client.get(reverse("database-check", args=[a.name, check.pk])).status_code == 404


def test_a_finished_check_stops_the_polling(client, viewer):
    db = make_database()
    check = ConnectionCheck.objects.create(database=db, state="succeeded", message="Connected.")
    client.force_login(viewer)
    response = client.get(
        reverse("database-check", args=[db.name, check.pk]), headers={"HX-Request": "true"}
    )
    assert response.status_code == 286
