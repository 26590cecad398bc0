"""A managed database's pending revisions, analysed: the risk reports the pages, the gates and the
approvals read. The SQL is rendered offline from the scripts; the table sizes and the server's
major version are the ones the worker's last successful connection check read (the web never
connects to a managed database).

Each revision's analysis is stored in Runway's database (:class:`RevisionAnalysis`) under a key
of everything it depends on (:mod:`.risk_cache`), so any process on any host reuses it and only
a changed revision and its descendants are analysed again; sizes and acceptances are applied on
top at every read. Within one request (or task) the rows read are remembered, so asking twice
costs one query."""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from celery.signals import task_postrun, task_prerun
from django.core.signals import request_finished, request_started
from django.utils import timezone

from dashboard.databases.models import ConnectionCheck, ManagedDatabase
from dashboard.lib import alembic
from dashboard.schema import risk
from dashboard.schema.models import RevisionAnalysis, RiskAcceptance
from dashboard.schema.status import last_good_check, scripts_of, status_of

GRADES = ("low", "medium", "high")


@dataclass
class Pending:
    """What an upgrade to the heads would run, as far as the last good check knows."""

    known: bool  # a successful check has read alembic_version
    current: list[str] = field(default_factory=list)
    revisions: list[str] = field(default_factory=list)  # oldest first
    target: str = ""  # the head they lead to ("" when there are several or none)
    error: str = ""


def pending_of(db: ManagedDatabase, check: ConnectionCheck | None = None) -> Pending:
    check = check if check is not None else last_good_check(db)
    status = status_of(db, check)
    if status.history is None:
        return Pending(False, error=status.error)
    heads = status.history.heads
    return Pending(
        known=status.known,
        current=list(status.history.current),
        revisions=list(status.history.pending) if status.known else [],
        target=heads[0] if len(heads) == 1 else "",
    )


def server_major(check: ConnectionCheck | None) -> int | None:
    """15 from "15.8 (Debian 15.8-0+deb12u1)"; None when unknown."""
    if check is None or not check.server_version:
        return None
    head = check.server_version.split(".", 1)[0].split()[0]
    return int(head) if head.isdigit() else None


def sizes_of(check: ConnectionCheck | None) -> risk.TableSizes | None:
    if check is None or not check.table_sizes:
        return None
    return {name: (int(v[0]), int(v[1])) for name, v in check.table_sizes.items()}


def acceptances_of(db: ManagedDatabase) -> dict[tuple[str, str], dict[str, str]]:
    return {
        (a.revision, a.rule): {
            "by": a.accepted_by.get_username(),
            "comment": a.comment,
            "at": a.accepted_at.isoformat(timespec="seconds"),
        }
        for a in RiskAcceptance.objects.filter(database=db).select_related("accepted_by")
    }


def reports_for(
    db: ManagedDatabase,
    revisions: list[str],
    *,
    check: ConnectionCheck | None = None,
    tree: alembic.ScriptTree | None = None,
) -> list[risk.RevisionReport]:
    """The risk reports of ``revisions`` (in that order) for this database. A caller that has
    read the last good check or the script tree already passes them."""
    if not revisions:
        return []
    check = check if check is not None else last_good_check(db)
    return _analysed(db, revisions, check, sizes_of(check), tree)


def _analysed(
    db: ManagedDatabase,
    revisions: list[str],
    check: ConnectionCheck | None,
    sizes: risk.TableSizes | None,
    tree: alembic.ScriptTree | None = None,
) -> list[risk.RevisionReport]:
    tree = tree if tree is not None else scripts_of(db)
    return risk.analyse(
        tree.location,
        tree,
        revisions,
        pg_major=server_major(check),
        table_sizes=sizes,
        acceptances=acceptances_of(db) or None,
        pending=True,  # what the database's last check says is still to run on it
        store=STORE,
    )


class DatabaseStore:
    """:class:`risk.Store` in Runway's database: one query reads the stored reports of a chain
    (the schema facts only when a revision must be analysed again); new ones are written in one
    go, and rows unused for ``RevisionAnalysis.RETENTION`` are deleted then. ``used_at`` is
    refreshed at most once per ``TOUCH_AFTER``, so a read is one query."""

    def __init__(self) -> None:
        self._memo = threading.local()  # rows read in this request or task, by key

    def _rows(self, kind: str) -> dict[str, dict[str, Any]]:
        rows: dict[str, dict[str, dict[str, Any]]] | None = getattr(self._memo, "rows", None)
        if rows is None:
            rows = self._memo.rows = {"report": {}, "schema": {}}
        return rows[kind]

    def forget(self, **kwargs: object) -> None:
        """Forget what this thread read: a request or a task starts or ends."""
        self._memo.rows = None

    def load(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        memo = self._rows("report")
        found = {key: memo[key] for key in keys if key in memo}
        missing = [key for key in keys if key not in memo]
        if not missing:
            return found
        now = timezone.now()
        stale = []
        rows = RevisionAnalysis.objects.filter(key__in=missing)
        for key, report, used_at in rows.values_list("key", "report", "used_at"):
            data = _unpack(report)
            if data is None:
                continue  # does not fit: analysed again
            found[key] = memo[key] = data
            if used_at < now - RevisionAnalysis.TOUCH_AFTER:
                stale.append(key)
        if stale:
            RevisionAnalysis.objects.filter(key__in=stale).update(used_at=now)
        return found

    def load_schemas(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        memo = self._rows("schema")
        found = {key: memo[key] for key in keys if key in memo}
        missing = [key for key in keys if key not in memo]
        if missing:
            rows = RevisionAnalysis.objects.filter(key__in=missing)
            for key, schema in rows.values_list("key", "schema"):
                data = _unpack(schema)
                if data is not None:
                    found[key] = memo[key] = data
        return found

    def save(self, records: Mapping[str, risk.Stored]) -> None:
        if not records:
            return
        now = timezone.now()
        RevisionAnalysis.objects.bulk_create(
            [
                RevisionAnalysis(
                    key=key,
                    revision=stored.revision,
                    report=_pack(stored.report),
                    schema=_pack(stored.schema),
                    created_at=now,
                    used_at=now,
                )
                for key, stored in records.items()
            ],
            batch_size=200,
            ignore_conflicts=True,  # another process stored the same analysis meanwhile
        )
        self._rows("report").update({key: s.report for key, s in records.items()})
        self._rows("schema").update({key: s.schema for key, s in records.items()})
        RevisionAnalysis.objects.filter(used_at__lt=now - RevisionAnalysis.RETENTION).delete()


def _pack(data: dict[str, Any]) -> bytes:
    return zlib.compress(json.dumps(data, separators=(",", ":")).encode(), 1)


def _unpack(data: bytes | memoryview) -> dict[str, Any] | None:
    try:
        found = json.loads(zlib.decompress(data))
    except (zlib.error, ValueError):
        return None
    return found if isinstance(found, dict) else None


STORE = DatabaseStore()
# Remembered for one request or one task only: nothing is kept in memory between them.
for _name, _signal in {
    "request_started": request_started,
    "request_finished": request_finished,
    "task_prerun": task_prerun,
    "task_postrun": task_postrun,
}.items():
    _signal.connect(STORE.forget, weak=False, dispatch_uid=f"schema-analysis-memo-{_name}")


def analyse_pending(check: ConnectionCheck) -> None:
    """After ``check`` connected (on the worker): analyse the revisions it found pending, so
    the reports are stored before anyone opens the history page."""
    reports_for(check.database, pending_of(check.database, check).revisions, check=check)


def pending_reports(db: ManagedDatabase) -> tuple[Pending, list[risk.RevisionReport]]:
    check = last_good_check(db)
    pending = pending_of(db, check)
    return pending, reports_for(db, pending.revisions, check=check)


def tables_touched(reports: list[risk.RevisionReport]) -> list[str]:
    seen: list[str] = []
    for report in reports:
        for table in report.tables:
            if table not in seen:
                seen.append(table)
    return seen


def pending_and_tables(db: ManagedDatabase) -> tuple[list[str], list[str]]:
    """The pending revisions (oldest first) and the tables they touch (for the gates)."""
    pending, reports = pending_reports(db)
    return pending.revisions, tables_touched(reports)


def worst(reports: list[risk.RevisionReport]) -> str:
    grades = [r.grade for r in reports]
    return max(grades, key=GRADES.index) if grades else "low"


def known_revision(db: ManagedDatabase, revision: str) -> alembic.Revision | None:
    tree = scripts_of(db)
    return tree.revisions.get(revision)


def pinned_hash(db: ManagedDatabase, revisions: list[str]) -> str:
    """The hash an approval pins: the risk reports of ``revisions`` as the scripts, the accepted
    findings and the server's version make them. Live table sizes are left out on purpose: they
    move with every connection check, and an approval must not void itself every five minutes."""
    return risk.report_hash(_analysed(db, revisions, last_good_check(db), None))
