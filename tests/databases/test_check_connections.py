from django.core.management import call_command
from helpers import make_database

from dashboard.databases.models import ConnectionCheck


def test_it_queues_a_check_per_database(db, capsys):
    make_database(name="a")
    make_database(name="b")
    call_command("check_connections")
    assert "Queued 2" in capsys.readouterr().out
    assert ConnectionCheck.objects.filter(state="queued").count() == 2
