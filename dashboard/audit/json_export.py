"""The audit JSON export, its event objects written by PostgreSQL around their details.

``COPY (SELECT ...) TO STDOUT`` of the export's own queryset (``reports.export_events``: the
page's filters, chain order, bounded by the chain head read when the export started) gives, per
event, the text of its object before the details, the details as jsonb text, and the text
after them (the hash included). PostgreSQL's ``to_json()`` of a text escapes exactly what
Python's JSON encoder (``ensure_ascii=False``) escapes, the same way (quote, backslash, b f n r
t, any other character under U+0020 as ``\\u00xx``), so these texts are what
``chain.canonical()`` writes; the details are written again in Python with their keys sorted at
every depth (jsonb keeps its own key order, and its numbers are not Python's), unless
PostgreSQL could write them flat (``_FLAT_DETAILS``: an object of strings, integers, booleans
and nulls, most of Runway's). Each event in the
file is then byte for byte ``chain.canonical()`` plus its hash, as ``tools/verify_audit_export.py``
checks.

Python decodes and encodes only the details PostgreSQL could not write: reading the rows
through Django's cursor and writing every field in Python took most of the export's time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from django.db import connection, transaction
from django.db.models import TextField
from django.db.models.expressions import RawSQL
from django.db.models.functions import Cast

from dashboard.audit import reports
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
# The details in canonical form where PostgreSQL can write them exactly as Python would: an
# object whose values are strings, integers, true, false or null, keys sorted by code point
# (COLLATE "C" compares UTF-8 bytes, which sorts the same). NULL otherwise (nested values, a
# number with a fraction or an exponent, which jsonb writes unlike Python, an empty object, not
# an object): Python writes those.
_FLAT_DETAILS = RawSQL(
    """CASE WHEN jsonb_typeof(details) = 'object' THEN (
        SELECT CASE WHEN bool_and(jsonb_typeof(value) IN ('string', 'boolean', 'null')
                                  OR (jsonb_typeof(value) = 'number'
                                      AND value::text ~ '^-?[0-9]+$'))
               THEN '{' || string_agg(to_json(key)::text || ':' || value::text, ','
                                      ORDER BY key COLLATE "C") || '}' END
        FROM jsonb_each(details)) END""",
    (),
    output_field=TextField(),
)
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
_load = json.JSONDecoder().decode


def select(filters: Mapping[str, Any], head: tuple[int, str]) -> tuple[str, tuple[Any, ...]]:
    """The SELECT of each event's columns, in chain order, and its parameters: the whole
    object when PostgreSQL could write the details flat, else NULL and the three parts (the
    text before the details, the details as jsonb text, the text after) for Python."""
    parts = reports.export_events(filters, head).annotate(
        json_before=_BEFORE,
        json_flat=_FLAT_DETAILS,
        json_details=Cast("details", TextField()),
        json_after=_AFTER,
    )
    query = parts.values_list("id", "json_before", "json_flat", "json_details", "json_after").query
    inner, params = query.get_compiler(using=parts.db).as_sql()
    sql = (
        'SELECT e."json_before" || e."json_flat" || e."json_after", '
        'CASE WHEN e."json_flat" IS NULL THEN e."json_before" END, '
        'CASE WHEN e."json_flat" IS NULL THEN e."json_details" END, '
        'CASE WHEN e."json_flat" IS NULL THEN e."json_after" END '
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
                    whole = f"{before}{_canonical(_load(details))}{after}"
                batch.append("\n" + whole)
                count += 1
                if len(batch) == reports.CHUNK:
                    yield (("," if count > reports.CHUNK else "") + ",".join(batch)).encode()
                    batch = []
        if batch:
            yield (("," if count > len(batch) else "") + ",".join(batch)).encode()
    yield b'\n],\n"count":' + str(count).encode() + b"}\n"
