"""The audit CSV export, written by PostgreSQL: ``COPY (SELECT ...) TO STDOUT (FORMAT csv)``.

The SELECT is the export's own queryset (``reports.export_events``: the page's filters, chain
order, bounded by the chain head read when the export started) compiled by Django, with every
cell already in its CSV form, so Python only passes the server's bytes on, a chunk of
``reports.CHUNK`` rows at a time (memory stays flat). It reads what ``reports.stream_csv`` read
and writes the same cells:

- times in UTC ISO 8601, as in the hash (``reports._UTC_ISO``);
- text that a spreadsheet would run as a formula (starting with = + - @ TAB CR) with a leading
  apostrophe (``reports.safe_cell``);
- details as their JSON text. That is PostgreSQL's ``jsonb`` text: the same keys and values as
  the Python writer's ``json.dumps(sort_keys=True)``, with the keys in jsonb's order (shorter
  keys first), the order the audit page and the PDF list them in, and numbers as stored. The
  CSV is for reading; the JSON export is the exact, verifiable copy.

An empty text cell is written unquoted, as Python's csv module writes it (PostgreSQL writes
``""`` for an empty string and nothing for NULL): the bytes differ from the old writer's only in
the details' key order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from django.db import connection, transaction
from django.db.models import CharField, F, Func, TextField, Value
from django.db.models.expressions import Case, Expression, When
from django.db.models.functions import Cast, Concat, Left, NullIf
from django.db.models.lookups import In

from dashboard.audit import reports
from dashboard.lib import pg

_TEXT_COLUMNS = ("actor_name", "action", "object_type", "object_id", "object_repr")
HEADER = (",".join(reports.CSV_HEADER) + "\n").encode()


def _safe(column: str) -> Expression:
    """``reports.safe_cell`` in SQL, and NULL for an empty string (written as nothing)."""
    return Case(
        When(
            In(Left(F(column), 1), list(reports._FORMULA_START)),
            then=Concat(Value("'"), F(column), output_field=CharField()),
        ),
        default=NullIf(F(column), Value("")),
        output_field=CharField(),
    )


def select(filters: Mapping[str, Any], head: tuple[int, str] | None) -> tuple[str, tuple[Any, ...]]:
    """The SELECT of the CSV's cells (``reports.CSV_HEADER``, in order) and its parameters."""
    utc = Func(Value("UTC"), F("created_at"), function="timezone")
    cells = reports.export_events(filters, head).annotate(
        csv_time=Func(utc, Value(reports._UTC_ISO), function="to_char", output_field=CharField()),
        **{f"csv_{name}": _safe(name) for name in _TEXT_COLUMNS},
        csv_details=Cast("details", TextField()),
    )
    query = cells.values_list(
        "id",
        "csv_time",
        "actor_id",
        *(f"csv_{name}" for name in _TEXT_COLUMNS),
        "csv_details",
        "prev_hash",
        "hash",
    ).query
    sql, params = query.get_compiler(using=cells.db).as_sql()
    return sql, tuple(params)


def stream_csv(filters: Mapping[str, Any], head: tuple[int, str] | None) -> Iterator[bytes]:
    """The header, then one row per event up to ``head``, a chunk at a time (UTF-8). In one
    transaction; if the client goes away, closing the generator cancels the COPY."""
    yield HEADER
    if head is None:
        return  # an empty trail (the queryset is .none(), which compiles to no SQL)
    sql, params = select(filters, head)
    with transaction.atomic():
        connection.ensure_connection()
        yield from pg.copy_out(connection.connection, sql, params, rows=reports.CHUNK)
