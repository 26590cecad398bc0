import psycopg
import pytest
from django.core.management import CommandError, call_command
from helpers import make_database

from dashboard.audit.models import AuditEvent
from devstack.management.commands.seed_target import Command


def seed_target(*args: str) -> None:
    """The command as ``python -m devstack seed_target`` runs it (the product's settings, which
    the tests use, do not list the devstack app)."""
    call_command(Command(), *args)


def test_it_seeds_a_registered_database(make_target, db, pg_cluster, capsys):
    dsn = make_target()
    with psycopg.connect(dsn + f" password={pg_cluster.password} user=postgres") as conn:
        conn.execute("TRUNCATE plans, users RESTART IDENTITY CASCADE")
    make_database(dsn=dsn)
    seed_target("analyticbot", "--users", "50")
    out = capsys.readouterr().out
    assert "users" in out and "Seeded analyticbot" in out
    with psycopg.connect(dsn + f" password={pg_cluster.password} user=postgres") as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (50,)
    assert AuditEvent.objects.get(action="database.seeded").details["rows"]["users"] == 50


def test_it_refuses_a_database_that_already_holds_data(make_target, db):
    make_database(dsn=make_target())
    with pytest.raises(CommandError, match="already"):
        seed_target("analyticbot", "--users", "10")


def test_it_refuses_a_non_positive_count(db):
    make_database()
    with pytest.raises(CommandError, match="positive"):
        seed_target("analyticbot", "--users", "0")


def test_it_names_an_unknown_database(db):
    with pytest.raises(CommandError, match="No managed database named 'nope'"):
        seed_target("nope", "--users", "10")


def test_it_explains_an_unreachable_database(db):
    make_database(dsn="host=127.0.0.1 port=1 dbname=x user=x")
    with pytest.raises(CommandError, match="cannot be reached"):
        seed_target("analyticbot", "--users", "10")
