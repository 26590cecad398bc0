"""The automated actions a runbook step can name. Each runs on a Celery worker, calls domain
functions (backups, schema), logs as it goes and returns an Outcome with its evidence. A runbook
that names an action not registered here does not load."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.utils import timezone

from dashboard.backups.models import Backup, Validation
from dashboard.databases import credentials
from dashboard.lib import pg
from dashboard.lib.secrets import SecretError


@dataclass
class Outcome:
    verdict: str  # pass | warn | fail
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.verdict != "fail"


class Context:
    """What an action sees: the run, its step, the step's job (this attempt) with its live log,
    and the job's cancel request.

    A long action looks at the request between units of work (``check_cancelled()`` raises, and
    the step fails as cancelled), or, when it blocks (a long statement), watches for it from a
    thread (``wait_for_cancel``) and interrupts what blocks. ``lost`` is true once the reaper
    took the job from this worker (it stopped beating): its result will not count."""

    def __init__(
        self,
        run: Any,
        step: Any,
        log: Callable[[str], None],
        *,
        job: Any = None,
        lifecycle: Any = None,
    ) -> None:
        self.run = run
        self.step = step
        self.log = log
        self.job = job  # the StepJob row of this attempt (None outside a job)
        self._lifecycle = lifecycle  # dashboard.jobs.lifecycle.Context of the running job

    @property
    def db(self) -> Any:
        return self.run.database

    @property
    def cancel_requested(self) -> bool:
        return self._lifecycle is not None and self._lifecycle.cancel_requested

    @property
    def lost(self) -> bool:
        return self._lifecycle is not None and self._lifecycle.lost

    def check_cancelled(self) -> None:
        """Raise ``dashboard.jobs.lifecycle.Cancelled`` when a cancel was asked for."""
        if self._lifecycle is not None:
            self._lifecycle.check_cancelled()

    def wait_for_cancel(self, timeout: float | None = None) -> bool:
        """Block until a cancel is asked for (True) or ``timeout`` passes (False)."""
        if self._lifecycle is None:
            return False
        return bool(self._lifecycle.wait_for_cancel(timeout))


class Aborted(Exception):  # noqa: N818 - what happened, not a fault
    """An action stopped on an abort request and says how it left things (``outcome``): the
    attempt ends cancelled with that outcome as its evidence, and the step can be retried."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.summary)
        self.outcome = outcome


@dataclass(frozen=True)
class Action:
    name: str
    title: str
    destructive: bool
    fn: Callable[[Context], Outcome]
    # After the reaper interrupted an attempt (its worker died): check and clean up what the
    # dead worker left, given the attempt's job; the outcome's summary joins the step's.
    recover: Callable[[Any], Outcome] | None = None


REGISTRY: dict[str, Action] = {}


def action(
    name: str,
    title: str,
    *,
    destructive: bool = False,
    recover: Callable[[Any], Outcome] | None = None,
) -> Callable[..., Any]:
    def register(fn: Callable[[Context], Outcome]) -> Callable[[Context], Outcome]:
        REGISTRY[name] = Action(name, title, destructive, fn, recover)
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
        n = len(r.findings)
        ctx.log(f"{r.revision}: {r.grade} ({n} finding{'s' if n != 1 else ''})")
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
    from dashboard.jobs import lifecycle as jobs
    from dashboard.schema import rehearsal

    found = rehearsal.latest_rehearsal(ctx.db, ctx.run.revisions)
    if found is None:
        ctx.log("copying the database and running the pending revisions …")
        found = rehearsal.request_rehearsal(ctx.run.started_by, ctx.db, enqueue=False)
        jobs.run("rehearsal", found.pk)  # here, in the step's own job
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
    if not found.succeeded or any(not t.get("ok") for t in found.timings):
        return Outcome("fail", f"Rehearsal #{found.pk} {found.state}: {found.error}", evidence)
    total = found.total_seconds or 0.0
    return Outcome("pass", f"Rehearsal #{found.pk}: {total:.2f} s in all", evidence)


# --- Backups ---


@action("backup.create", "Create the pre-migration backup")
def create_backup(ctx: Context) -> Outcome:
    from dashboard.backups import pipeline
    from dashboard.jobs import lifecycle as jobs

    backup = pipeline.request_backup(
        ctx.run.started_by, ctx.db, reason=f"run #{ctx.run.pk}", enqueue=False
    )
    ctx.log(f"backup #{backup.pk}: dumping, compressing, encrypting, storing …")
    jobs.run("backup", backup.pk)  # here, in the step's own job
    backup.refresh_from_db()
    ctx.run.backup = backup
    ctx.run.save(update_fields=["backup"])
    evidence = {
        "backup": backup.pk,
        "state": backup.outcome,
        "size_bytes": backup.size_bytes,
        "sha256": backup.sha256,
        "revision": backup.revision,
        "row_counts": backup.row_counts,
        "storage_url": backup.storage_url,
        "duration_s": backup.duration_s,
    }
    if not backup.completed:
        return Outcome("fail", f"Backup #{backup.pk} {backup.outcome}: {backup.error}", evidence)
    ctx.log(f"backup #{backup.pk} stored ({backup.size_bytes} bytes, sha256 {backup.sha256[:12]}…)")
    return Outcome("pass", f"Backup #{backup.pk} completed in {backup.duration_s:.1f} s", evidence)


@action("backup.validate", "Validate the run's backup by restoring it")
def validate_backup(ctx: Context) -> Outcome:
    from dashboard.backups import validation as validating
    from dashboard.jobs import lifecycle as jobs

    backup: Backup | None = ctx.run.backup
    if backup is None:
        return Outcome("fail", "This run has no backup to validate: create it first.")
    queued = validating.request_validation(ctx.run.started_by, backup, enqueue=False)
    ctx.log(f"validation #{queued.pk}: restoring backup #{backup.pk} into a scratch database …")
    jobs.run("validation", queued.pk)  # here, in the step's own job
    done = Validation.objects.get(pk=queued.pk)
    for c in done.checks:
        ctx.log(f"{'ok  ' if c['ok'] else 'FAIL'} {c['name']}: {c['found']}")
    evidence = {
        "validation": done.pk,
        "backup": backup.pk,
        "state": done.outcome,
        "restore_s": done.restore_s,
        "queries_s": done.queries_s,
        "checks": done.checks,
    }
    if done.outcome != "passed":
        return Outcome("fail", f"Validation #{done.pk} {done.outcome}: {done.error}", evidence)
    return Outcome("pass", f"Validation #{done.pk} of backup #{backup.pk} passed", evidence)


# --- Gates ---


@action("gates.preflight", "Pre-migration safety gates")
def preflight(ctx: Context) -> Outcome:
    from dashboard.jobs import lifecycle as jobs
    from dashboard.schema import analysis, gates

    reports = analysis.reports_for(ctx.db, ctx.run.revisions)
    done = gates.request_gate_run(
        ctx.run.started_by,
        ctx.db,
        revisions=ctx.run.revisions,
        tables=analysis.tables_touched(reports),
        enqueue=False,
    )
    jobs.run("gate_run", done.pk)  # here, in the step's own job
    done.refresh_from_db()
    results = done.results
    for r in results:
        ctx.log(f"{r['verdict']:4} {r['title']}: {r['summary']}")
    evidence = {"gate_run": done.pk, "gates": results}
    if not done.succeeded:
        return Outcome("fail", f"Gate run #{done.pk} {done.state}: {done.error}", evidence)
    failed = [r["title"] for r in results if r["verdict"] == "fail"]
    if failed:
        return Outcome("fail", f"Failed: {', '.join(failed)}", evidence)
    warned = [r["title"] for r in results if r["verdict"] == "warn"]
    summary = f"All gates pass{' with warnings: ' + ', '.join(warned) if warned else ''}"
    return Outcome(done.verdict, summary, evidence)


# --- Execution and integrity ---


def _validated_backup(run: Any) -> str:
    """'' when the run has a completed backup with a passed validation, else why not."""
    backup = run.backup
    if backup is None or not backup.completed:
        return "this run has no completed backup"
    if not backup.validations.passed().exists():
        return f"backup #{backup.pk} has no passed validation"
    return ""


def recover_migration(job: Any) -> Outcome:
    """The clean-up after a worker died mid-upgrade: its migrating session gone (ended after a
    grace when still there), the migration lock free, and the revision the database is at."""
    from dashboard.schema import execution, watch

    run = job.step.run
    found = watch.recover(run.database, dict(job.progress or {}))
    summary = found.sentence()
    if found.ok and run.target_revision:
        try:
            current = [r for r in (found.database_at or "").split(",") if r]
            pending = execution.revisions_to(run.database, current, run.target_revision)
        except Exception:  # noqa: BLE001 - the scripts may be unreadable here; say nothing more
            pending = None
        if pending:
            summary += f" Resume runs {', '.join(pending)}."
        elif pending == []:
            summary += f" Nothing is left to run: the database is at {run.target_revision}."
    return Outcome("pass" if found.ok else "fail", summary, found.to_json())


@action(
    "schema.upgrade",
    "Upgrade to the target revision",
    destructive=True,
    recover=recover_migration,
)
def upgrade(ctx: Context) -> Outcome:
    """The pending revisions, from the revision the database is at now (so a retry resumes
    after the last one that committed), guarded, watched (live progress on the run page) and
    abortable: an abort request stops it safely and the attempt ends cancelled, saying where the
    database is (:class:`Aborted`)."""
    from dashboard.schema import execution, watch
    from runbooks.live import JobChannel

    missing = _validated_backup(ctx.run)
    if missing:
        return Outcome("fail", f"Refused: {missing}. Nothing ran.")
    target = ctx.run.target_revision
    pending = execution.live_revisions_to(ctx.db, target)
    if pending != ctx.run.revisions:
        ctx.log(f"pending now: {', '.join(pending) or 'none'}")
    if not pending:
        return Outcome("pass", f"At {target} already: nothing left to run.", {"target": target})
    refused = _snapshot_before(ctx)
    if refused:
        return Outcome("fail", f"Refused: {refused}. Nothing ran.", {"target": target})
    channel: watch.Channel = JobChannel(ctx) if ctx.job is not None else _Nowhere()
    _watch_triggers(ctx, pending)
    try:
        with watch.Watcher(ctx.db, channel, log=ctx.log) as watcher:
            steps = execution.migrate(
                ctx.db,
                pending,
                log=ctx.log,
                on_progress=watcher.on_progress,
                should_stop=watcher.should_stop,
                before_statement=watcher.before_statement,
            )
    except execution.ExecutionError as exc:
        return Outcome("fail", str(exc), {"target": target, "pending": pending})
    finally:
        from dashboard.triggers import watch as triggers

        triggers.executed(ctx.run.pk)
    evidence: dict[str, Any] = {
        "revisions": [s.to_json() for s in steps],
        "target": target,
        "pending": pending,
        "watch": watcher.report(),
    }
    failed = [s for s in steps if not s.ok]
    abort = watcher.abort_report
    if abort is not None and (failed or len(steps) < len(pending)):
        evidence["abort"] = abort.to_json()
        summary = abort.sentence()
        if abort.version_now is not None:
            left = execution.revisions_to(
                ctx.db, [r for r in abort.version_now.split(",") if r], target
            )
            summary += f" Resume runs {', '.join(left)}." if left else ""
        ctx.log(summary)
        raise Aborted(Outcome("fail", summary, evidence))
    if failed:
        return Outcome("fail", f"{failed[0].revision} failed: {failed[0].error}", evidence)
    total = sum(s.seconds for s in steps)
    late = " (an abort came after the last revision had committed)" if abort else ""
    return Outcome(
        "pass", f"At {target}: {len(steps)} revision(s) in {total:.2f} s{late}", evidence
    )


def _watch_triggers(ctx: Context, pending: list[str]) -> None:
    """Open the run's rollback-trigger watch (kept when the upgrade resumes)."""
    from dashboard.schema.rehearsal import latest_rehearsal
    from dashboard.triggers import watch as triggers

    rehearsed = latest_rehearsal(ctx.db, list(ctx.run.revisions))
    triggers.start(
        ctx.db,
        ctx.run.pk,
        run_url=ctx.run.get_absolute_url(),
        revisions=list(ctx.run.revisions),
        snapshot=ctx.run.snapshot_before,
        rehearsed_seconds=rehearsed.total_seconds if rehearsed else None,
    )
    ctx.log(f"rollback triggers watch run #{ctx.run.pk} (see the database's trigger page)")


def _snapshot_before(ctx: Context) -> str:
    """Snapshot the critical tables before the first revision runs (once: a resumed upgrade
    keeps the snapshot of before the run); '' when taken or kept, else why it could not be."""
    from dashboard.schema import dataloss

    run = ctx.run
    if run.snapshot_before_id is not None or not ctx.db.critical_tables:
        return ""
    try:
        snap = dataloss.take(ctx.db, f"before run #{run.pk}")
    except (pg.Error, SecretError) as exc:
        return f"the critical tables could not be snapshot ({exc})"
    run.snapshot_before = snap
    run.save(update_fields=["snapshot_before"])
    ctx.log(
        f"snapshot of {len(snap.tables)} critical table(s) before the run in {snap.seconds:.2f} s"
    )
    return ""


class _Nowhere:
    """No job row to show progress on (an action run outside a job)."""

    def publish(self, snapshot: dict[str, Any]) -> None:
        pass

    def stop_request(self) -> Any:
        return None


@action("integrity.verify", "Verify integrity after the migration")
def verify_integrity(ctx: Context) -> Outcome:
    """No rows lost from the critical tables since the run's backup, no orphaned rows for any
    foreign key, and the database at the target revision."""
    from dashboard.schema import dataloss

    backup: Backup | None = ctx.run.backup
    password = credentials.password(ctx.db)
    checks: list[dict[str, Any]] = []
    evidence: dict[str, Any] = {}
    snap = ctx.run.snapshot_before
    if snap is not None:
        found = dataloss.compare(ctx.db, snap, list(ctx.run.revisions))
        evidence["data_loss"] = found.to_json() | {"snapshot": snap.pk}
        for f in found.findings:
            checks.append({"name": f"data in {f.qualified}", "ok": f.declared, "now": f.sentence()})
        if not found.findings:
            checks.append({"name": "data since the snapshot", "ok": True, "now": found.summary()})
    counts = {} if snap is not None else (backup.row_counts if backup else {})
    with pg.connect(ctx.db.dsn, password, timeout=settings.RUNWAY_CONNECT_TIMEOUT) as conn:
        for table, before in counts.items():
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
    evidence["checks"] = checks
    if "data_loss" in evidence and not evidence["data_loss"]["lossless"]:
        return Outcome("fail", found.summary(), evidence)
    if bad:
        return Outcome("fail", f"Integrity broken: {', '.join(bad)}", evidence)
    return Outcome("pass", f"{len(checks)} integrity checks hold", evidence)


@action("database.check", "Check the connection and read the current revision")
def check_connection(ctx: Context) -> Outcome:
    from dashboard.databases import checks
    from dashboard.databases.models import ConnectionCheck
    from dashboard.jobs import lifecycle as jobs

    queued = checks.request_check(ctx.run.started_by, ctx.db)
    ran = jobs.run("connection_check", queued.pk)
    done = ran if isinstance(ran, ConnectionCheck) else queued
    done.refresh_from_db()
    evidence = {"check": done.pk, "state": done.outcome, "current": done.current_revisions}
    if not done.connected:
        return Outcome("fail", done.message or done.error, evidence)
    return Outcome("pass", done.message, evidence)


# --- Automatic rollback (runbooks/rollback.py: the failed-migration-rollback runbook) ---


def _failed_run(ctx: Context) -> Any:
    failed = ctx.run.rollback_of
    if failed is None:
        raise _NotARollback()
    return failed


class _NotARollback(Exception):  # noqa: N818 - what happened, not a fault
    pass


NOT_A_ROLLBACK = Outcome(
    "fail",
    "This run rolls back no run: a rollback starts from the failed run (a trigger, or "
    "runbooks.rollback.start_rollback). Nothing ran.",
)


def _ending(ctx: Context, outcome: Outcome) -> Outcome:
    """A rollback step that ends the rollback: audited and notified with its outcome."""
    from runbooks import rollback

    verdict = {"pass": "succeeded", "warn": "succeeded with warnings"}.get(
        outcome.verdict, "failed"
    )
    rollback.ended(ctx.run, verdict, outcome.summary, {"path": ctx.run.rollback_plan.get("path")})
    return outcome


@action("rollback.hold", "Grace period, stop the upgrade, choose downgrade or restore")
def rollback_hold(ctx: Context) -> Outcome:
    """Waits out the grace period (a lead may cancel it), waits for the failed run's upgrade to
    stop, ends the failed run and chooses the path from the database's revision now."""
    from runbooks import rollback

    try:
        failed = _failed_run(ctx)
    except _NotARollback:
        return NOT_A_ROLLBACK
    rb = ctx.run
    remaining = (rb.grace_until - timezone.now()).total_seconds() if rb.grace_until else 0.0
    if remaining > 0:
        ctx.log(f"grace period: {remaining:.0f} s in which a lead may cancel; nothing is touched")
        ctx.wait_for_cancel(remaining)
        ctx.check_cancelled()
    problem = rollback.wait_for_upgrade(failed, ctx.log)
    if problem:
        return _ending(ctx, Outcome("fail", f"Refused: {problem}. Nothing was rolled back."))
    ctx.check_cancelled()
    refused = rollback.Hold.begin(rb, ctx.log)
    if refused:
        return Outcome("fail", f"Stopped: {refused}. Nothing was rolled back.")
    try:
        plan = rollback.choose(ctx.db, failed, ctx.log)
    except (pg.Error, SecretError) as exc:
        return _ending(ctx, Outcome("fail", f"The database could not be read: {exc}"))
    if plan["path"] == "restore":
        missing = _validated_backup(failed)
        if missing:
            plan["why"].append(f"and {missing}: no restore possible")
            rb.rollback_plan = rb.rollback_plan | plan
            rb.save(update_fields=["rollback_plan"])
            return _ending(ctx, Outcome("fail", f"No way back: {'; '.join(plan['why'])}.", plan))
        plan["backup"] = failed.backup_id
    rb.rollback_plan = rb.rollback_plan | plan
    rb.save(update_fields=["rollback_plan"])
    undo = ", ".join(plan["undo"])
    summary = {
        "downgrade": f"Downgrade {undo} to {', '.join(plan['target']) or 'base'}",
        "restore": f"Restore backup #{failed.backup_id}: {'; '.join(plan['why'])}",
        "none": "Nothing to undo: the database is at the pre-run revision",
    }[plan["path"]]
    return Outcome("pass", summary, plan)


@action(
    "rollback.perform",
    "Roll back: downgrade, or restore the pre-migration backup",
    destructive=True,
)
def rollback_perform(ctx: Context) -> Outcome:
    """The chosen path: the downgrade under guarded execution (watched, abortable), or the
    restore of the failed run's validated backup into the same database."""
    from dashboard.backups import pipeline
    from dashboard.schema import execution, watch
    from runbooks import rollback
    from runbooks.live import JobChannel

    try:
        failed = _failed_run(ctx)
    except _NotARollback:
        return NOT_A_ROLLBACK
    plan = dict(ctx.run.rollback_plan)
    path = plan.get("path")
    if path == "none":
        return Outcome("pass", "Nothing to undo: the database is at the pre-run revision.", plan)
    if path == "downgrade":
        undo = list(plan["undo"])
        channel: watch.Channel = JobChannel(ctx) if ctx.job is not None else _Nowhere()
        try:
            with watch.Watcher(ctx.db, channel, log=ctx.log) as watcher:
                steps = execution.migrate(
                    ctx.db,
                    undo,
                    direction="downgrade",
                    log=ctx.log,
                    on_progress=watcher.on_progress,
                    should_stop=watcher.should_stop,
                    before_statement=watcher.before_statement,
                )
        except execution.ExecutionError as exc:
            return _ending(ctx, Outcome("fail", f"The downgrade did not run: {exc}", plan))
        evidence = plan | {"revisions": [s.to_json() for s in steps], "watch": watcher.report()}
        bad = [s for s in steps if not s.ok]
        if bad or len(steps) < len(undo):
            where = bad[0] if bad else None
            why = f"undoing {where.revision} failed: {where.error}" if where else "it stopped"
            return _ending(ctx, Outcome("fail", f"The downgrade did not finish: {why}", evidence))
        total = sum(s.seconds for s in steps)
        return Outcome(
            "pass",
            f"Downgraded {len(steps)} revision(s) to {', '.join(plan['target']) or 'base'} "
            f"in {total:.2f} s",
            evidence,
        )
    if path == "restore":
        backup = failed.backup
        if backup is None:
            return _ending(ctx, Outcome("fail", "The failed run has no backup to restore.", plan))
        lifecycle = getattr(ctx, "_lifecycle", None)

        def tick() -> None:
            if lifecycle is not None:
                lifecycle.check_cancelled()

        try:
            done = rollback.restore_into(ctx.db, backup, ctx.log, tick)
        except (pipeline.BackupError, pg.ToolFailed, pg.Error, SecretError) as exc:
            return _ending(
                ctx,
                Outcome(
                    "fail",
                    f"The restore failed and was rolled back (nothing changed): {exc}",
                    plan,
                ),
            )
        evidence = plan | {"restore": done}
        not_ended = [s["pid"] for s in done["sessions_ended"] if not s["ended"]]
        summary = (
            f"Restored backup #{backup.pk} in {done['seconds']:.2f} s; "
            f"{len(done['sessions_ended'])} other session(s) ended"
        )
        if not_ended:
            return Outcome("warn", summary + f"; could not end {not_ended}", evidence)
        return Outcome("pass", summary, evidence)
    return _ending(ctx, Outcome("fail", "No path was chosen: the hold step did not finish."))


@action("rollback.verify", "Integrity against the pre-run snapshot")
def rollback_verify(ctx: Context) -> Outcome:
    """The database at the pre-run revision, no orphaned rows, and the failed run's pre-run
    snapshot compared: a downgrade gives back every row and value that existed before the run;
    a restore gives back the backup (rows written after it are gone)."""
    from dashboard.schema import dataloss

    try:
        failed = _failed_run(ctx)
    except _NotARollback:
        return NOT_A_ROLLBACK
    plan = dict(ctx.run.rollback_plan)
    path = plan.get("path")
    checks: list[dict[str, Any]] = []
    evidence: dict[str, Any] = {"path": path}
    snap = failed.snapshot_before
    found = None
    if snap is not None:
        found = dataloss.compare(ctx.db, snap, [])
        evidence["data_loss"] = found.to_json() | {"snapshot": snap.pk}
        for f in found.findings:
            checks.append({"name": f"data in {f.qualified}", "ok": False, "now": f.sentence()})
        if not found.findings:
            checks.append({"name": "data of before the run", "ok": True, "now": found.summary()})
    backup = failed.backup
    password = credentials.password(ctx.db)
    with pg.connect(ctx.db.dsn, password, timeout=settings.RUNWAY_CONNECT_TIMEOUT) as conn:
        if path == "restore" and backup is not None:
            for table, before in backup.row_counts.items():
                now = pg.row_counts(conn, [table])[table]
                checks.append(
                    {"name": f"rows in {table} (backup #{backup.pk})", "ok": now == before,
                     "before": before, "now": now}
                )  # fmt: skip
        for fk in pg.foreign_keys(conn):
            orphans = pg.orphan_count(conn, fk)
            checks.append({"name": f"orphaned rows: {fk}", "ok": orphans == 0, "now": orphans})
        revision = pg.alembic_revision(conn)
    expected = ",".join(failed.from_revisions)
    checks.append(
        {"name": "Alembic revision (before the run)", "ok": set(revision.split(",")) ==
         set(expected.split(",")), "before": expected, "now": revision}
    )  # fmt: skip
    for c in checks:
        ctx.log(f"{'ok  ' if c['ok'] else 'FAIL'} {c['name']}: {c['now']}")
    evidence["checks"] = checks
    bad = [c["name"] for c in checks if not c["ok"]]
    lost_note = ""
    if path == "restore" and backup is not None:
        taken = backup.started_at.strftime("%Y-%m-%d %H:%M:%S %Z") if backup.started_at else "?"
        lost_note = (
            f" Rows the application wrote after backup #{backup.pk} was taken ({taken}) are "
            "not in it: the restore lost them, as expected."
        )
        evidence["lost_after_backup"] = lost_note.strip()
    if bad:
        return _ending(
            ctx, Outcome("fail", f"Rolled back, but: {', '.join(bad)}.{lost_note}", evidence)
        )
    what = found.summary() if found is not None else "no snapshot to compare"
    return _ending(
        ctx,
        Outcome("pass", f"At {revision or 'base'}, {len(checks)} checks hold ({what}).{lost_note}",
                evidence),
    )  # fmt: skip
