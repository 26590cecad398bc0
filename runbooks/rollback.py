"""Automatic rollback of a deployment: the failed-migration-rollback runbook started on its own.

:func:`start_rollback` (a firing "roll back" trigger, or a person) creates the rollback run,
linked to the failed run (``Run.rollback_of``), stops the failed run's upgrade if it is still
running (the safe abort of ``engine.abort_step``), and queues the rollback's first step. Its
steps are ``run_step`` jobs on the workers like any run's:

1. ``rollback.hold``: waits out the grace period (a lead may cancel meanwhile:
   :func:`cancel_rollback`; nothing has touched the database), waits for the stopped upgrade to
   end, ends the failed run, then chooses the path (:func:`choose`) from the revision the
   database is at now.
2. ``rollback.perform``: a downgrade to the pre-run revision under guarded execution when every
   revision on the way back has a working downgrade, none is declared lossy and no row of the
   pre-run snapshot is lost now; otherwise a restore of the run's validated pre-migration backup
   into the same database (:func:`restore_into`: the database's other sessions ended, then
   ``pg_restore --clean --if-exists --single-transaction``: the restore commits whole or not at
   all).
3. ``rollback.verify``: compares with the failed run's pre-run snapshot and checks the revision.

Every act is audited (``runbook.rollback_*``) with the ``rollback.started`` and
``rollback.ended`` notifications written in the same transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from dashboard.accounts.roles import Role, role_of
from dashboard.audit.chain import record
from dashboard.backups import validation
from dashboard.backups.models import Backup
from dashboard.databases import credentials
from dashboard.databases.models import ManagedDatabase
from dashboard.jobs.models import JobState
from dashboard.lib import gpg, pg
from dashboard.notify import events
from dashboard.notify.outbox import emit
from runbooks import engine, library
from runbooks.models import Run, RunState, StepJob, StepState

RUNBOOK = "failed-migration-rollback"
MAX_GRACE = 24 * 3600
MAX_TEXT = engine.MAX_TEXT
# How long the hold step waits for the stopped upgrade's job to end.
STOP_TIMEOUT = 300.0
POLL = 0.5


class RollbackError(ValueError):
    """The request was refused; the message says why and nothing changed."""


# --- Starting and cancelling ---


def active_rollback(run: Run) -> Run | None:
    return run.rollbacks.filter(state=RunState.ACTIVE).order_by("pk").first()


def start_rollback(
    run: Run | int,
    reason: str,
    *,
    source: str,
    actor: User | None = None,
    grace_seconds: int | None = None,
) -> Run:
    """Start the failed-migration-rollback runbook for ``run`` (a deployment that ran, or is
    running, its upgrade), on its own: returns the new rollback Run. ``source`` says who asked
    ("trigger:<rule id> <signal>", "manual"). Idempotent: a second call while one rollback of
    ``run`` is active returns that one. Audited (runbook.rollback_started with reason and
    source), emits notify 'rollback.started'."""
    reason = (reason or "").strip()
    source = (source or "").strip()
    if not reason:
        raise RollbackError("Say why the run is rolled back.")
    if len(reason) > MAX_TEXT:
        raise RollbackError(f"Keep the reason under {MAX_TEXT} characters.")
    if not source:
        raise RollbackError("Say who asks for the rollback (source).")
    grace = 0 if grace_seconds is None else grace_seconds
    if not isinstance(grace, int) or isinstance(grace, bool) or not 0 <= grace <= MAX_GRACE:
        raise RollbackError(f"The grace period is a whole number of 0 to {MAX_GRACE} seconds.")
    if actor is not None:
        role = role_of(actor)
        if role is None or role < Role.ENGINEER:
            raise RollbackError("Only an engineer (or higher) can start a rollback.")
    book = library.get(RUNBOOK)
    run_id = run.pk if isinstance(run, Run) else run  # the triggers' hook may pass the id
    with transaction.atomic():
        failed = Run.objects.select_for_update().select_related("database").get(pk=run_id)
        if failed.is_rollback:
            raise RollbackError(f"Run #{failed.pk} is itself a rollback: it is not rolled back.")
        existing = active_rollback(failed)
        if existing is not None:
            return existing
        if not failed.revisions:
            raise RollbackError(
                f"Run #{failed.pk} ran no revisions (it is no deployment): nothing to roll back."
            )
        db = failed.database
        now = timezone.now()
        rollback = Run.objects.create(
            runbook_id=book.id,
            runbook_title=book.title,
            runbook=book.to_json(),
            database=db,
            target_revision=",".join(failed.from_revisions),
            from_revisions=[],
            revisions=[],
            # A person who asked, else the failed run's own starter (the run needs one); who
            # really asked is ``rollback_source``.
            started_by=actor if actor is not None else failed.started_by,
            rollback_of=failed,
            rollback_source=source[:200],
            rollback_reason=reason,
            grace_until=now + timedelta(seconds=grace),
        )
        engine.create_steps(rollback, book)
        details = {
            "rollback_of": failed.pk,
            "reason": reason,
            "source": source,
            "grace_seconds": grace,
            "database": db.name,
            "pre_run": failed.from_revisions,
        }
        record(actor, "runbook.rollback_started", rollback, details=details)
        emit(
            events.ROLLBACK_STARTED,
            db,
            f"Rollback started: run #{failed.pk} on {db.name}",
            f"Run #{rollback.pk} rolls back run #{failed.pk} ({failed.runbook_title} to "
            f"{failed.target_revision}) on {db.name} ({db.environment}) to "
            f"{', '.join(failed.from_revisions) or 'base'}. Why: {reason}. Asked by {source}."
            + (f" A lead may cancel it within {grace} s." if grace else ""),
            rollback.get_absolute_url(),
            details | {"run": rollback.pk},
        )
        _stop_upgrade(actor, failed, rollback, reason)
        engine.advance(rollback.pk)
    rollback.refresh_from_db()
    return rollback


def _stop_upgrade(actor: User | None, failed: Run, rollback: Run, reason: str) -> None:
    """The failed run's upgrade, if still queued or running, is asked to stop safely."""
    if not failed.is_active:
        return
    for step in failed.steps.filter(state=StepState.STARTED, action="schema.upgrade"):
        try:
            engine.abort_step(actor, failed, step, f"rolled back by run #{rollback.pk}: {reason}")
        except engine.RunError:
            continue  # its job ended meanwhile


def cancel_rollback(actor: User, rollback: Run, reason: str) -> Run:
    """A lead cancels within the grace period (before anything touched the database); after
    it, refused with a clear message."""
    reason = (reason or "").strip()
    if not reason:
        raise RollbackError("Say why the rollback is cancelled.")
    if len(reason) > MAX_TEXT:
        raise RollbackError(f"Keep the reason under {MAX_TEXT} characters.")
    role = role_of(actor)
    if role is None or role < Role.LEAD:
        raise RollbackError("Only a lead (or higher) can cancel a rollback.")
    with transaction.atomic():
        rb = Run.objects.select_for_update().select_related("database").get(pk=rollback.pk)
        if not rb.is_rollback:
            raise RollbackError(f"Run #{rb.pk} is not a rollback: there is nothing to cancel.")
        if not rb.is_active:
            raise RollbackError(
                f"Rollback run #{rb.pk} is {rb.get_state_display().lower()}: nothing to cancel."
            )
        if rb.rollback_plan or rb.grace_until is None or timezone.now() >= rb.grace_until:
            ended = (
                timezone.localtime(rb.grace_until).strftime("%H:%M:%S") if rb.grace_until else "?"
            )
            raise RollbackError(
                f"Too late: the grace period of rollback run #{rb.pk} ended at {ended} and the "
                "rollback has begun. Abort its running step to stop it."
            )
        who = actor.get_username()
        rb.end(RunState.ABORTED, f"Cancelled by {who} within the grace period: {reason}")
        rb.cancelled_by = actor
        rb.save(update_fields=["cancelled_by"])
        withdrawn = []
        stop = {"by": who, "reason": f"the rollback was cancelled: {reason}"}
        for step in rb.steps.filter(state=StepState.STARTED):
            done = engine._withdraw(step, stop)
            if done is None:
                continue
            if done["state"] == JobState.CANCELLED:
                step.lock()
            withdrawn.append(done)
        details = {"rollback_of": rb.rollback_of_id, "reason": reason, "jobs": withdrawn}
        record(actor, "runbook.rollback_cancelled", rb, details=details)
        _notify_ended(rb, "cancelled", f"Cancelled by {who} within the grace period: {reason}")
    return rb


def _notify_ended(rb: Run, outcome: str, summary: str, extra: dict[str, Any] | None = None) -> None:
    db = rb.database
    emit(
        events.ROLLBACK_ENDED,
        db,
        f"Rollback {outcome}: run #{rb.rollback_of_id} on {db.name}",
        f"Rollback run #{rb.pk} of run #{rb.rollback_of_id} on {db.name} ({db.environment}) "
        f"ended: {outcome}. {summary}",
        rb.get_absolute_url(),
        {
            "run": rb.pk,
            "rollback_of": rb.rollback_of_id,
            "database": db.name,
            "outcome": outcome,
            "summary": summary[:2000],
            **(extra or {}),
        },
    )


def ended(rb: Run, outcome: str, summary: str, extra: dict[str, Any] | None = None) -> None:
    """The rollback's end (passed, warned, failed), audited with its notification."""
    with transaction.atomic():
        details = {"rollback_of": rb.rollback_of_id, "outcome": outcome, "summary": summary}
        record(None, "runbook.rollback_ended", rb, details=details | (extra or {}))
        _notify_ended(rb, outcome, summary, extra)


# --- The hold: grace, the upgrade stopped, the failed run ended, the path chosen ---


class Hold:
    """What the hold step tells the steps after it (``Run.rollback_plan``)."""

    @staticmethod
    def begin(rb: Run, log: Callable[[str], None]) -> str:
        """Past the grace: mark the rollback begun (no cancel from now on) and end the failed
        run. '' when begun, else why not (cancelled meanwhile)."""
        with transaction.atomic():
            locked = Run.objects.select_for_update().get(pk=rb.pk)
            if not locked.is_active:
                return f"rollback run #{locked.pk} is {locked.get_state_display().lower()}"
            locked.rollback_plan = {"began_at": timezone.now().isoformat()}
            locked.save(update_fields=["rollback_plan"])
            of = locked.rollback_of_id
            failed = Run.objects.select_for_update().filter(pk=of).first() if of else None
            if failed is None:
                return f"run #{locked.rollback_of_id} is gone"
            why = f"Rolled back by run #{locked.pk}: {locked.rollback_reason}"
            was = failed.state
            stopped = failed.end(RunState.ABORTED, why[:5000])
            record(
                None,
                "run.rolled_back",
                failed,
                details={"rollback": locked.pk, "state_before": was, "ended": stopped},
            )
            if stopped:
                log(f"run #{failed.pk} ended: {why}")
            rb.rollback_plan = locked.rollback_plan
        return ""


def wait_for_upgrade(failed: Run, log: Callable[[str], None], timeout: float = STOP_TIMEOUT) -> str:
    """Wait for the failed run's upgrade job (asked to stop) to end, and for any other of its
    steps running now (its integrity check must not read the database while it is restored);
    '' when none is."""
    deadline = time.monotonic() + timeout
    said = False
    while True:
        live = StepJob.objects.filter(
            Q(step__action="schema.upgrade", state__in=(JobState.QUEUED, JobState.RUNNING))
            | Q(state=JobState.RUNNING),
            step__run=failed,
        ).first()
        if live is None:
            return ""
        if not said:
            log(f"waiting for run #{failed.pk}'s {live.step.step_id} (job #{live.pk}) to end …")
            said = True
        if time.monotonic() > deadline:
            return (
                f"run #{failed.pk}'s {live.step.step_id} (job #{live.pk}) had not ended after "
                f"{timeout:g} s"
            )
        time.sleep(POLL)


def live_revision(db: ManagedDatabase) -> list[str]:
    with pg.connect(
        db.dsn, credentials.password(db), timeout=settings.RUNWAY_CONNECT_TIMEOUT
    ) as conn:
        return [r for r in pg.alembic_revision(conn).split(",") if r]


def choose(db: ManagedDatabase, failed: Run, log: Callable[[str], None]) -> dict[str, Any]:
    """Downgrade or restore, and why: from the revision the database is at now back to the
    failed run's pre-run revision."""
    from dashboard.schema import dataloss, execution
    from dashboard.schema.status import scripts_of

    current = live_revision(db)
    target = list(failed.from_revisions)
    plan: dict[str, Any] = {"database_at": current, "target": target, "undo": [], "why": []}
    why: list[str] = plan["why"]
    log(f"the database is at {', '.join(current) or 'base'}; before run #{failed.pk}: "
        f"{', '.join(target) or 'base'}")  # fmt: skip
    if len(target) > 1:
        why.append(f"the pre-run revision has {len(target)} heads: a downgrade takes one target")
    else:
        tree = scripts_of(db)
        unknown = [r for r in current if r not in tree.revisions]
        if unknown:
            why.append(f"the scripts do not define {', '.join(unknown)}")
        else:
            undo = execution.revisions_back_to(db, current, target[0] if target else None)
            plan["undo"] = undo
            missing = [r for r in undo if not tree.revisions[r].has_downgrade]
            if missing:
                why.append(f"no working downgrade in {', '.join(missing)}")
            lossy = dataloss.declared(db, undo)
            if lossy:
                named = sorted({e.revision for e in lossy})
                why.append(f"declared lossy (# runway: expect) in {', '.join(named)}")
    snap = failed.snapshot_before
    if snap is not None and not why:
        found = dataloss.compare(db, snap, [])
        plan["loss_now"] = found.to_json()
        if not found.lossless:
            why.append(f"rows or values of before the run are gone now ({found.summary()})")
    if why:
        plan["path"] = "restore"
    elif not plan["undo"]:
        plan["path"] = "none"
    else:
        plan["path"] = "downgrade"
    log(f"path: {plan['path']}" + (f" ({'; '.join(why)})" if why else ""))
    return plan


# --- Restore into the same database ---


def restore_into(
    db: ManagedDatabase, backup: Backup, log: Callable[[str], None], tick: Callable[[], None]
) -> dict[str, Any]:
    """Restore ``backup`` into ``db`` itself: its other sessions ended, then the stored object
    streamed through ``gpg --decrypt | zstd -d | pg_restore --clean --if-exists
    --single-transaction`` (one transaction: on any error nothing changed). What it did."""
    passphrase = gpg.check_passphrase(settings.RUNWAY_BACKUP_PASSPHRASE)
    password = credentials.password(db)
    started = time.monotonic()
    with pg.connect(db.dsn, password, timeout=settings.RUNWAY_CONNECT_TIMEOUT) as conn:
        conn.autocommit = True
        version = pg.server_version_num(conn)
        ended = pg.terminate_other_sessions(conn)
    for s in ended:
        log(
            f"session {s['pid']} ({s['application'] or s['user']}, {s['state']}) "
            + ("ended" if s["ended"] else "could NOT be ended")
        )
    log(f"restoring backup #{backup.pk} into {db.name} (one transaction) …")
    sha = validation.restore_backup(
        backup,
        db.dsn,
        password,
        passphrase,
        version,
        tick,
        clean=True,
        options="-c statement_timeout=0",
    )
    seconds = round(time.monotonic() - started, 3)
    log(f"restored backup #{backup.pk} in {seconds:.2f} s")
    return {
        "backup": backup.pk,
        "backup_taken_at": backup.started_at.isoformat() if backup.started_at else None,
        "sha256_read": sha,
        "sha256_ok": sha == backup.sha256,
        "sessions_ended": ended,
        "seconds": seconds,
    }
