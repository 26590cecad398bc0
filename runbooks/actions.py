"""The automated actions a runbook step can name. Each runs on a Celery worker, calls domain
functions (backups, schema), logs as it goes and returns an Outcome with its evidence. A runbook
that names an action not registered here does not load."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from dashboard.backups.models import Backup, BackupState, Validation, ValidationState
from dashboard.databases import credentials
from dashboard.lib import pg


@dataclass
class Outcome:
    verdict: str  # pass | warn | fail
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.verdict != "fail"


class Context:
    """What an action sees: the run, its step, and a live log."""

    def __init__(self, run: Any, step: Any, log: Callable[[str], None]) -> None:
        self.run = run
        self.step = step
        self.log = log

    @property
    def db(self) -> Any:
        return self.run.database


@dataclass(frozen=True)
class Action:
    name: str
    title: str
    destructive: bool
    fn: Callable[[Context], Outcome]


REGISTRY: dict[str, Action] = {}


def action(name: str, title: str, *, destructive: bool = False) -> Callable[..., Any]:
    def register(fn: Callable[[Context], Outcome]) -> Callable[[Context], Outcome]:
        REGISTRY[name] = Action(name, title, destructive, fn)
        return fn

    return register


# --- Risk and rehearsal ---


@action("schema.risk_report", "Risk report of the pending revisions")
def risk_report(ctx: Context) -> Outcome:
    from dashboard.schema import analysis

    reports = analysis.reports_for(ctx.db, ctx.run.revisions)
    digest = analysis.pinned_hash(ctx.db, ctx.run.revisions)
    ctx.run.risk_hash = digest
    ctx.run.save(update_fields=["risk_hash"])
    worst = analysis.worst(reports) if reports else "low"
    for r in reports:
        ctx.log(f"{r.revision}: {r.grade} ({len(r.findings)} findings)")
    evidence = {
        "hash": digest,
        "revisions": [
            {
                "revision": r.revision,
                "grade": r.grade,
                "previewable": r.previewable,
                "reasons": r.reasons,
                "findings": [
                    {
                        "rule": f.rule,
                        "severity": f.severity,
                        "lock": f.lock,
                        "table": f.table,
                        "accepted": bool(f.accepted),
                    }
                    for f in r.findings
                ],
            }
            for r in reports
        ],
    }
    summary = (
        f"{len(reports)} revision{'s' if len(reports) != 1 else ''}, highest grade {worst}"
        if reports
        else "Nothing pending: no revision to analyse."
    )
    return Outcome("warn" if worst == "high" else "pass", summary, evidence)


@action("schema.rehearse", "Rehearse the pending revisions on a copy")
def rehearse(ctx: Context) -> Outcome:
    from dashboard.schema import rehearsal

    found = rehearsal.latest_rehearsal(ctx.db, ctx.run.revisions)
    if found is None:
        ctx.log("copying the database and running the pending revisions …")
        queued = rehearsal.request_rehearsal(ctx.run.started_by, ctx.db, enqueue=False)
        found = rehearsal.perform_rehearsal(queued.pk) or queued
        found.refresh_from_db()
    else:
        ctx.log(f"rehearsal #{found.pk} already covers these revisions")
    for t in found.timings:
        ctx.log(f"{t['revision']}: {t['seconds']:.3f} s, lock wait {t['lock_wait_ms']:.0f} ms")
    evidence = {
        "rehearsal": found.pk,
        "method": found.method,
        "timings": found.timings,
        "total_seconds": found.total_seconds,
        "longest_lock_wait_ms": found.longest_lock_wait_ms,
    }
    if found.state != "done" or any(not t.get("ok") for t in found.timings):
        return Outcome("fail", f"Rehearsal #{found.pk} failed: {found.error}", evidence)
    total = found.total_seconds or 0.0
    return Outcome("pass", f"Rehearsal #{found.pk}: {total:.2f} s in all", evidence)


# --- Backups ---


@action("backup.create", "Create the pre-migration backup")
def create_backup(ctx: Context) -> Outcome:
    from dashboard.backups import pipeline

    backup = pipeline.request_backup(
        ctx.run.started_by, ctx.db, reason=f"run #{ctx.run.pk}", enqueue=False
    )
    ctx.log(f"backup #{backup.pk}: dumping, compressing, encrypting, storing …")
    pipeline.perform_backup(backup.pk)
    backup.refresh_from_db()
    ctx.run.backup = backup
    ctx.run.save(update_fields=["backup"])
    evidence = {
        "backup": backup.pk,
        "state": backup.state,
        "size_bytes": backup.size_bytes,
        "sha256": backup.sha256,
        "revision": backup.revision,
        "row_counts": backup.row_counts,
        "storage_url": backup.storage_url,
        "duration_s": backup.duration_s,
    }
    if backup.state != BackupState.COMPLETED:
        return Outcome("fail", f"Backup #{backup.pk} failed: {backup.error}", evidence)
    ctx.log(f"backup #{backup.pk} stored ({backup.size_bytes} bytes, sha256 {backup.sha256[:12]}…)")
    return Outcome("pass", f"Backup #{backup.pk} completed in {backup.duration_s:.1f} s", evidence)


@action("backup.validate", "Validate the run's backup by restoring it")
def validate_backup(ctx: Context) -> Outcome:
    from dashboard.backups import validation as validating

    backup: Backup | None = ctx.run.backup
    if backup is None:
        return Outcome("fail", "This run has no backup to validate: create it first.")
    queued = validating.request_validation(ctx.run.started_by, backup, enqueue=False)
    ctx.log(f"validation #{queued.pk}: restoring backup #{backup.pk} into a scratch database …")
    validating.perform_validation(queued.pk)
    done = Validation.objects.get(pk=queued.pk)
    for c in done.checks:
        ctx.log(f"{'ok  ' if c['ok'] else 'FAIL'} {c['name']}: {c['found']}")
    evidence = {
        "validation": done.pk,
        "backup": backup.pk,
        "state": done.state,
        "restore_s": done.restore_s,
        "queries_s": done.queries_s,
        "checks": done.checks,
    }
    if done.state != ValidationState.PASSED:
        return Outcome("fail", f"Validation #{done.pk} failed: {done.error}", evidence)
    return Outcome("pass", f"Validation #{done.pk} of backup #{backup.pk} passed", evidence)


# --- Gates ---


@action("gates.preflight", "Pre-migration safety gates")
def preflight(ctx: Context) -> Outcome:
    from dashboard.schema import analysis, gates

    reports = analysis.reports_for(ctx.db, ctx.run.revisions)
    results = gates.evaluate(
        ctx.db, revisions=ctx.run.revisions, tables=analysis.tables_touched(reports)
    )
    for r in results:
        ctx.log(f"{r.verdict:4} {r.title}: {r.summary}")
    verdict = gates.overall(results)
    evidence = {"gates": [r.to_json() for r in results]}
    failed = [r.title for r in results if r.verdict == "fail"]
    if failed:
        return Outcome("fail", f"Failed: {', '.join(failed)}", evidence)
    warned = [r.title for r in results if r.verdict == "warn"]
    summary = f"All gates pass{' with warnings: ' + ', '.join(warned) if warned else ''}"
    return Outcome(verdict, summary, evidence)


# --- Execution and integrity ---


def _validated_backup(run: Any) -> str:
    """'' when the run has a completed backup with a passed validation, else why not."""
    backup = run.backup
    if backup is None or backup.state != BackupState.COMPLETED:
        return "this run has no completed backup"
    if not backup.validations.filter(state=ValidationState.PASSED).exists():
        return f"backup #{backup.pk} has no passed validation"
    return ""


@action("schema.upgrade", "Upgrade to the target revision", destructive=True)
def upgrade(ctx: Context) -> Outcome:
    from dashboard.schema import execution

    missing = _validated_backup(ctx.run)
    if missing:
        return Outcome("fail", f"Refused: {missing}. Nothing ran.")
    pending = execution.live_revisions_to(ctx.db, ctx.run.target_revision)
    if pending != ctx.run.revisions:
        ctx.log(f"pending now: {', '.join(pending) or 'none'}")
    try:
        steps = execution.migrate(ctx.db, pending, log=ctx.log)
    except execution.ExecutionError as exc:
        return Outcome("fail", str(exc))
    evidence = {"revisions": [s.to_json() for s in steps], "target": ctx.run.target_revision}
    failed = [s for s in steps if not s.ok]
    if failed:
        return Outcome("fail", f"{failed[0].revision} failed: {failed[0].error}", evidence)
    total = sum(s.seconds for s in steps)
    return Outcome(
        "pass", f"At {ctx.run.target_revision}: {len(steps)} revision(s) in {total:.2f} s", evidence
    )


@action("integrity.verify", "Verify integrity after the migration")
def verify_integrity(ctx: Context) -> Outcome:
    """No rows lost from the critical tables since the run's backup, no orphaned rows for any
    foreign key, and the database at the target revision."""
    backup: Backup | None = ctx.run.backup
    password = credentials.password(ctx.db)
    checks: list[dict[str, Any]] = []
    with pg.connect(ctx.db.dsn, password, timeout=settings.RUNWAY_CONNECT_TIMEOUT) as conn:
        for table, before in (backup.row_counts if backup else {}).items():
            now = pg.row_counts(conn, [table])[table]
            checks.append(
                {"name": f"rows in {table}", "ok": now >= before, "before": before, "now": now}
            )
        for fk in pg.foreign_keys(conn):
            orphans = pg.orphan_count(conn, fk)
            checks.append({"name": f"orphaned rows: {fk}", "ok": orphans == 0, "now": orphans})
        revision = pg.alembic_revision(conn)
    target = ctx.run.target_revision
    checks.append(
        {"name": "Alembic revision", "ok": not target or revision == target, "now": revision}
    )
    for c in checks:
        ctx.log(f"{'ok  ' if c['ok'] else 'FAIL'} {c['name']}: {c['now']}")
    bad = [c["name"] for c in checks if not c["ok"]]
    if bad:
        return Outcome("fail", f"Integrity broken: {', '.join(bad)}", {"checks": checks})
    return Outcome("pass", f"{len(checks)} integrity checks hold", {"checks": checks})


@action("database.check", "Check the connection and read the current revision")
def check_connection(ctx: Context) -> Outcome:
    from dashboard.databases import checks
    from dashboard.jobs import lifecycle as jobs

    queued = checks.request_check(ctx.run.started_by, ctx.db)
    done = jobs.run("connection_check", queued.pk) or queued
    done.refresh_from_db()
    evidence = {"check": done.pk, "state": done.outcome, "current": done.current_revisions}
    if not done.connected:
        return Outcome("fail", done.message or done.error, evidence)
    return Outcome("pass", done.message, evidence)
