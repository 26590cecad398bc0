"""audit 0003: events recorded before it get their details' canonical text, and still verify."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from helpers import migrate_to, migrate_to_latest

from dashboard.audit import chain
from dashboard.audit.models import AuditEvent

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def latest_after():
    yield
    migrate_to_latest()


def test_older_events_get_their_details_text_and_the_trail_still_verifies(lead) -> None:
    details = [
        {"n": i, "note": f"event {i}", "nested": {"z": [1, 2.5], "a": None}, "ü": "✓"}
        for i in range(7)
    ]
    for d in details:
        chain.record(lead, "thing.done", lead, details=d)
    migrate_to([("audit", "0002_created_at_index")])
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM audit_auditevent")
        assert cursor.fetchone() == (7,)
        cursor.execute(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_name = 'audit_auditevent' AND column_name = 'details_json'"
        )
        assert cursor.fetchone() == (0,)  # really back before 0003

    migrate_to([("audit", "0003_details_json")])
    events = list(AuditEvent.objects.order_by("id"))
    assert [json.loads(e.details_json) for e in events] == details
    assert all(e.details_json == chain.canonical_details(e.details) for e in events)
    assert chain.verify().ok and chain.verify().checked == 7
    # The append-only trigger is on again.
    with pytest.raises(Exception, match="append-only"), connection.cursor() as cursor:
        cursor.execute("UPDATE audit_auditevent SET details_json = '{}'")
