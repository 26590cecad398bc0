"""The runbook engine: starting a run, opening phases in order, queueing automated steps on the
workers, ticking checks, approvals pinned to what was reviewed, retries and aborts.

Within the open phase, checks can be ticked in any order; actions and approvals go one after the
other in the runbook's order (an approval is given on the backup and gates before it). A phase
completes when its required steps are done; the next one then opens. Every change writes its
audit event in the same transaction, and the run row is locked while it changes, so two workers
or two people never advance the same run at once.
"""

from __future__ import annotations

import logging
import threading
import traceback
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from dashboard.accounts.roles import Role, role_of
from dashboard.audit.chain import Actor, record
from dashboard.databases.models import ManagedDatabase
from runbooks.actions import REGISTRY, Context, Outcome
from runbooks.loader import Runbook
from runbooks.models import Approval, Decision, Run, RunState, StepRun, StepState

logger = logging.getLogger(__name__)

MAX_TEXT = 2000
SEQUENTIAL = ("action", "approval")


class RunError(ValueError):
    """The request was refused; the message says why and nothing changed."""


# --- Starting ---


def start_run(actor: Actor, book: Runbook, db: ManagedDatabase, target: str = "") -> Run:
    from dashboard.schema import analysis, execution

    target = target.strip()
    revisions: list[str] = []
    current: list[str] = []
    if book.needs_target:
        if not target:
            raise RunError("Choose the target revision.")
        if analysis.known_revision(db, target) is None:
            raise RunError(f"{target!r} is not a revision in {db.name}'s scripts.")
        pending = analysis.pending_of(db)
        if not pending.known:
            raise RunError(f"{db.name}'s current revision is unknown: test its connection first.")
        current = pending.current
        revisions = execution.revisions_to(db, current, target)
        if not revisions:
            raise RunError(f"{db.name} is already at {target} or past it: nothing to run.")
    elif target:
        raise RunError(f"{book.title} takes no target revision.")
    busy = Run.objects.filter(database=db, state=RunState.ACTIVE).first()
    if busy is not None:
        raise RunError(
            f"Run #{busy.pk} ({busy.runbook_title}) is still active on {db.name}: "
            "finish or abort it first."
        )
    with transaction.atomic():
        run = Run.objects.create(
            runbook_id=book.id,
            runbook_title=book.title,
            runbook=book.to_json(),
            database=db,
            target_revision=target,
            from_revisions=current,
            revisions=revisions,
            started_by=actor,
        )
        needed = 0
        for p_index, phase in enumerate(book.phases):
            for position, step in enumerate(phase.steps):
                count = step.count
                if step.kind == "approval" and db.is_production:
                    count = max(count, settings.RUNWAY_PRODUCTION_APPROVALS)
                needed += count
                StepRun.objects.create(
                    run=run,
                    phase_index=p_index,
                    position=position,
                    step_id=step.id,
                    kind=step.kind,
                    title=step.title,
                    help=step.help,
                    required=step.required,
                    action=step.action,
                    role=step.role,
                    count=count,
                    four_eyes=step.four_eyes,
                )
        run.required_approvals = needed
        run.save(update_fields=["required_approvals"])
        record(
            actor,
            "run.started",
            run,
            details={
                "runbook": book.id,
                "database": db.name,
                "target": target,
                "from": current,
                "revisions": revisions,
            },
        )
        _advance(run)
    return run


# --- Advancing ---


def advance(run_id: int) -> None:
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run_id)
        _advance(run)


def _advance(run: Run) -> None:
    """Open what can open, queue what can run, close completed phases. Call in a transaction
    holding the run's row lock."""
    from runbooks.tasks import run_step

    while run.state == RunState.ACTIVE:
        steps = list(run.steps.filter(phase_index=run.phase_index).order_by("position"))
        if not steps:
            break
        for step in steps:
            if step.kind == "check" and step.state == StepState.LOCKED:
                _set(step, StepState.OPEN)
        blocked = False
        for step in steps:
            if step.kind not in SEQUENTIAL or step.is_done:
                continue
            if blocked:
                if step.state != StepState.WAITING:
                    _set(step, StepState.WAITING)
                continue
            blocked = True
            if step.kind == "approval":
                if step.state != StepState.OPEN:
                    _set(step, StepState.OPEN)
                if _approved(run, step):
                    _finish_approval(run, step)
                    blocked = False
            elif step.state in (StepState.LOCKED, StepState.WAITING, StepState.OPEN):
                step.state = StepState.QUEUED
                step.save(update_fields=["state"])
                run_step.delay_on_commit(step.pk)
        if not all(s.is_done for s in steps if s.required):
            break
        phase = run.phases[run.phase_index]
        record(
            None,
            "run.phase_completed",
            run,
            details={"phase": phase["id"], "title": phase["title"]},
        )
        if run.phase_index + 1 >= len(run.phases):
            run.state = RunState.COMPLETED
            run.finished_at = timezone.now()
            run.save(update_fields=["state", "finished_at"])
            record(None, "run.completed", run, details={"target": run.target_revision})
            break
        run.phase_index += 1
        run.save(update_fields=["phase_index"])


def _set(step: StepRun, state: str) -> None:
    step.state = state
    step.save(update_fields=["state"])


# --- Checks ---


def tick(actor: Actor, run: Run, step: StepRun, note: str) -> StepRun:
    note = note.strip()
    if len(note) > MAX_TEXT:
        raise RunError(f"Keep the note under {MAX_TEXT} characters.")
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run.pk)
        step = StepRun.objects.get(pk=step.pk, run=run)
        _must_be_active(run)
        if step.kind != "check":
            raise RunError(f"{step.title!r} is not a check: it cannot be ticked.")
        if step.state == StepState.DONE:
            raise RunError(
                f"{step.title!r} was already ticked by {step.done_by} "
                f"at {step.finished_at:%H:%M:%S}."
            )
        if step.phase_index != run.phase_index:
            raise RunError(f"{step.title!r} belongs to a phase that is not open.")
        step.state = StepState.DONE
        step.note = note
        step.done_by = actor  # type: ignore[assignment]
        step.finished_at = timezone.now()
        step.save(update_fields=["state", "note", "done_by", "finished_at"])
        record(actor, "run.step_ticked", run, details={"step": step.step_id, "note": note})
        _advance(run)
    return step


def _must_be_active(run: Run) -> None:
    if run.state != RunState.ACTIVE:
        raise RunError(f"Run #{run.pk} is {run.get_state_display().lower()}: nothing can change.")


# --- Approvals ---


def _holds(run: Run, step: StepRun, approval: Approval) -> bool:
    if approval.decision != Decision.APPROVE or approval.void_reasons(run):
        return False
    return not (step.four_eyes and approval.user_id == run.started_by_id)


def _approved(run: Run, step: StepRun) -> bool:
    valid = {a.user_id for a in step.approvals.all() if _holds(run, step, a)}
    return len(valid) >= step.count


def _finish_approval(run: Run, step: StepRun) -> None:
    step.state = StepState.DONE
    step.finished_at = timezone.now()
    valid = [a for a in step.approvals.select_related("user") if _holds(run, step, a)]
    step.summary = "Approved by " + ", ".join(a.user.get_username() for a in valid)
    step.save(update_fields=["state", "finished_at", "summary"])


def decide(actor: Any, run: Run, step: StepRun, decision: str, comment: str) -> Approval:
    """A lead approves or rejects at an approval step; pinned to the target revision, the risk
    report's hash and the backup the run has now."""
    from dashboard.schema import analysis

    comment = comment.strip()
    if not comment:
        raise RunError("A comment is required: say what you checked.")
    if len(comment) > MAX_TEXT:
        raise RunError(f"Keep the comment under {MAX_TEXT} characters.")
    if decision not in Decision.values:
        raise RunError("Approve or reject.")
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run.pk)
        step = StepRun.objects.get(pk=step.pk, run=run)
        _must_be_active(run)
        if step.kind != "approval":
            raise RunError(f"{step.title!r} is not an approval step.")
        if step.state != StepState.OPEN:
            raise RunError(f"{step.title!r} is not waiting for a decision ({step.state}).")
        needed = Role[step.role.upper()]
        role = role_of(actor)
        if role is None or role < needed:
            raise RunError(f"Only a {step.role} (or higher) can decide {step.title!r}.")
        if step.four_eyes and actor.pk == run.started_by_id:
            raise RunError("You started this run: someone else must approve it (four eyes).")
        if decision == Decision.APPROVE and any(
            _holds(run, step, a) for a in step.approvals.filter(user=actor)
        ):
            raise RunError("You have already approved this step.")
        current_hash = analysis.pinned_hash(run.database, run.revisions) if run.revisions else ""
        if current_hash != run.risk_hash:
            run.risk_hash = current_hash
            run.save(update_fields=["risk_hash"])
            record(None, "run.risk_report_changed", run, details={"hash": current_hash})
        approval = Approval.objects.create(
            run=run,
            step=step,
            user=actor,
            decision=decision,
            comment=comment,
            target_revision=run.target_revision,
            risk_hash=run.risk_hash,
            backup_id_seen=run.backup_id,
        )
        record(
            actor,
            "run.approved" if decision == Decision.APPROVE else "run.rejected",
            run,
            details={
                "step": step.step_id,
                "comment": comment,
                "target": run.target_revision,
                "risk_hash": run.risk_hash,
                "backup": run.backup_id,
            },
        )
        if decision == Decision.REJECT:
            step.state = StepState.FAILED
            step.summary = f"Rejected by {actor.get_username()}: {comment}"
            step.finished_at = timezone.now()
            step.save(update_fields=["state", "summary", "finished_at"])
            run.state = RunState.REJECTED
            run.reason = f"Rejected by {actor.get_username()}: {comment}"
            run.finished_at = timezone.now()
            run.save(update_fields=["state", "reason", "finished_at"])
        else:
            _advance(run)
    return approval


def void_approvals(run: Run) -> list[str]:
    """Why the run's approvals no longer hold ([] when all approval steps still have enough
    valid approvals)."""
    reasons: list[str] = []
    for step in run.steps.filter(kind="approval"):
        if step.state == StepState.DONE and not _approved(run, step):
            for a in step.approvals.select_related("user"):
                for why in a.void_reasons(run):
                    reasons.append(f"{a.user.get_username()}'s approval is void: {why}")
            if not reasons:
                reasons.append(f"{step.title!r} no longer has {step.count} valid approval(s)")
    return reasons


def _reopen_approvals(run: Run, reasons: list[str]) -> None:
    """The reviewed facts changed: the approval steps open again, and the run goes back to the
    first of their phases."""
    first = None
    for step in run.steps.filter(kind="approval", state=StepState.DONE):
        if not _approved(run, step):
            step.state = StepState.OPEN
            step.summary = "Approval void: " + "; ".join(reasons)
            step.save(update_fields=["state", "summary"])
            first = step.phase_index if first is None else min(first, step.phase_index)
    if first is not None and first < run.phase_index:
        run.steps.filter(phase_index__gt=first, state__in=[StepState.QUEUED]).update(
            state=StepState.LOCKED
        )
        run.phase_index = first
        run.save(update_fields=["phase_index"])
    record(None, "run.approvals_void", run, details={"reasons": reasons})


# --- Automated steps ---


def claim(step_id: int) -> bool:
    return bool(
        StepRun.objects.filter(pk=step_id, state=StepState.QUEUED).update(
            state=StepState.RUNNING,
            started_at=timezone.now(),
            heartbeat_at=timezone.now(),
            attempts=F("attempts") + 1,
            output="",
            summary="",
            verdict="",
        )
    )


def perform_step(step_id: int) -> StepRun | None:
    """Run a queued automated step (on a worker). Safe to call twice: only the claim runs it."""
    if not claim(step_id):
        return None
    step = StepRun.objects.select_related("run__database", "run__started_by").get(pk=step_id)
    run = step.run
    with transaction.atomic():
        record(None, "run.step_started", run, details={"step": step.step_id, "action": step.action})
    lines: list[str] = []

    def log(line: str) -> None:
        stamp = timezone.now().strftime("%H:%M:%S")
        lines.append(f"{stamp} {line}")
        StepRun.objects.filter(pk=step_id).update(
            output="\n".join(lines)[-100_000:], heartbeat_at=timezone.now()
        )

    beating = _Heartbeat(step_id)
    beating.start()
    try:
        outcome = _run_action(run, step, log)
    except Exception as exc:  # an action's bug must not leave the step running
        logger.exception("step %s of run %s crashed", step.step_id, run.pk)
        log("".join(traceback.format_exception_only(exc)).strip())
        outcome = Outcome("fail", f"The action crashed: {type(exc).__name__}: {exc}")
    finally:
        beating.stop()
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run.pk)
        step = StepRun.objects.get(pk=step_id)
        step.verdict = outcome.verdict
        step.summary = outcome.summary[:5000]
        step.evidence = outcome.evidence
        step.finished_at = timezone.now()
        step.output = "\n".join(lines)[-100_000:]
        aborted = run.state != RunState.ACTIVE
        step.state = StepState.DONE if outcome.ok else StepState.FAILED
        step.save()
        record(
            None,
            "run.step_finished",
            run,
            details={
                "step": step.step_id,
                "action": step.action,
                "verdict": outcome.verdict,
                "summary": step.summary,
            },
        )
        if outcome.ok and not aborted:
            _advance(run)
    return step


class _Heartbeat(threading.Thread):
    """Marks the step alive every few seconds while its action runs (an action may be silent
    for minutes, e.g. a big pg_dump), so the reaper only fails steps whose worker died."""

    def __init__(self, step_id: int, every: float = 15.0) -> None:
        super().__init__(name=f"step-{step_id}-heartbeat", daemon=True)
        self.step_id = step_id
        self.every = every
        self.halt = threading.Event()

    def run(self) -> None:
        try:
            while not self.halt.wait(self.every):
                StepRun.objects.filter(pk=self.step_id, state=StepState.RUNNING).update(
                    heartbeat_at=timezone.now()
                )
        finally:
            connection.close()

    def stop(self) -> None:
        self.halt.set()
        self.join()


WORKER_DIED = "The worker died mid-step (no heartbeat since {since}); retry it."


def reap_stale_steps(*, now: datetime | None = None) -> list[StepRun]:
    """Fail running steps whose worker died, so that they can be retried."""
    from dashboard.backups.pipeline import stale_after

    cutoff = (now or timezone.now()) - stale_after()
    reaped = []
    stale = StepRun.objects.filter(state=StepState.RUNNING, heartbeat_at__lt=cutoff)
    for pk, heartbeat in stale.values_list("pk", "heartbeat_at"):
        assert heartbeat is not None  # filtered on it
        message = WORKER_DIED.format(since=heartbeat.strftime("%Y-%m-%d %H:%M:%S %Z"))
        with transaction.atomic():
            taken = StepRun.objects.filter(
                pk=pk, state=StepState.RUNNING, heartbeat_at=heartbeat
            ).update(
                state=StepState.FAILED, verdict="fail", summary=message, finished_at=timezone.now()
            )
            if not taken:
                continue
            step = StepRun.objects.select_related("run").get(pk=pk)
            record(
                None,
                "run.step_finished",
                step.run,
                details={
                    "step": step.step_id,
                    "action": step.action,
                    "verdict": "fail",
                    "summary": message,
                },
            )
        reaped.append(step)
    return reaped


def _run_action(run: Run, step: StepRun, log: Any) -> Outcome:
    registered = REGISTRY.get(step.action)
    if registered is None:
        return Outcome("fail", f"No action {step.action!r} is registered on this worker.")
    if run.state != RunState.ACTIVE:
        return Outcome("fail", f"The run was {run.get_state_display().lower()}; nothing ran.")
    if registered.destructive:
        with transaction.atomic():
            locked = Run.objects.select_for_update().get(pk=run.pk)
            _refresh_risk(locked)
            reasons = void_approvals(locked)
            if reasons:
                _reopen_approvals(locked, reasons)
        if reasons:
            return Outcome("fail", "Refused: " + "; ".join(reasons) + ". Nothing ran.")
        run.refresh_from_db()
    return registered.fn(Context(run, step, log))


def _refresh_risk(run: Run) -> None:
    from dashboard.schema import analysis

    if not run.revisions:
        return
    current = analysis.pinned_hash(run.database, run.revisions)
    if current != run.risk_hash:
        run.risk_hash = current
        run.save(update_fields=["risk_hash"])
        record(None, "run.risk_report_changed", run, details={"hash": current})


def retry(actor: Actor, run: Run, step: StepRun) -> StepRun:
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run.pk)
        step = StepRun.objects.get(pk=step.pk, run=run)
        _must_be_active(run)
        if step.kind != "action" or step.state != StepState.FAILED:
            raise RunError(f"Only a failed automated step can be retried ({step.state}).")
        step.state = StepState.OPEN
        step.save(update_fields=["state"])
        record(actor, "run.step_retried", run, details={"step": step.step_id})
        _advance(run)
    return step


def abort(actor: Actor, run: Run, reason: str) -> Run:
    reason = reason.strip()
    if not reason:
        raise RunError("Say why the run is aborted.")
    if len(reason) > MAX_TEXT:
        raise RunError(f"Keep the reason under {MAX_TEXT} characters.")
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run.pk)
        _must_be_active(run)
        run.state = RunState.ABORTED
        run.reason = reason
        run.finished_at = timezone.now()
        run.save(update_fields=["state", "reason", "finished_at"])
        run.steps.filter(state__in=[StepState.QUEUED]).update(state=StepState.LOCKED)
        record(actor, "run.aborted", run, details={"reason": reason})
    return run


# --- Reading ---


def waiting_for(run: Run) -> list[str]:
    """Who or what the run waits for now, in words."""
    if run.state != RunState.ACTIVE:
        return []
    out = []
    # Filtered in Python so that a list page's prefetch of steps and approvals is used.
    steps = sorted(
        (s for s in run.steps.all() if s.phase_index == run.phase_index), key=lambda s: s.position
    )
    for step in steps:
        if step.is_done:
            continue
        if step.kind == "check" and step.required:
            out.append(f"an engineer to tick “{step.title}”")
        elif step.kind == "approval" and step.state == StepState.OPEN:
            have = len({a.user_id for a in step.approvals.all() if _holds(run, step, a)})
            out.append(f"a {step.role} to approve “{step.title}” ({have}/{step.count})")
        elif step.kind == "action" and step.state in (StepState.QUEUED, StepState.RUNNING):
            out.append(f"a worker: “{step.title}” is {step.state}")
        elif step.kind == "action" and step.state == StepState.FAILED:
            out.append(f"an engineer to retry “{step.title}” or abort")
    return out
