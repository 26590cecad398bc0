"""A managed database's pending revisions, analysed: the risk reports the pages, the gates and the
approvals read. The SQL is rendered offline from the scripts; the table sizes and the server's
major version are the ones the worker's last successful connection check read (the web never
connects to a managed database). Reports are cached per process until a script, a size or an
acceptance changes."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from dashboard.databases.models import ConnectionCheck, ManagedDatabase
from dashboard.lib import alembic
from dashboard.schema import risk
from dashboard.schema.models import RiskAcceptance
from dashboard.schema.status import fingerprint, last_good_check, scripts_of, status_of

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
) -> list[risk.RevisionReport]:
    """The risk reports of ``revisions`` (in that order) for this database."""
    if not revisions:
        return []
    check = check if check is not None else last_good_check(db)
    return list(_analysed(db, revisions, check, sizes_of(check)))


def _analysed(
    db: ManagedDatabase,
    revisions: list[str],
    check: ConnectionCheck | None,
    sizes: risk.TableSizes | None,
) -> tuple[risk.RevisionReport, ...]:
    """The cached analysis, keyed by everything it depends on (hashable forms)."""
    accepted = acceptances_of(db)
    path = db.script_path
    return _cached(
        str(path),
        fingerprint(path),
        tuple(revisions),
        server_major(check),
        tuple(sorted(sizes.items())) if sizes else (),
        tuple(sorted((k, tuple(sorted(v.items()))) for k, v in accepted.items())),
    )


@lru_cache(maxsize=128)
def _cached(
    path: str,
    fingerprint: tuple[float, int],
    revisions: tuple[str, ...],
    pg_major: int | None,
    sizes: tuple[tuple[str, tuple[int, int]], ...],
    accepted: tuple[tuple[tuple[str, str], tuple[tuple[str, str], ...]], ...],
) -> tuple[risk.RevisionReport, ...]:
    tree = alembic.read_scripts(path)
    return tuple(
        risk.analyse(
            path,
            tree,
            list(revisions),
            pg_major=pg_major,
            table_sizes=dict(sizes) or None,
            acceptances={key: dict(items) for key, items in accepted} or None,
            pending=True,  # what the database's last check says is still to run on it
        )
    )


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
    return risk.report_hash(list(_analysed(db, revisions, last_good_check(db), None)))
