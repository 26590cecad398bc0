"""Audit reports: the events a filter selects, as the page lists them and as CSV, JSON and PDF.

Exports walk the events in chain order (ascending id) through a server-side cursor inside one
transaction, a chunk at a time, and write as they go: memory stays flat however many events
match. (Outside a transaction Django declares the cursor WITH HOLD, which makes PostgreSQL
materialise the whole result before the first row arrives.)

Every export is bounded by the chain head read when it starts, so it describes the trail as of
one event even while new events are appended; the JSON names that head so the file can be held
against the live trail. The JSON carries each event exactly as ``chain.canonical()`` hashes it,
so ``tools/verify_audit_export.py`` (stdlib only) can recompute every hash outside Runway.

The audit page's exports of the trail are written by PostgreSQL (``csv_export``,
``json_export``: COPY, several times faster on a million events); ``stream_csv`` and
``stream_json`` here write a run report's events and are the reference those are tested against.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from django.conf import settings
from django.contrib.staticfiles import finders
from django.core.exceptions import SuspiciousFileOperation
from django.db import transaction
from django.db.models import CharField, F, Func, Q, QuerySet, TextField, Value
from django.db.models.functions import Cast
from django.template.loader import render_to_string
from django.utils import timezone

from dashboard.audit import actions, links
from dashboard.audit.chain import GENESIS, canonical_details, verify, verify_each
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
    if action := filters.get("action"):
        if actions.is_family(action):  # "run.": run and run.*, not runbook.*
            events = events.filter(Q(action__startswith=action) | Q(action=action[:-1]))
        else:
            events = events.filter(action=action)
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


# The page's Details cell: the first lines of ``detail_lines()``, each cut short; the whole
# details as JSON behind a disclosure when anything was left out.
CELL_LINES = 6
CELL_CHARS = 120


@dataclass(frozen=True)
class Row:
    """One event as the audit page lists it."""

    event: AuditEvent
    url: str | None  # the object's page, when it has one and still exists
    details: list[tuple[str, str]]  # (label, value), the label empty for a plain value
    more: int  # lines of details not shown
    cut: bool  # something was left out or shortened: the full JSON is offered
    full: str  # the details as indented JSON


def rows(events: list[AuditEvent]) -> list[Row]:
    """The page's rows: each event with its object's link (one query per object type, see
    ``links``) and its details as short ``label: value`` lines."""
    urls = links.links(events)
    return [_row(event, urls.get((event.object_type, event.object_id))) for event in events]


def _row(event: AuditEvent, url: str | None) -> Row:
    lines = detail_lines(event.details, value_chars=CELL_CHARS)
    whole = detail_lines(event.details, value_chars=10**9)
    # One line more rather than a disclosure that would hide a single line.
    shown = lines if len(lines) <= CELL_LINES + 1 else lines[:CELL_LINES]
    pairs = []
    for line in shown:
        label, colon, value = line.partition(": ")
        pairs.append((label, value) if colon and isinstance(event.details, Mapping) else ("", line))
    more = len(lines) - len(shown)
    cut = more > 0 or lines != whole
    full = json.dumps(event.details, indent=2, ensure_ascii=False) if cut else ""
    return Row(event, url, pairs, more, cut, full)


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


# The exports read plain tuples, not model instances (building them took a third of the time),
# with the time already written by PostgreSQL in UTC ISO 8601 and the details as their JSON text:
# no converter runs per row (Django's time-zone-aware timestamp loader and the JSON field's
# decoder were most of the rest). Each event is then written with prepared encoders (json.dumps
# with options builds a new encoder per call).
_UTC_ISO = 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'  # datetime.isoformat(timespec="microseconds")
_EXPORT_FIELDS = (
    "id",
    "export_time",
    "actor_id",
    "actor_name",
    "action",
    "object_type",
    "object_id",
    "object_repr",
    "export_details",
    "prev_hash",
    "hash",
)
_details_json = json.JSONEncoder(sort_keys=True, ensure_ascii=False).encode
_string_json = json.JSONEncoder(ensure_ascii=False).encode
_load_json = json.JSONDecoder().decode


def _walk(events: QuerySet[AuditEvent]) -> Iterator[tuple[Any, ...]]:
    """The events as tuples of ``_EXPORT_FIELDS`` (time: text, UTC; details: JSON text), in the
    queryset's order.

    Inside a transaction the named cursor is declared WITHOUT HOLD and streams; if the client
    goes away, closing the generator rolls the transaction back (it wrote nothing)."""
    utc = Func(Value("UTC"), F("created_at"), function="timezone")
    rows = events.annotate(
        export_time=Func(utc, Value(_UTC_ISO), function="to_char", output_field=CharField()),
        export_details=Cast("details", TextField()),
    ).values_list(*_EXPORT_FIELDS)
    with transaction.atomic():
        yield from rows.iterator(chunk_size=CHUNK)


def canonical_row(row: tuple[Any, ...]) -> str:
    """``chain.canonical()`` of the event in ``row`` (``_EXPORT_FIELDS``), as text: the same
    object, its keys written in their sorted order (action, actor, actor_id, details, id,
    object, object_id, object_type, prev, time) by the same encoder."""
    pk, utc, actor_id, actor, action, otype, oid, orepr, details, prev, _ = row
    s = _string_json
    return (
        f'{{"action":{s(action)},"actor":{s(actor)},'
        f'"actor_id":{"null" if actor_id is None else int(actor_id)},'
        f'"details":{canonical_details(_load_json(details))},"id":{int(pk)},"object":{s(orepr)},'
        f'"object_id":{s(oid)},"object_type":{s(otype)},"prev":{s(prev)},"time":"{utc}"}}'
    )


def stream_json(events: QuerySet[AuditEvent], *, meta: Mapping[str, Any]) -> Iterator[bytes]:
    """One JSON document, written a chunk at a time:
    ``{"meta": {...}, "events": [{canonical fields..., "hash": ...}, ...], "count": N}``."""
    yield b'{"meta":' + json.dumps(meta, ensure_ascii=False).encode() + b',\n"events":['
    count = 0
    batch: list[str] = []
    for row in _walk(events):
        # The canonical object reopened to add the hash, so the event minus "hash" is byte for
        # byte what was hashed.
        batch.append(f'\n{canonical_row(row)[:-1]},"hash":{_string_json(row[10])}}}')
        count += 1
        if len(batch) == CHUNK:
            yield (("," if count > CHUNK else "") + ",".join(batch)).encode()
            batch = []
    if batch:
        yield (("," if count > len(batch) else "") + ",".join(batch)).encode()
    yield b'\n],\n"count":' + str(count).encode() + b"}\n"


def stream_csv(events: QuerySet[AuditEvent]) -> Iterator[bytes]:
    """A header, then one row per event (UTF-8). Times are UTC ISO 8601 as in the hash; details
    are JSON. Text that a spreadsheet would run as a formula gets a leading apostrophe: the CSV
    is for reading, the JSON export is the exact, verifiable copy."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    batch: list[tuple[Any, ...]] = []
    formula = _FORMULA_START
    for pk, utc, actor_id, actor, action, otype, oid, orepr, details, prev, digest in _walk(events):
        batch.append(
            (
                pk,
                utc,
                "" if actor_id is None else actor_id,
                "'" + actor if actor.startswith(formula) else actor,
                "'" + action if action.startswith(formula) else action,
                "'" + otype if otype.startswith(formula) else otype,
                "'" + oid if oid.startswith(formula) else oid,
                "'" + orepr if orepr.startswith(formula) else orepr,
                _details_json(_load_json(details)),
                prev,
                digest,
            )
        )
        if len(batch) == CHUNK:
            writer.writerows(batch)
            batch = []
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    writer.writerows(batch)
    yield buffer.getvalue().encode()


def safe_cell(text: str) -> str:
    """``text`` for a CSV cell: a leading apostrophe if a spreadsheet would run it as a formula."""
    return "'" + text if text.startswith(_FORMULA_START) else text


# --- PDF ---

# The PDFs list events as fixed-width text, one <pre> block per page of events (``listing``), in
# columns of DejaVu Sans Mono on a landscape page. WeasyPrint lays out a table cell by cell (about
# 10,000 line boxes for 1,000 events, most of a 15 s render); a block of pre-wrapped lines costs
# a line box a line.
# The wrapping is done here, at spaces, and a word too long for its column is cut after a
# separator ('/', '.', '_', '-', ':', ',') where it has one: no "engine/er" splits.
LISTING_COLUMNS: tuple[tuple[str, int], ...] = (
    ("#", 7),
    ("When (UTC)", 19),
    ("Who", 14),
    ("Action", 26),
    ("Object", 30),
    ("Details", 68),
    ("Hash", 12),
)
_GAP = "  "
_SEPARATORS = "/._-:,"
DETAIL_LINES = 12  # label: value pairs at most per event; the exports hold the rest
DETAIL_CELL_LINES = 16  # and lines of them, long values wrapped: an event fits in a page
PAIR_SEPARATOR = " · "  # between two label: value pairs on one line of the details column


def detail_lines(details: Any, *, value_chars: int = 400) -> list[str]:
    """An event's details as ``label: value`` lines: keys with spaces for underscores, nested
    objects as ``parent child: value``, lists of plain values joined by commas, lists of objects
    as ``key value, key value; ...``; each value cut at ``value_chars`` characters."""
    lines: list[str] = []

    def plain(value: Any) -> str:
        if value is None:
            return "none"
        if value == "":
            return "—"
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, Mapping):
            return ", ".join(f"{_label(k)} {plain(v)}" for k, v in value.items()) or "none"
        if isinstance(value, list | tuple):
            joiner = "; " if any(isinstance(v, Mapping | list | tuple) for v in value) else ", "
            return joiner.join(plain(v) for v in value) or "none"
        return str(value)

    def walk(value: Any, label: str) -> None:
        if isinstance(value, Mapping) and value:
            for key, inner in value.items():
                walk(inner, f"{label} {_label(key)}" if label else _label(key))
            return
        text = plain(value)
        if len(text) > value_chars:
            text = text[: value_chars - 1] + "…"
        lines.append(f"{label}: {text}" if label else text)

    if details not in (None, {}, [], ""):
        walk(details, "")
    return lines


def _label(key: Any) -> str:
    return str(key).replace("_", " ")


def wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` characters, broken at spaces; a longer word is
    cut after the last separator that fits, or at the width when it has none."""
    out: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split(" "):
            while len(word) > width:
                if line:
                    out.append(line)
                    line = ""
                cut = max(word.rfind(c, 0, width) for c in _SEPARATORS) + 1
                cut = cut if cut > width // 3 else width
                out.append(word[:cut])
                word = word[cut:]
            if not line:
                line = word
            elif len(line) + 1 + len(word) <= width:
                line += " " + word
            else:
                out.append(line)
                line = word
        out.append(line)
    return out


def listing_header() -> str:
    return _GAP.join(
        title.rjust(width) if index == 0 else title.ljust(width)
        for index, (title, width) in enumerate(LISTING_COLUMNS)
    ).rstrip()


def listing_block(event: AuditEvent, *, value_chars: int = 400) -> str:
    """One event as lines of text in the listing's columns."""
    details = detail_lines(event.details, value_chars=value_chars)
    if len(details) > DETAIL_LINES:
        more = len(details) - DETAIL_LINES + 1
        details = details[: DETAIL_LINES - 1] + [f"(and {more} more in the CSV and JSON)"]
    obj = event.object_type + (f": {event.object_repr}" if event.object_repr else "")
    widths = [width for _, width in LISTING_COLUMNS]
    cells = [
        [str(event.pk).rjust(widths[0])],
        [event.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")],
        wrap(event.actor_name, widths[2]),
        wrap(event.action, widths[3]),
        wrap(obj, widths[4]),
        _details_cell(details, widths[5]),
        [event.hash[:12]],
    ]
    height = max(len(cell) for cell in cells)
    return "\n".join(
        _GAP.join(
            (cell[row] if row < len(cell) else "").ljust(width)
            for cell, width in zip(cells, widths, strict=True)
        ).rstrip()
        for row in range(height)
    )


@dataclass(frozen=True)
class Group:
    """Events printed as one <pre>, a page at most: their lines, and the rules between them as
    an SVG background (``rules_url``)."""

    text: str
    rules_url: str


@dataclass(frozen=True)
class Listing:
    header: str
    groups: list[Group]


# A landscape listing page holds 56 lines of 6.5pt/1.4 (9.1pt) in its 180 mm; a group keeps to
# 54 so that it never has to be split (its rules are drawn for the whole group); the first group
# leaves room for the listing's title and note in the run report.
PAGE_LINES = 54
TITLED_PAGE_LINES = 46


def listing(
    events: Iterable[AuditEvent], *, value_chars: int = 400, titled: bool = False
) -> Listing:
    """What ``audit/_listing.html`` prints for these events: page-sized groups of whole events.

    One <pre> per page rather than one per event: WeasyPrint's boxes, styles and layout cost
    per element (about 7 kB and 0.3 ms each), and 1,000 events made 1,000 of them. The line
    between two events is one rectangle of the group's background image."""
    groups: list[Group] = []
    blocks: list[str] = []
    room = TITLED_PAGE_LINES if titled else PAGE_LINES
    lines = 0
    for event in events:
        block = listing_block(event, value_chars=value_chars)
        height = block.count("\n") + 1
        if blocks and lines + height > room:
            groups.append(_group(blocks))
            blocks, lines, room = [], 0, PAGE_LINES
        blocks.append(block)
        lines += height
    if blocks:
        groups.append(_group(blocks))
    return Listing(listing_header(), groups)


def _group(blocks: list[str]) -> Group:
    """The blocks as one text, and an SVG one unit wide and a unit per line high (stretched to
    the <pre>) with a 0.4pt rule (0.044 of a 9.1pt line) under each event but the last."""
    rules = []
    line = 0
    for block in blocks[:-1]:
        line += block.count("\n") + 1
        rules.append(f'<rect x="0" y="{line - 0.022:.3f}" width="1" height="0.044"/>')
    total = line + blocks[-1].count("\n") + 1
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 1 {total}" '
        f'preserveAspectRatio="none" fill="#dde3ea">{"".join(rules)}</svg>'
    )
    return Group("\n".join(blocks), RULES_URL_PREFIX + quote(svg, safe=""))


RULES_URL_PREFIX = "data:image/svg+xml,"


def _details_cell(details: list[str], width: int) -> list[str]:
    """The details column: ``label: value`` pairs side by side, `` · `` between them, as many as
    fit on a line; a pair too long for a line of its own wraps with its continuation indented."""
    lines: list[str] = []
    packed = False  # the last line holds pairs and may take another
    for pair in details:
        if packed and len(lines[-1]) + len(PAIR_SEPARATOR) + len(pair) <= width:
            lines[-1] += PAIR_SEPARATOR + pair
            continue
        parts = _hanging(pair, width)
        lines.extend(parts)
        packed = len(parts) == 1
    if len(lines) > DETAIL_CELL_LINES:
        lines = lines[: DETAIL_CELL_LINES - 1] + ["(the rest in the CSV and JSON)"]
    return lines or ["—"]


def _hanging(line: str, width: int) -> list[str]:
    """A details line wrapped with its continuation lines indented under the value."""
    first = wrap(line, width)[0]
    rest = line[len(first) :].strip() if line.startswith(first) else ""
    return [first, *("  " + part for part in wrap(rest, width - 2))] if rest else [first]


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
    "action": "action is",
    "object_type": "object type is",
    "object_id": "object id is",
}


def _described(name: str, value: Any) -> tuple[str, str]:
    """A filter as the PDF names it: ``action is run.approved``, ``action is one of run.*``."""
    if name == "action" and actions.is_family(str(value)):
        return "action is one of", f"{value}*"
    return _LABELS[name], str(value)


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
        "filters": [_described(name, filters[name]) for name in _LABELS if filters.get(name)],
        "complete": is_complete(filters),
        "since": filters.get("since"),
        "until": filters.get("until"),
        "generated_by": generated_by,
        "generated_at": timezone.now(),
        "time_zone": settings.TIME_ZONE,
        "head": head,
        "total": total,
        "listing": listing(listed),
        "truncated": total > limit,
        "limit": limit,
        "chain": chain,
        "counts": {"total": f"{total:,}", "limit": f"{limit:,}", "checked": f"{chain.checked:,}"},
    }


def _static_fetcher() -> Any:
    """WeasyPrint's fetcher for report assets: files under STATIC_URL, through the static
    finders; anything else (other files, the network) is refused. Built on first use: importing
    WeasyPrint takes a second, which no other page should pay. The listing's own SVG data URLs
    are the one exception; anything such an image would fetch comes back here and is refused."""
    from weasyprint.urls import URLFetcher, URLFetcherResponse

    class StaticOnly(URLFetcher):  # type: ignore[misc]
        def fetch(self, url: str, headers: Any = None) -> URLFetcherResponse:
            if url.startswith(RULES_URL_PREFIX):  # a listing group's rules (Group.rules_url)
                svg = unquote(url.removeprefix(RULES_URL_PREFIX)).encode()
                return URLFetcherResponse(url, svg, {"Content-Type": "image/svg+xml"})
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
