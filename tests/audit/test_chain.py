import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from dashboard.audit.chain import (
    GENESIS,
    canonical,
    canonical_details,
    compute_hash,
    record,
    verify,
)
from dashboard.audit.models import AuditEvent


def test_events_chain_by_sha256(db, lead):
    first = record(lead, "thing.done", lead, details={"n": 1})
    second = record(lead, "thing.done_again", lead, details={"n": 2})
    assert first.prev_hash == GENESIS
    assert second.prev_hash == first.hash
    assert second.hash == compute_hash(AuditEvent.objects.get(pk=second.pk))
    assert verify().ok and verify().checked == 2


def test_an_event_rolls_back_with_its_state_change(db, lead):
    with pytest.raises(RuntimeError), transaction.atomic():
        record(lead, "doomed", lead)
        raise RuntimeError("the state change failed")
    assert not AuditEvent.objects.filter(action="doomed").exists()
    assert verify().ok


def test_postgresql_rejects_update_and_delete(db, lead):
    event = record(lead, "x", lead)
    for statement in ("UPDATE audit_auditevent SET action = 'y'", "DELETE FROM audit_auditevent"):
        with (
            pytest.raises(Exception, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(statement)
    assert AuditEvent.objects.get(pk=event.pk).action == "x"


def _tamper(sql: str) -> None:
    """What an attacker with the database owner's rights could do: bypass the trigger."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_append_only")
        cursor.execute(sql)
        cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_append_only")


def test_verify_audit_names_an_edited_event(db, lead, capsys):
    events = [record(lead, f"step.{i}", lead, details={"i": i}) for i in range(5)]
    call_command("verify_audit")
    assert "intact: 5 events" in capsys.readouterr().out
    _tamper(f"UPDATE audit_auditevent SET details = '{{\"i\": 99}}' WHERE id = {events[2].pk}")
    with pytest.raises(CommandError, match=rf"broken at event #{events[2].pk} .*edited"):
        call_command("verify_audit")


def test_each_event_keeps_the_canonical_text_of_its_details_the_hash_covers(db, lead):
    details = {"zz": "ünï ✓", "a": {"y": [1, 2.5, None], "x": True}, "big": 1e20, "": ""}
    event = AuditEvent.objects.get(pk=record(lead, "thing.done", lead, details=details).pk)
    assert event.details_json == '{"":"","a":{"x":true,"y":[1,2.5,null]},"big":' \
        '100000000000000000000,"zz":"ünï ✓"}'  # fmt: skip
    assert event.details_json == canonical_details(event.details)
    assert f'"details":{event.details_json},'.encode() in canonical(event)


def test_verify_audit_names_an_event_whose_stored_details_text_was_edited(db, lead):
    """The exports write ``details_json`` as it is: edited there alone (the jsonb untouched),
    the event still fails the check."""
    events = [record(lead, f"step.{i}", lead, details={"i": i}) for i in range(3)]
    _tamper(f"""UPDATE audit_auditevent SET details_json = '{{"i":7}}' WHERE id = {events[1].pk}""")
    verdict = verify()
    assert verdict.first_broken is not None and verdict.first_broken.pk == events[1].pk
    assert verdict.reason == "its details' stored text does not match them (edited)"
    with pytest.raises(CommandError, match=rf"broken at event #{events[1].pk} .*edited"):
        call_command("verify_audit")


def test_verify_audit_names_the_event_after_a_deleted_one(db, lead):
    events = [record(lead, f"step.{i}", lead) for i in range(4)]
    _tamper(f"DELETE FROM audit_auditevent WHERE id = {events[1].pk}")
    verdict = verify()
    assert verdict.first_broken is not None and verdict.first_broken.pk == events[2].pk
    assert "previous-hash" in verdict.reason
    assert verdict.checked == 1


def test_details_with_non_json_values_still_verify(db, lead):
    import datetime
    import decimal

    record(
        lead, "odd", lead, details={"when": datetime.date(2026, 1, 2), "n": decimal.Decimal("1.5")}
    )
    assert verify().ok


def test_numbers_jsonb_rewrites_still_verify(db, lead):
    """jsonb gives back 1e+20 as 100000000000000000000, -0.0 as 0.0, 1e-07 as 0.0000001: the
    hash is of what is stored, so the event verifies when it is read back."""
    event = record(lead, "odd", lead, details={"big": 1e20, "zero": -0.0, "tiny": 1e-7, "n": 2})
    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.details == event.details == {"big": 10**20, "zero": 0.0, "tiny": 1e-7, "n": 2}
    assert compute_hash(stored) == event.hash
    assert verify().ok


def test_concurrent_writers_never_fork_the_chain(transactional_db, pg_cluster, lead):
    """A second connection appending at the same time waits for the lock, then links on."""
    import threading

    from django.db import connections

    errors = []

    def write(n: int) -> None:
        try:
            for i in range(10):
                record(None, f"writer{n}.{i}")
        except Exception as exc:  # pragma: no cover - surfaced by the assert below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert AuditEvent.objects.filter(action__startswith="writer").count() == 30
    assert verify().ok
