"""The hash chain: canonical form, appending, verification.

Every event's hash is sha256 over a canonical JSON form of its fields and the previous event's
hash, so editing, inserting or removing any event breaks the chain from that point on. Appends
are serialised with a transaction-scoped advisory lock, so two writers never fork the chain, and
they happen in the caller's transaction, so an event exists exactly when its state change does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Protocol

from django.db import connection, transaction
from django.utils import timezone

from dashboard.audit.models import AuditEvent

GENESIS = "0" * 64
# An arbitrary constant: the advisory lock that serialises appends to the chain.
_CHAIN_LOCK = 0x52_55_4E_57_41_59  # "RUNWAY"


class Actor(Protocol):
    pk: Any

    def get_username(self) -> str: ...


_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def canonical(event: AuditEvent) -> bytes:
    body = {
        "id": event.pk,
        "time": event.created_at.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor_id": event.actor_id,
        "actor": event.actor_name,
        "action": event.action,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "object": event.object_repr,
        "details": event.details,
        "prev": event.prev_hash,
    }
    return _dumps(body).encode()


def canonical_details(details: Mapping[str, Any]) -> str:
    """The details as they appear inside ``canonical()``: the text ``details_json`` keeps."""
    return _dumps(details)


def compute_hash(event: AuditEvent) -> str:
    return hashlib.sha256(canonical(event)).hexdigest()


def _normalise(details: Mapping[str, Any]) -> dict[str, Any]:
    """The details as the database will give them back, so the hash covers exactly what is
    stored: through JSON, then through PostgreSQL's jsonb, whose numbers are not Python's
    (1e+20 comes back as 100000000000000000000, -0.0 as 0.0, 1e-07 as 0.0000001). Hashed as
    Python wrote them, such an event failed verification as soon as it was read back."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::jsonb::text", [json.dumps(details, default=str)])
        (stored,) = cursor.fetchone()
    loaded: dict[str, Any] = json.loads(stored)
    return loaded


def record(
    actor: Actor | None,
    action: str,
    obj: Any = None,
    *,
    object_type: str = "",
    details: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """Append one event in the caller's transaction (opening one if there is none)."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK])
            cursor.execute("SELECT nextval(pg_get_serial_sequence('audit_auditevent', 'id'))")
            (next_id,) = cursor.fetchone()
        last = AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first()
        event = AuditEvent(
            id=next_id,
            created_at=timezone.now(),
            actor_id=actor.pk if actor is not None else None,
            actor_name=actor.get_username() if actor is not None else "system",
            action=action,
            object_type=object_type or (obj._meta.model_name if obj is not None else ""),
            object_id=str(obj.pk) if obj is not None else "",
            object_repr=str(obj)[:300] if obj is not None else "",
            details=_normalise(details or {}),
            prev_hash=last or GENESIS,
        )
        event.details_json = canonical_details(event.details)
        event.hash = compute_hash(event)
        event.save(force_insert=True)
        return event


@dataclass(frozen=True)
class Verdict:
    checked: int
    first_broken: AuditEvent | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.first_broken is None


def _edited(event: AuditEvent) -> str:
    """Why ``event``'s own content does not hold (its hash, its details' stored text); ""."""
    if compute_hash(event) != event.hash:
        return "its content does not match its hash (edited)"
    if event.details_json != canonical_details(event.details):
        return "its details' stored text does not match them (edited)"
    return ""


def verify(events: Iterable[AuditEvent] | None = None) -> Verdict:
    """Walk the chain in id order; name the first event whose hash or link does not hold."""
    if events is None:
        events = AuditEvent.objects.order_by("id").iterator(chunk_size=5000)
    prev = GENESIS
    checked = 0
    for event in events:
        if event.prev_hash != prev:
            return Verdict(checked, event, "its previous-hash does not match the event before it")
        if edited := _edited(event):
            return Verdict(checked, event, edited)
        prev = event.hash
        checked += 1
    return Verdict(checked)


def verify_each(events: Iterable[AuditEvent]) -> Verdict:
    """Check each given event on its own: its hash matches its content, and its previous-hash is
    the hash of the event stored just before it. Cheap for a report's few hundred events; the
    whole chain is ``verify()``'s job."""
    from django.db.models import OuterRef, Subquery

    listed = sorted(events, key=lambda e: e.pk)
    before = AuditEvent.objects.filter(id__lt=OuterRef("id")).order_by("-id").values("hash")[:1]
    stored = dict(
        AuditEvent.objects.filter(id__in=[e.pk for e in listed])
        .annotate(before=Subquery(before))
        .values_list("id", "before")
    )
    checked = 0
    for event in listed:
        if event.prev_hash != (stored.get(event.pk) or GENESIS):
            return Verdict(checked, event, "its previous-hash does not match the event before it")
        if edited := _edited(event):
            return Verdict(checked, event, edited)
        checked += 1
    return Verdict(checked)


def as_rows(events: Iterable[AuditEvent]) -> Iterator[dict[str, Any]]:
    for event in events:
        yield json.loads(canonical(event)) | {"hash": event.hash}
