"""How data loss is looked for, on a database's form: the snapshot mode per critical table and
the columns the application writes; bad input answered, only a lead on production, audited."""

from __future__ import annotations

import html
from typing import Any

import pytest
from django.urls import reverse
from helpers import make_database

from dashboard.audit.models import AuditEvent
from dashboard.databases import registry
from dashboard.databases.models import ManagedDatabase

pytestmark = pytest.mark.django_db


def form(db: Any, **overrides: str) -> dict[str, str]:
    data = {
        "name": db.name,
        "environment": db.environment,
        "dsn": db.dsn,
        "password_ref": db.password_ref,
        "require_auth": db.require_auth,
        "script_location": db.script_location,
        "critical_tables": ", ".join(db.critical_tables),
        "snapshot_modes": "",
        "application_writes": "",
    }
    return data | overrides


def post(client: Any, db: Any, **overrides: str) -> Any:
    return client.post(reverse("database-edit", args=[db.name]), form(db, **overrides))


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("snapshot_modes", "users", "Not table=mode: users (mode is one of sampled, full, count"),
        ("snapshot_modes", "users=everything", "Not table=mode: users=everything"),
        ("snapshot_modes", "users; drop=full", "Not table=mode: users; drop=full"),
        ("snapshot_modes", "x" * 5000 + "=full", "Not table=mode: " + "x" * 100 + " "),
        ("snapshot_modes", "channels=full", "Not a critical table: channels. Data-loss detec"),
        ("application_writes", "plan_id", "Not a table.column: plan_id (e.g. users.last_seen"),
        ("application_writes", "users.plan_id; --", "Not a table.column: users.plan_id; --"),
        ("application_writes", "users.*", "Not a table.column: users.*"),
        ("application_writes", "channels.title", "Not a critical table: channels. Data-loss"),
    ],
)
def test_bad_input_is_answered_clearly_and_nothing_changes(client, engineer, field, value, message):
    db = make_database(environment="staging")
    client.force_login(engineer)
    response = post(client, db, **{field: value})
    assert response.status_code == 200
    assert message in html.unescape(response.content.decode())
    stored = ManagedDatabase.objects.get(pk=db.pk)
    assert (stored.snapshot_modes, stored.application_writes) == ({}, [])
    assert not AuditEvent.objects.filter(action="database.updated").exists()


def test_the_settings_are_saved_audited_and_shown(client, engineer, viewer):
    db = make_database(environment="staging")
    client.force_login(engineer)
    response = post(
        client,
        db,
        snapshot_modes="payments=full\nusers = count",
        application_writes="users.plan_id, users.is_active, users.plan_id",
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    stored = ManagedDatabase.objects.get(pk=db.pk)
    assert stored.snapshot_modes == {"payments": "full", "users": "count"}
    assert stored.application_writes == ["users.plan_id", "users.is_active"]
    changes = AuditEvent.objects.get(action="database.updated").details["changes"]
    assert changes == {
        "snapshot_modes": [{}, {"payments": "full", "users": "count"}],
        "application_writes": [[], ["users.plan_id", "users.is_active"]],
    }
    client.force_login(viewer)
    page = html.unescape(client.get(db.get_absolute_url()).content.decode())
    assert "<code>users</code> count, <code>payments</code> full" in page
    assert "<code>users.plan_id</code>, <code>users.is_active</code>" in page
    # A form that leaves them out (an older client, a script) keeps them as they are.
    client.force_login(engineer)
    bare = {k: v for k, v in form(stored).items() if k not in registry.DETECTION_FIELDS}
    assert client.post(reverse("database-edit", args=[db.name]), bare).status_code == 302
    again = ManagedDatabase.objects.get(pk=db.pk)
    assert (again.snapshot_modes, again.application_writes) == (
        stored.snapshot_modes,
        stored.application_writes,
    )


@pytest.mark.parametrize(
    "who,allowed", [("viewer", False), ("engineer", False), ("lead", True), ("admin_user", True)]
)
def test_only_a_lead_loosens_detection_on_a_production_database(request, who, allowed):
    db = make_database()  # production
    actor = request.getfixturevalue(who)
    db.snapshot_modes, db.application_writes = {"users": "count"}, ["users.email"]
    if not allowed:
        with pytest.raises(registry.NotAllowed) as caught:
            registry.update(actor, db)
        assert str(caught.value) == (
            "Changing how data loss is detected on analyticbot (snapshot_modes, "
            "application_writes) needs the lead role: on a production database it decides "
            "what a run may lose unnoticed."
        )
        assert ManagedDatabase.objects.get(pk=db.pk).snapshot_modes == {}
        return
    registry.update(actor, db)
    assert AuditEvent.objects.get(action="database.updated").actor_name == actor.username


def test_an_engineer_sees_them_locked_on_production_and_cannot_post_past_them(
    client, engineer, lead
):
    db = make_database()  # production
    client.force_login(engineer)
    page = html.unescape(client.get(reverse("database-edit", args=[db.name])).content.decode())
    assert "it decides what a run may lose unnoticed" in page
    assert post(client, db, snapshot_modes="users=count").status_code == 302
    assert ManagedDatabase.objects.get(pk=db.pk).snapshot_modes == {}
    client.force_login(lead)
    assert post(client, db, snapshot_modes="users=count").status_code == 302
    assert ManagedDatabase.objects.get(pk=db.pk).snapshot_modes == {"users": "count"}
