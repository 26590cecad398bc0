"""The audit JSON export, its event objects written by PostgreSQL.

``COPY (SELECT ...) TO STDOUT`` of the export's own queryset (``reports.export_events``: the
page's filters, chain order, bounded by the chain head read when the export started) gives, per
event, its whole object: the text before the details, the details' canonical text as the event
was recorded with it (``details_json``, the very bytes its hash covers), and the text after
them (the hash included). PostgreSQL's ``to_json()`` of a text escapes exactly what Python's
JSON encoder (``ensure_ascii=False``) escapes, the same way (quote, backslash, b f n r t, any
other character under U+0020 as ``\\u00xx``), so these texts are what ``chain.canonical()``
writes. Each event in the file is then byte for byte ``chain.canonical()`` plus its hash, as
``tools/verify_audit_export.py`` checks.

Python only splits COPY's lines and joins them: reading the rows through Django's cursor and
writing every field in Python took most of the export's time, and canonicalising the details
in SQL (jsonb keeps its own key order and its own numbers) took half of what was left. An event
without its stored text (written by hand, never by ``chain.record``) has its details written
by Python from the jsonb.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from django.db import connection, transaction
from django.db.models import F, TextField, Value
from django.db.models.expressions import RawSQL
from django.db.models.functions import Cast, NullIf

from dashboard.audit import reports
from dashboard.audit.chain import canonical_details
from dashboard.lib import pg

_BEFORE = RawSQL(
    """'{"action":' || to_json(action)::text || ',"actor":' || to_json(actor_name)::text
    || ',"actor_id":' || coalesce(actor_id::text, 'null') || ',"details":'""",
    (),
    output_field=TextField(),
)
_AFTER = RawSQL(
    f"""',"id":' || id::text || ',"object":' || to_json(object_repr)::text
    || ',"object_id":' || to_json(object_id)::text
    || ',"object_type":' || to_json(object_type)::text || ',"prev":' || to_json(prev_hash)::text
    || ',"time":"' || to_char(timezone('UTC', created_at), '{reports._UTC_ISO}') || '"'
    || ',"hash":' || to_json(hash)::text || '}}'""",
    (),
    output_field=TextField(),
)
# The details' canonical text, kept since the event was recorded (``details_json``); NULL for a
# row written without it (only by hand: ``chain.record`` always writes it), which Python writes.
_STORED_DETAILS = NullIf(F("details_json"), Value(""), output_field=TextField())
_load = json.JSONDecoder().decode


def select(filters: Mapping[str, Any], head: tuple[int, str]) -> tuple[str, tuple[Any, ...]]:
    """The SELECT of each event's columns, in chain order, and its parameters: the whole
    object when the event has its details' stored text, else NULL and the three parts (the
    text before the details, the details as jsonb text, the text after) for Python."""
    parts = reports.export_events(filters, head).annotate(
        json_before=_BEFORE,
        json_stored=_STORED_DETAILS,
        json_details=Cast("details", TextField()),
        json_after=_AFTER,
    )
    query = parts.values_list(
        "id", "json_before", "json_stored", "json_details", "json_after"
    ).query
    inner, params = query.get_compiler(using=parts.db).as_sql()
    sql = (
        'SELECT e."json_before" || e."json_stored" || e."json_after", '
        'CASE WHEN e."json_stored" IS NULL THEN e."json_before" END, '
        'CASE WHEN e."json_stored" IS NULL THEN e."json_details" END, '
        'CASE WHEN e."json_stored" IS NULL THEN e."json_after" END '
        f'FROM ({inner}) AS e ORDER BY e."id"'
    )
    return sql, tuple(params)


def stream_json(
    filters: Mapping[str, Any], head: tuple[int, str] | None, *, meta: Mapping[str, Any]
) -> Iterator[bytes]:
    """One JSON document, written a chunk of ``reports.CHUNK`` events at a time:
    ``{"meta": {...}, "events": [{canonical fields..., "hash": ...}, ...], "count": N}``. In one
    transaction; if the client goes away, closing the generator cancels the COPY."""
    yield b'{"meta":' + json.dumps(meta, ensure_ascii=False).encode() + b',\n"events":['
    count = 0
    if head is not None:  # an empty trail: no events (its queryset compiles to no SQL)
        sql, params = select(filters, head)
        batch: list[str] = []
        with transaction.atomic():
            connection.ensure_connection()
            for row in pg.copy_text_rows(connection.connection, sql, params):
                # No column holds a raw control character (each is JSON text or NULL), so the
                # only escape COPY wrote is a doubled backslash, and a tab separates columns.
                whole, before, details, after = row.replace("\\\\", "\\").split("\t")
                if whole == "\\N":  # NULL, as COPY writes it (no JSON text is "\N")
                    whole = f"{before}{canonical_details(_load(details))}{after}"
                batch.append("\n" + whole)
                count += 1
                if len(batch) == reports.CHUNK:
                    yield (("," if count > reports.CHUNK else "") + ",".join(batch)).encode()
                    batch = []
        if batch:
            yield (("," if count > len(batch) else "") + ",".join(batch)).encode()
    yield b'\n],\n"count":' + str(count).encode() + b"}\n"
