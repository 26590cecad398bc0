import json

import pytest
from django.core.management import CommandError, call_command
from helpers import make_database, write_revision


def test_it_prints_json_read_from_the_live_database(make_target, db, capsys):
    make_database(dsn=make_target())
    call_command("history", "analyticbot", "--format", "json")
    data = json.loads(capsys.readouterr().out)
    assert data["current"] == ["0016"]
    assert data["pending"] == ["0017", "0018", "0019", "0020"]
    assert data["heads"] == ["0020"]
    assert data["drift"] == [] and data["problems"] == []


def test_text_output_marks_current_and_pending(make_target, db, capsys):
    make_database(dsn=make_target())
    call_command("history", "analyticbot")
    out = capsys.readouterr().out
    assert "current 0016" in out and "pending: 0017, 0018, 0019, 0020" in out


def test_offline_needs_no_connection(db, capsys, tmp_path):
    write_revision(tmp_path, "a1", None)
    write_revision(tmp_path, "b1", "a1")
    make_database(script_location=str(tmp_path), dsn="host=127.0.0.1 port=1 dbname=x user=x")
    call_command("history", "analyticbot", "--offline", "--format", "json")
    assert json.loads(capsys.readouterr().out)["pending"] == ["a1", "b1"]


def test_an_unknown_database_is_named(db):
    make_database(name="real")
    with pytest.raises(CommandError, match="No managed database named 'nope' .*real"):
        call_command("history", "nope")


def test_an_unreachable_database_is_explained(db):
    make_database(dsn="host=127.0.0.1 port=1 dbname=x user=x")
    with pytest.raises(CommandError, match="cannot be reached"):
        call_command("history", "analyticbot")
