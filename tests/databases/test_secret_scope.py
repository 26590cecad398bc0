"""Nobody can send a secret to a server of their choosing.

Each test points a managed database at a fake PostgreSQL server that asks for the password in
clear text and records what it receives, the way an attacker holding an engineer's account
would, and then lets the real worker (or the code it runs) connect. Nothing may reach it.
"""

from __future__ import annotations

import os

import pytest
from django.urls import reverse
from helpers import (
    BACKUP_PASSPHRASE,
    TARGET_PASSWORD,
    TARGET_PASSWORD_ENV,
    fake_postgres,
    make_database,
    wait_until,
)

from dashboard.audit.models import AuditEvent
from dashboard.databases import checks, credentials, registry
from dashboard.databases.models import ConnectionCheck, ManagedDatabase
from dashboard.jobs import lifecycle as jobs
from dashboard.lib import pg
from dashboard.lib.secrets import Password, SecretError

pytestmark = pytest.mark.django_db(transaction=True)


def run_check(db, actor=None):
    check = checks.request_check(actor, db)
    wait_until(lambda: ConnectionCheck.objects.get(pk=check.pk).is_done, "the worker's check")
    return ConnectionCheck.objects.get(pk=check.pk)


@pytest.fixture
def fake():
    with fake_postgres() as server:
        yield server


# --- References that leave the scope, checked by the worker itself ---


@pytest.mark.parametrize("name", ["RUNWAY_SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL"])
def test_an_env_reference_to_runways_own_setting_never_resolves(celery_worker, fake, name):
    db = make_database(dsn=fake.dsn, password_ref=f"env:{name}")
    check = run_check(db)
    assert (check.outcome, check.problem) == ("failed", "secret")
    assert "Runway's own settings" in check.message
    assert fake.startups == [] and not fake.received_anything_secret


def test_runways_own_setting_is_refused_even_when_the_prefix_would_allow_it(settings, fake):
    settings.RUNWAY_SECRET_ENV_PREFIX = "RUNWAY_"
    os.environ.setdefault("RUNWAY_BACKUP_PASSPHRASE", BACKUP_PASSPHRASE)
    for name in ("RUNWAY_SECRET_KEY", "RUNWAY_BACKUP_PASSPHRASE", "RUNWAY_SECRET_KEY_FILE"):
        db = make_database(
            name=name.lower().replace("_", "-"), dsn=fake.dsn, password_ref=f"env:{name}"
        )
        with pytest.raises(SecretError, match="Runway's own settings"):
            credentials.password(db)
    assert fake.startups == []


def test_a_file_outside_the_secrets_directory_never_resolves(
    celery_worker, fake, backup_passphrase_file
):
    db = make_database(dsn=fake.dsn, password_ref=f"file:{backup_passphrase_file}")
    check = run_check(db)
    assert (check.outcome, check.problem) == ("failed", "secret")
    assert "inside the secrets directory" in check.message
    assert BACKUP_PASSPHRASE not in check.message
    assert fake.startups == [] and not fake.received_anything_secret


def test_a_symlink_escaping_the_secrets_directory_never_resolves(
    celery_worker, fake, db_secrets, backup_passphrase_file
):
    link = db_secrets / "looks-innocent"
    link.unlink(missing_ok=True)
    link.symlink_to(backup_passphrase_file)
    db = make_database(dsn=fake.dsn, password_ref=f"file:{link}")
    check = run_check(db)
    assert (check.outcome, check.problem) == ("failed", "secret")
    assert "symbolic link" in check.message
    assert fake.startups == [] and not fake.received_anything_secret


def test_dot_dot_out_of_the_secrets_directory_never_resolves(
    celery_worker, fake, db_secrets, backup_passphrase_file
):
    escape = f"{db_secrets}/../{backup_passphrase_file.parent.name}/{backup_passphrase_file.name}"
    db = make_database(dsn=fake.dsn, password_ref=f"file:{escape}")
    check = run_check(db)
    assert (check.outcome, check.problem) == ("failed", "secret")
    assert fake.startups == [] and not fake.received_anything_secret


def test_a_copy_of_runways_own_secret_inside_the_directory_never_resolves(
    celery_worker, fake, db_secrets
):
    copy = db_secrets / "copied-passphrase"
    copy.write_text(BACKUP_PASSPHRASE + "\n")
    db = make_database(dsn=fake.dsn, password_ref=f"file:{copy}")
    check = run_check(db)
    assert (check.outcome, check.problem) == ("failed", "secret")
    assert "one of Runway's own secrets" in check.message
    assert fake.startups == [] and not fake.received_anything_secret


# --- A secret goes only where it was bound ---


def test_a_server_asking_for_a_cleartext_password_gets_nothing(celery_worker, fake):
    db = make_database(dsn=fake.dsn)  # a bound, in-scope reference: the real password
    assert db.secret_is_bound
    check = run_check(db)
    assert (check.outcome, check.problem) == ("failed", "auth_method")
    assert "clear text is never allowed" in check.message
    assert len(fake.startups) >= 1  # it did connect, and refused at the password request
    assert fake.passwords == [] or not any(TARGET_PASSWORD.encode() in p for p in fake.passwords)
    assert not fake.received_anything_secret


def test_md5_allowed_still_refuses_cleartext(fake):
    db = make_database(dsn=fake.dsn, require_auth="scram-sha-256,md5")
    with pytest.raises(pg.psycopg.OperationalError, match="cleartext"):
        pg.connect(db.dsn, credentials.password(db), timeout=3)
    assert not fake.received_anything_secret


def test_the_periodic_checks_send_nothing_either(celery_worker, fake):
    make_database(dsn=fake.dsn)
    made = checks.request_all()
    for check in made:
        wait_until(lambda c=check: ConnectionCheck.objects.get(pk=c.pk).is_done, "the check")
    assert not fake.received_anything_secret


@pytest.mark.parametrize("tool", ["pg_dump", "psql"])
def test_the_client_tools_refuse_a_cleartext_request_too(fake, tool):
    password = Password(TARGET_PASSWORD)
    with pytest.raises(pg.ToolFailed, match="cleartext") as failed:
        if tool == "psql":
            pg.psql(fake.dsn, password, "SELECT 1")
        else:
            proc = pg.pg_dump(fake.dsn, password, snapshot=None, stdout=-1, stderr=-1)
            out, err = proc.communicate(timeout=30)
            raise pg.explain_tool("pg_dump", proc.returncode, err.decode())
    assert not failed.value.transient  # a refusal is not retried
    assert fake.startups and not fake.received_anything_secret


def test_alembics_connection_refuses_a_cleartext_request_too(fake):
    import sqlalchemy

    engine = sqlalchemy.create_engine(pg.sqlalchemy_url(fake.dsn, Password(TARGET_PASSWORD)))
    with pytest.raises(sqlalchemy.exc.OperationalError, match="cleartext"):
        engine.connect()
    engine.dispose()
    assert fake.startups and not fake.received_anything_secret


def test_an_engineer_cannot_point_a_production_database_elsewhere(client, engineer, fake):
    db = make_database(dsn="host=127.0.0.1 port=5432 dbname=analyticbot user=app_owner")
    client.force_login(engineer)
    page = client.get(reverse("database-edit", args=[db.name])).content.decode()
    assert "Only a admin may change this" in page or "Only an admin" in page
    data = {
        "name": db.name,
        "environment": "production",
        "dsn": fake.dsn,
        "password_ref": db.password_ref,
        "require_auth": "scram-sha-256",
        "script_location": db.script_location,
        "critical_tables": "users",
    }
    client.post(reverse("database-edit", args=[db.name]), data)
    db.refresh_from_db()
    assert db.dsn != fake.dsn and db.critical_tables == ["users"] and db.secret_is_bound
    db.dsn = fake.dsn
    with pytest.raises(registry.NotAllowed, match="needs the admin role"):
        registry.update(engineer, db)


def test_a_dsn_changed_behind_runways_back_is_not_sent_the_password(celery_worker, fake):
    db = make_database(dsn="host=127.0.0.1 port=5432 dbname=analyticbot user=app_owner")
    ManagedDatabase.objects.filter(pk=db.pk).update(dsn=fake.dsn)
    db.refresh_from_db()
    check = run_check(db)
    assert (check.outcome, check.problem) == ("failed", "secret")
    assert "until a lead confirms" in check.message
    assert fake.startups == []


def test_a_lead_moves_a_staging_database_and_confirms_the_binding(client, lead, make_target):
    db = make_database(environment="staging", dsn="host=127.0.0.1 port=1 dbname=x user=app_owner")
    client.force_login(lead)
    data = {
        "name": db.name,
        "environment": "staging",
        "dsn": make_target(),
        "password_ref": db.password_ref,
        "require_auth": "scram-sha-256",
        "script_location": db.script_location,
        "critical_tables": "users",
    }
    response = client.post(reverse("database-edit", args=[db.name]), data, follow=True)
    db.refresh_from_db()
    assert not db.secret_is_bound and "will not be sent until a lead" in response.content.decode()
    updated = AuditEvent.objects.get(action="database.updated")
    assert updated.details["changes"]["dsn"][1] == data["dsn"]
    assert ":1/x" in updated.details["secret_unbound"] and TARGET_PASSWORD not in str(
        updated.details
    )
    with pytest.raises(SecretError, match="until a lead confirms"):
        credentials.password(db)
    response = client.post(reverse("database-confirm-secret", args=[db.name]))
    db.refresh_from_db()
    assert db.secret_is_bound and db.secret_bound_by == lead
    assert credentials.password(db) == TARGET_PASSWORD
    confirmed = AuditEvent.objects.get(action="database.secret_confirmed")
    assert confirmed.details["bound_to"].endswith(db.target)


def test_an_engineer_cannot_reuse_another_servers_reference(
    celery_worker, client, engineer, lead, fake
):
    make_database(name="prod", dsn="host=127.0.0.1 port=5432 dbname=analyticbot user=app_owner")
    client.force_login(engineer)
    data = {
        "name": "mine",
        "environment": "development",
        "dsn": fake.dsn,
        "password_ref": f"env:{TARGET_PASSWORD_ENV}",
        "require_auth": "scram-sha-256",
        "script_location": "migrations_target",
        "critical_tables": "",
    }
    response = client.post(reverse("database-register"), data, follow=True)
    mine = ManagedDatabase.objects.get(name="mine")
    assert not mine.secret_is_bound
    assert "will not be sent until a lead confirms" in response.content.decode()
    check = ConnectionCheck.objects.get(database=mine)
    wait_until(lambda: ConnectionCheck.objects.get(pk=check.pk).is_done, "the worker's check")
    assert ConnectionCheck.objects.get(pk=check.pk).problem == "secret"
    with pytest.raises(registry.NotAllowed, match="needs the admin role"):
        registry.confirm_secret(lead, mine)  # the reference belongs to a production database
    assert fake.startups == []


# --- Hosts managed databases may live on ---


def test_a_host_outside_the_allow_list_is_refused_before_connecting(settings, client, engineer):
    settings.RUNWAY_ALLOWED_DB_HOSTS = ["10.0.0.0/8", "*.db.internal"]
    with fake_postgres() as server:
        client.force_login(engineer)
        data = {
            "name": "elsewhere",
            "environment": "staging",
            "dsn": server.dsn,
            "password_ref": "",
            "require_auth": "scram-sha-256",
            "script_location": "migrations_target",
            "critical_tables": "",
        }
        page = client.post(reverse("database-register"), data).content.decode()
        assert "not allowed by RUNWAY_ALLOWED_DB_HOSTS" in page
        assert not ManagedDatabase.objects.filter(name="elsewhere").exists()
        db = make_database(dsn=server.dsn)  # saved behind the form's back
        check = ConnectionCheck.objects.create(database=db)
        jobs.run("connection_check", check.pk)
        check.refresh_from_db()
        assert check.problem == "secret" and "RUNWAY_ALLOWED_DB_HOSTS" in check.message
        assert server.startups == []


@pytest.mark.parametrize(
    "dsn,allowed,refused",
    [
        ("host=10.1.2.3 dbname=a", ["10.0.0.0/8"], False),
        ("host=10.1.2.3 dbname=a", ["192.168.0.0/16"], True),
        ("host=pg1.db.internal hostaddr=10.0.0.5 dbname=a", ["10.0.0.0/8"], False),
        ("host=pg1.db.internal hostaddr=8.8.8.8 dbname=a", ["*.db.internal"], True),
        ("host=pg1.db.internal dbname=a", ["*.db.internal"], False),
        ("host=localhost dbname=a", ["127.0.0.0/8", "::1/128"], False),
        ("host=localhost dbname=a", ["10.0.0.0/8"], True),
        ("host=/var/run/postgresql dbname=a", ["10.0.0.0/8"], True),
        ("host=10.0.0.1,evil.example dbname=a", ["10.0.0.0/8"], True),
        ("host=anything dbname=a", [], False),
    ],
)
def test_the_allow_list_checks_every_host_and_address(dsn, allowed, refused):
    assert bool(pg.host_refusal(dsn, allowed)) == refused


# --- Nothing typed as a secret is echoed back ---


@pytest.mark.parametrize(
    "field,value",
    [
        ("dsn", "postgresql://app:hunter2@db/app"),
        ("dsn", "postgresql://app@db/app?password=hunter2"),
        ("dsn", "host=db PASSWORD=hunter2 dbname=app"),
        ("dsn", "host=db Password = 'hunter2' dbname=app"),
        ("dsn", "host=db password='hunter2 dbname=app"),
        ("dsn", "host=db hunter2 dbname=app"),
        ("dsn", "host=db dbname=app user=app passfile=/tmp/hunter2"),
        ("password_ref", "hunter2"),
        ("password_ref", "env:hunter2"),
        ("password_ref", "file:hunter2"),
        ("password_ref", "file:/etc/hunter2"),
    ],
)
def test_nothing_typed_as_a_secret_is_echoed(client, engineer, caplog, field, value):
    client.force_login(engineer)
    data = {
        "name": "billing",
        "environment": "staging",
        "dsn": "host=db.internal dbname=billing user=app",
        "password_ref": f"env:{TARGET_PASSWORD_ENV}",
        "require_auth": "scram-sha-256",
        "script_location": "migrations_target",
        "critical_tables": "",
        field: value,
    }
    response = client.post(reverse("database-register"), data)
    body = response.content.decode()
    assert response.status_code == 200 and "errorlist" in body
    assert "hunter2" not in body
    assert "hunter2" not in caplog.text
    assert not ManagedDatabase.objects.exists()


@pytest.mark.parametrize(
    "dsn,shown",
    [
        ("postgresql://app:hunter2@db/app", "postgresql://app@db/app"),
        ("POSTGRESQL://app:hunter2@db/app", "POSTGRESQL://app@db/app"),
        (
            "postgresql://db/app?sslmode=require&password=hunter2",
            "postgresql://db/app?sslmode=require&password=***",
        ),
        ("host=db PASSWORD=hunter2 dbname=app", "host=db dbname=app"),
        ("host=db password = 'hunt er2' dbname=app", "host=db dbname=app"),
        ("host=db password='hunter2", "host=db"),
    ],
)
def test_redact_removes_the_password_in_every_libpq_form(dsn, shown):
    assert pg.redact(dsn) == shown
