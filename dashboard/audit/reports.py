"""Audit reports: the events a filter selects, as the page lists them and as CSV, JSON and PDF.

Exports walk the events in chain order (ascending id) through a server-side cursor inside one
transaction, a chunk at a time, and write as they go: memory stays flat however many events
match. (Outside a transaction Django declares the cursor WITH HOLD, which makes PostgreSQL
materialise the whole result before the first row arrives.)

Every export is bounded by the chain head read when it starts, so it describes the trail as of
one event even while new events are appended; the JSON names that head so the file can be held
against the live trail. The JSON carries each event exactly as ``chain.canonical()`` hashes it,
so ``tools/verify_audit_export.py`` (stdlib only) can recompute every hash outside Runway.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.staticfiles import finders
from django.core.exceptions import SuspiciousFileOperation
from django.db import transaction
from django.db.models import QuerySet
from django.template.loader import render_to_string
from django.utils import timezone

from dashboard.audit.chain import GENESIS, canonical, verify, verify_each
from dashboard.audit.models import AuditEvent

CHUNK = 2000  # rows per FETCH from the server-side cursor, and per write to the client
FILTERS = ("actor", "action", "object_type", "object_id", "since", "until")
CSV_HEADER = (
    "id",
    "time",
    "actor_id",
    "actor",
    "action",
    "object_type",
    "object_id",
    "object",
    "details",
    "prev_hash",
    "hash",
)
# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

ALGORITHM: dict[str, Any] = {
    "name": "runway-audit-chain-v1",
    "hash": "sha256, hex",
    "hashed": (
        "each event object without its 'hash' member, serialised as JSON with keys sorted, "
        "separators ',' and ':', non-ASCII characters as themselves (not \\u-escaped), "
        "encoded as UTF-8"
    ),
    "prev": (
        "'prev' is the hash of the event before this one in the whole trail (ascending id); "
        "the first event of the trail has the genesis value"
    ),
    "genesis": GENESIS,
    "links": (
        "events are in ascending id order; where two exported events have consecutive ids the "
        "later one's 'prev' must equal the earlier one's 'hash'. A filtered export leaves out "
        "events, so elsewhere a 'prev' may name an event that is not in the file (a gap); a "
        "complete export has no gaps and starts at the genesis value"
    ),
    "anchor": (
        "meta.chain_head is the newest event of the whole trail when the export started; the "
        "export covers nothing after it. Any later export or Runway itself shows the same hash "
        "for that id while the trail is intact"
    ),
    "verifier": "python tools/verify_audit_export.py FILE.json",
}


def filtered_events(filters: Mapping[str, Any]) -> QuerySet[AuditEvent]:
    """The events matching the audit page's filters (``AuditFilterForm.cleaned_data``), newest
    first. Dates are whole days in the current time zone, inclusive at both ends."""
    events = AuditEvent.objects.all()
    if filters.get("actor"):
        events = events.filter(actor_name=filters["actor"])
    if filters.get("action"):
        events = events.filter(action__startswith=filters["action"])
    if filters.get("object_type"):
        events = events.filter(object_type=filters["object_type"])
    if filters.get("object_id"):
        events = events.filter(object_id=filters["object_id"])
    # A plain range on the column: created_at__date would wrap it in a time-zone cast.
    if filters.get("since"):
        events = events.filter(created_at__gte=_day_start(filters["since"]))
    if filters.get("until") and filters["until"] < date.max:
        events = events.filter(created_at__lt=_day_start(filters["until"] + timedelta(days=1)))
    return events


@dataclass(frozen=True)
class Page:
    """One page of the audit list, newest first. Keyset pagination on id: no COUNT(*), no
    OFFSET, so the hundredth page costs what the first does on a million events."""

    events: list[AuditEvent]
    newer: int | None  # link ?after=<newer> for the page before this one
    older: int | None  # link ?before=<older> for the page after this one

    @property
    def is_first(self) -> bool:
        return self.newer is None


def page_of(
    events: QuerySet[AuditEvent], *, before: int | None = None, after: int | None = None, size: int
) -> Page:
    """The ``size`` events below id ``before``, or above id ``after``, or the newest."""
    if after is not None:
        rows = list(events.filter(id__gt=after).order_by("id")[: size + 1])
        if rows:
            shown = rows[:size][::-1]
            newer = shown[0].pk if len(rows) > size else None
            return Page(shown, newer, shown[-1].pk)
        before = None  # nothing newer: show the newest page
    if before is not None:
        events = events.filter(id__lt=before)
    rows = list(events.order_by("-id")[: size + 1])
    shown = rows[:size]
    older = shown[-1].pk if len(rows) > size else None
    newer = (shown[0].pk if shown else before - 1) if before is not None else None
    return Page(shown, newer, older)


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def is_complete(filters: Mapping[str, Any]) -> bool:
    """Whether these filters select the whole trail (so the export must have no gaps)."""
    return not any(filters.get(name) for name in FILTERS)


def period_label(filters: Mapping[str, Any], today: date) -> str:
    """``2026-01-01_2026-01-31`` for file names; ``start`` when there is no lower bound."""
    since, until = filters.get("since"), filters.get("until")
    return f"{since.isoformat() if since else 'start'}_{(until or today).isoformat()}"


def chain_head() -> tuple[int, str] | None:
    """The newest event's id and hash, or None for an empty trail."""
    return AuditEvent.objects.order_by("-id").values_list("id", "hash").first()


def export_events(filters: Mapping[str, Any], head: tuple[int, str] | None) -> QuerySet[AuditEvent]:
    """The events to export, in chain order, up to ``head`` and no further."""
    events = filtered_events(filters).order_by("id")
    return events.filter(id__lte=head[0]) if head else events.none()


def export_meta(
    filters: Mapping[str, Any], *, generated_by: str, head: tuple[int, str] | None
) -> dict[str, Any]:
    return {
        "title": "Runway audit trail",
        "filters": {name: _plain(filters.get(name)) for name in FILTERS},
        "complete": is_complete(filters),
        "generated_at": timezone.now().astimezone(UTC).isoformat(timespec="seconds"),
        "generated_by": generated_by,
        "time_zone": settings.TIME_ZONE,
        "chain_head": {"id": head[0], "hash": head[1]} if head else None,
        "algorithm": ALGORITHM,
    }


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else (value or None)


def _walk(events: QuerySet[AuditEvent]) -> Iterator[AuditEvent]:
    # Inside a transaction the named cursor is declared WITHOUT HOLD and streams; if the client
    # goes away, closing the generator rolls the transaction back (it wrote nothing).
    with transaction.atomic():
        yield from events.iterator(chunk_size=CHUNK)


def stream_json(events: QuerySet[AuditEvent], *, meta: Mapping[str, Any]) -> Iterator[bytes]:
    """One JSON document, written a chunk at a time:
    ``{"meta": {...}, "events": [{canonical fields..., "hash": ...}, ...], "count": N}``."""
    yield b'{"meta":' + json.dumps(meta, ensure_ascii=False).encode() + b',\n"events":['
    count = 0
    batch: list[bytes] = []
    for event in _walk(events):
        # canonical() is a JSON object: reopen it to add the hash, so the event minus "hash" is
        # byte for byte what was hashed.
        batch.append(b"\n" + canonical(event)[:-1] + b',"hash":' + _quoted(event.hash) + b"}")
        count += 1
        if len(batch) == CHUNK:
            yield (b"," if count > CHUNK else b"") + b",".join(batch)
            batch = []
    if batch:
        yield (b"," if count > len(batch) else b"") + b",".join(batch)
    yield b'\n],\n"count":' + str(count).encode() + b"}\n"


def _quoted(text: str) -> bytes:
    return json.dumps(text).encode()


def stream_csv(events: QuerySet[AuditEvent]) -> Iterator[bytes]:
    """A header, then one row per event (UTF-8). Times are UTC ISO 8601 as in the hash; details
    are JSON. Text that a spreadsheet would run as a formula gets a leading apostrophe: the CSV
    is for reading, the JSON export is the exact, verifiable copy."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for count, event in enumerate(_walk(events), start=1):
        writer.writerow(
            (
                event.pk,
                event.created_at.astimezone(UTC).isoformat(timespec="microseconds"),
                "" if event.actor_id is None else event.actor_id,
                _cell(event.actor_name),
                _cell(event.action),
                _cell(event.object_type),
                _cell(event.object_id),
                _cell(event.object_repr),
                json.dumps(event.details, sort_keys=True, ensure_ascii=False),
                event.prev_hash,
                event.hash,
            )
        )
        if count % CHUNK == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def _cell(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_START) else text


# --- PDF ---


@dataclass(frozen=True)
class ChainCheck:
    ok: bool
    checked: int
    broken_id: int | None = None
    reason: str = ""


def check_chain(listed: list[AuditEvent] | None = None) -> ChainCheck:
    """What a report prints about the chain: ``verify()`` of the whole trail, or, given the
    report's events, each of them checked against its content and the event stored before it
    (a PDF must not spend a minute re-walking a million events)."""
    verdict = verify() if listed is None else verify_each(listed)
    broken = verdict.first_broken
    return ChainCheck(verdict.ok, verdict.checked, broken.pk if broken else None, verdict.reason)


_LABELS = {
    "actor": "actor is",
    "action": "action starts with",
    "object_type": "object type is",
    "object_id": "object id is",
}


def period_report(
    filters: Mapping[str, Any], *, generated_by: str, limit: int | None = None
) -> dict[str, Any]:
    """The PDF's context: at most ``limit`` events (oldest first) and what the first page says."""
    limit = settings.RUNWAY_PDF_MAX_EVENTS if limit is None else limit
    head = chain_head()
    events = export_events(filters, head)
    total = events.count()
    listed = list(events[:limit])
    chain = check_chain(listed)
    return {
        "filters": [(label, filters[name]) for name, label in _LABELS.items() if filters.get(name)],
        "complete": is_complete(filters),
        "since": filters.get("since"),
        "until": filters.get("until"),
        "generated_by": generated_by,
        "generated_at": timezone.now(),
        "time_zone": settings.TIME_ZONE,
        "head": head,
        "total": total,
        "events": listed,
        "truncated": total > limit,
        "limit": limit,
        "chain": chain,
        "counts": {"total": f"{total:,}", "limit": f"{limit:,}", "checked": f"{chain.checked:,}"},
    }


def _static_fetcher() -> Any:
    """WeasyPrint's fetcher for report assets: files under STATIC_URL, through the static
    finders; anything else (other files, the network) is refused. Built on first use: importing
    WeasyPrint takes a second, which no other page should pay."""
    from weasyprint.urls import URLFetcher, URLFetcherResponse

    class StaticOnly(URLFetcher):  # type: ignore[misc]
        def fetch(self, url: str, headers: Any = None) -> URLFetcherResponse:
            path = urlsplit(url).path
            prefix = "/" + settings.STATIC_URL.lstrip("/")
            try:
                found = finders.find(path.removeprefix(prefix)) if path.startswith(prefix) else None
            except SuspiciousFileOperation:  # ../ out of the static folders
                found = None
            if not found or isinstance(found, list):
                raise ValueError(f"report assets come from static files only, not {url}")
            kind = "text/css" if path.endswith(".css") else "application/octet-stream"
            with open(found, "rb") as asset:
                return URLFetcherResponse(url, asset.read(), {"Content-Type": kind})

    return StaticOnly()


def render_pdf(template_name: str, context: Mapping[str, Any]) -> bytes:
    """Render a template to PDF with WeasyPrint; ``{% static %}`` URLs resolve to the static
    files (base URL ``file:///``), nothing else is fetched."""
    from weasyprint import HTML

    html = render_to_string(template_name, dict(context))
    pdf = HTML(string=html, base_url="file:///", url_fetcher=_static_fetcher()).write_pdf()
    assert pdf is not None
    return bytes(pdf)
