import pytest
from django.urls import reverse
from helpers import TARGET_PASSWORD_ENV, make_database

from dashboard.audit.models import AuditEvent
from dashboard.databases.models import ManagedDatabase

ADD = reverse("admin:databases_manageddatabase_add")


def test_an_admin_lists_databases_in_the_admin(client, admin_user):
    make_database()
    client.force_login(admin_user)
    response = client.get(reverse("admin:databases_manageddatabase_changelist"))
    assert response.status_code == 200 and b"analyticbot" in response.content


@pytest.mark.parametrize("who", ["viewer", "engineer", "lead", "outsider"])
def test_only_admins_reach_the_admin(client, request, who):
    client.force_login(request.getfixturevalue(who))
    response = client.get(reverse("admin:databases_manageddatabase_changelist"))
    assert response.status_code == 302 and "login" in response["Location"]


def test_registering_through_the_admin_is_validated_and_audited(client, admin_user):
    client.force_login(admin_user)
    data = {
        "name": "billing",
        "environment": "staging",
        "dsn": "postgresql://app:hunter2@db/app",
        "password_ref": f"env:{TARGET_PASSWORD_ENV}",
        "require_auth": "scram-sha-256",
        "script_location": "migrations_target",
        "critical_tables": "users",
    }
    response = client.post(ADD, data)
    assert b"contains a password" in response.content and b"hunter2" not in response.content
    assert not ManagedDatabase.objects.exists()
    client.post(ADD, data | {"dsn": "host=db dbname=app user=app"})
    db = ManagedDatabase.objects.get(name="billing")
    assert AuditEvent.objects.filter(action="database.registered", object_id=str(db.pk)).exists()


def test_only_the_admin_sets_the_disk_probe(client, admin_user, engineer):
    db = make_database()
    client.force_login(engineer)
    edit = client.get(reverse("database-edit", args=[db.name])).content.decode()
    assert "disk_probe" not in edit  # a command the workers run: not an engineer's field
    client.force_login(admin_user)
    change = reverse("admin:databases_manageddatabase_change", args=[db.pk])
    assert b"disk_probe" in client.get(change).content
    data = {
        "name": db.name,
        "environment": db.environment,
        "dsn": db.dsn,
        "password_ref": db.password_ref,
        "require_auth": db.require_auth,
        "script_location": db.script_location,
        "critical_tables": "users, payments",
        "disk_probe": "ssh db1 df --output=pcent /var/lib/postgresql",
    }
    client.post(change, data)
    db.refresh_from_db()
    assert db.disk_probe == "ssh db1 df --output=pcent /var/lib/postgresql"
