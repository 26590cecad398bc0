"""The actions of the trail, for the audit page's action filter.

Actions are not declared anywhere: each app writes its own (``run.approved``,
``backup.completed``) and the job lifecycle writes ``<kind>.failed``, ``<kind>.requeued`` and so
on for every job kind. So the list is what the trail holds: the distinct ``action`` values.
``SELECT DISTINCT action`` reads the whole index (about 140 ms on a million events, and it grows
with the trail); :func:`known` walks the action index instead, one probe per distinct action
(a "loose index scan" as a recursive CTE: well under a millisecond for the same million).

A family is what comes before the first dot (``run`` for ``run.approved``). The filter's value
for a family is the family and a dot (``run.``): it selects ``run`` and every ``run.*``, not
``runbook.*``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.db import connection

from dashboard.audit.models import AuditEvent

# Readable names for the families Runway writes; any other family gets its own name, capitalised.
FAMILY_LABELS = {
    "approval_policy": "Approval policies",
    "backup": "Backups",
    "backup_policy": "Backup policies",
    "connection_check": "Connection checks",
    "database": "Databases",
    "gate_run": "Gate runs",
    "notification": "Notifications",
    "rehearsal": "Rehearsals",
    "run": "Runs",
    "run_step": "Run step jobs",
    "runbook": "Runbook rollbacks",
    "schema": "Schema",
    "step": "Steps",
    "trigger": "Triggers",
    "user": "Users",
    "validation": "Backup validations",
}

_LOOSE_SCAN = """
WITH RECURSIVE known(value) AS (
    (SELECT {column} FROM {table} ORDER BY {column} LIMIT 1)
    UNION ALL
    SELECT (SELECT e.{column} FROM {table} e WHERE e.{column} > known.value
            ORDER BY e.{column} LIMIT 1)
    FROM known WHERE known.value IS NOT NULL
)
SELECT value FROM known WHERE value IS NOT NULL
"""


def _distinct(column: str) -> list[str]:
    """The distinct values of an indexed column of the trail, sorted, in one query."""
    quote = connection.ops.quote_name
    sql = _LOOSE_SCAN.format(column=quote(column), table=quote(AuditEvent._meta.db_table))
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return sorted(row[0] for row in cursor.fetchall())


def known() -> list[str]:
    """The distinct actions in the trail, sorted, in one query over the action index."""
    return _distinct("action")


def object_types() -> list[str]:
    """The object types the trail's events are about (``run``, ``backup``, ...), sorted, over
    the object_type index; not the empty one of events about no object."""
    return [t for t in _distinct("object_type") if t]


def family_of(action: str) -> str:
    return action.split(".", 1)[0]


def family_value(family: str) -> str:
    """The filter value that selects a family: ``run.``."""
    return f"{family}."


def family_title(family: str) -> str:
    """``Runs``."""
    return FAMILY_LABELS.get(family) or family.replace("_", " ").capitalize()


def family_label(family: str) -> str:
    """``Runs (run.*)``."""
    return f"{family_title(family)} ({family}.*)"


@dataclass(frozen=True)
class Family:
    name: str
    actions: list[str]

    @property
    def value(self) -> str:
        return family_value(self.name)

    @property
    def title(self) -> str:
        return family_title(self.name)

    @property
    def label(self) -> str:
        return family_label(self.name)


def families(actions: Iterable[str]) -> list[Family]:
    """The actions grouped by family, families and actions in alphabetical order."""
    grouped: dict[str, list[str]] = {}
    for action in sorted(set(actions)):
        grouped.setdefault(family_of(action), []).append(action)
    return [Family(name, grouped[name]) for name in sorted(grouped)]


def normalise(value: str, actions: Iterable[str]) -> str:
    """The filter value of what a link or a user gave: ``run``, ``run.`` and ``run.*`` are the
    family ``run.`` (the page's older links used a prefix); an action stays as it is. Anything
    else is returned unchanged, for the form to refuse."""
    value = value.strip()
    listed = set(actions)
    if value in listed:
        return value
    name = value.removesuffix(".*").removesuffix(".")
    if name and "." not in name and any(family_of(action) == name for action in listed):
        return family_value(name)
    return value


def is_family(value: str) -> bool:
    return value.endswith(".")
