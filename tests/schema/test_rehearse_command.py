"""``manage.py rehearse``: a rehearsal run in the command's own process, on the real cluster."""

from io import StringIO
from typing import Any

import psycopg
import pytest
from django.core.management import CommandError, call_command
from helpers import TARGET_PASSWORD, make_database

from dashboard.schema.models import Rehearsal

pytestmark = pytest.mark.django_db


def rehearse(*args: str) -> str:
    out = StringIO()
    call_command("rehearse", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_it_prints_the_method_and_each_revisions_timing(
    checked_target: Any, owner_may_create_databases: None
) -> None:
    output = rehearse("analyticbot")
    assert "Rehearsing 0017, 0018, 0019, 0020 of analyticbot (0016 → 0020)" in output
    assert "Copy: CREATE DATABASE … TEMPLATE in " in output
    for revision in ("0017", "0018", "0019", "0020"):
        assert f"ok   {revision}" in output
    assert "longest lock wait 0 ms" in output
    done = Rehearsal.objects.get()
    assert f"Rehearsal #{done.pk} succeeded: 4 revision(s) in {done.total_seconds:.3f} s" in output


def test_a_failed_rehearsal_exits_with_its_reason(
    checked_target: Any, owner_may_create_databases: None
) -> None:
    application = psycopg.connect(checked_target.dsn, password=TARGET_PASSWORD)
    with application, pytest.raises(CommandError, match="no validated backup exists") as failed:
        rehearse("analyticbot")
    assert "1 session is connected" in str(failed.value)
    assert Rehearsal.objects.get().state == "failed"


def test_it_names_an_unknown_database() -> None:
    make_database(name="billing")
    with pytest.raises(CommandError, match="No managed database named 'nope'.*billing"):
        rehearse("nope")


def test_it_refuses_when_the_current_revision_is_not_known() -> None:
    make_database()
    with pytest.raises(CommandError, match="not known: test its connection first"):
        rehearse("analyticbot")
    assert not Rehearsal.objects.exists()
