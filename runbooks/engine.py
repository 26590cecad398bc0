"""The runbook engine: starting a run, opening phases in order, starting automated steps as
jobs, ticking checks, approvals pinned to what was reviewed, retries and aborts.

Within the open phase, checks can be ticked in any order; actions and approvals go one after the
other in the runbook's order (an approval is given on the backup and gates before it). A phase
completes when its required steps are done; the next one then opens. Every change writes its
audit event in the same transaction, and the run row is locked while it changes, so two workers
or two people never advance the same run at once.

An action step's work is a job (:class:`runbooks.models.StepJob`, kind ``run_step``, see
:mod:`runbooks.steps`): the engine starts one per attempt and sends it through the one job
lifecycle (claim, heartbeat, reaper, cancel); the job's end moves the step (:func:`finish_step`).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from dashboard.accounts.roles import Role, role_of
from dashboard.audit.chain import Actor, record
from dashboard.databases.models import ManagedDatabase
from dashboard.jobs import lifecycle as jobs
from dashboard.jobs.models import JobState
from runbooks import notices, policy
from runbooks.actions import REGISTRY, Context, Outcome
from runbooks.loader import Runbook
from runbooks.models import (
    Approval,
    Comment,
    Decision,
    Review,
    Run,
    RunState,
    StepJob,
    StepRun,
    StepState,
    local_time,
)

logger = logging.getLogger(__name__)

MAX_TEXT = 2000
SEQUENTIAL = ("action", "approval")


class RunError(ValueError):
    """The request was refused; the message says why and nothing changed."""


# --- Starting ---


def start_run(
    actor: User,
    book: Runbook,
    db: ManagedDatabase,
    target: str = "",
    *,
    planned_at: datetime | None = None,
    window_start: datetime | None = None,
    window_end: datetime | None = None,
) -> Run:
    target = target.strip()
    _check_schedule(planned_at, window_start, window_end)
    current, revisions, grade = _plan(book.needs_target, book.title, db, target)
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
            max_grade=grade,
            planned_at=planned_at,
            window_start=window_start,
            window_end=window_end,
        )
        create_steps(run, book)
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
                "grade": grade,
                "approvals": run.required_approvals,
                **_schedule_details(run),
            },
        )
        _advance(run)
    return run


def _plan(
    needs_target: bool, title: str, db: ManagedDatabase, target: str
) -> tuple[list[str], list[str], str]:
    """What a run of ``book`` to ``target`` would deploy: the database's current revisions,
    the pending revisions on the way, and their worst risk grade (what approval policies scale
    with; "high" when they cannot be analysed). Refused with a message when it makes no sense."""
    from dashboard.lib import alembic
    from dashboard.schema import analysis, execution

    if not needs_target:
        if target:
            raise RunError(f"{title} takes no target revision.")
        return [], [], ""
    if not target:
        raise RunError("Choose the target revision.")
    if analysis.known_revision(db, target) is None:
        raise RunError(f"{target!r} is not a revision in {db.name}'s scripts.")
    pending = analysis.pending_of(db)
    if not pending.known:
        raise RunError(f"{db.name}'s current revision is unknown: test its connection first.")
    revisions = execution.revisions_to(db, pending.current, target)
    if not revisions:
        raise RunError(f"{db.name} is already at {target} or past it: nothing to run.")
    try:
        grade = analysis.worst(analysis.reports_for(db, revisions))
    except (alembic.NotAnAlembicProject, alembic.AlembicError):
        grade = "high"
    return pending.current, revisions, grade


MAX_PLAN_DAYS = 366


def _check_schedule(
    planned_at: datetime | None, window_start: datetime | None, window_end: datetime | None
) -> None:
    """A planned time and a deployment window that make sense, or a message saying why not."""
    now = timezone.now()
    if (window_start is None) != (window_end is None):
        raise RunError("A deployment window needs both its start and its end.")
    if window_start is not None and window_end is not None:
        if window_end <= window_start:
            raise RunError("The deployment window must end after it starts.")
        if window_end <= now:
            raise RunError("The deployment window must end in the future.")
        if (window_end - window_start).days > 31:
            raise RunError("Keep the deployment window under 31 days.")
        if planned_at is not None and not window_start <= planned_at <= window_end:
            raise RunError("The planned deployment time must be inside the window.")
    for when in (planned_at, window_end):
        if when is not None and (when - now).days > MAX_PLAN_DAYS:
            raise RunError(f"Plan at most {MAX_PLAN_DAYS} days ahead.")


def _schedule_details(run: Run) -> dict[str, str | None]:
    return {
        name: value.isoformat() if value else None
        for name, value in (
            ("planned_at", run.planned_at),
            ("window_start", run.window_start),
            ("window_end", run.window_end),
        )
    }


def create_steps(run: Run, book: Runbook) -> None:
    """The run's steps as the runbook lists them (an approval step needs what the approval
    policy asks for its environment and risk grade: runbooks.policy), and how many approvals
    the run needs."""
    needed = 0
    for p_index, phase in enumerate(book.phases):
        for position, step in enumerate(phase.steps):
            count = step.count
            if step.kind == "approval":
                count = policy.requirement(run.database, run.max_grade, step.count).approvals
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


# --- Advancing ---


def advance(run_id: int) -> None:
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run_id)
        _advance(run)


def _advance(run: Run) -> None:
    """Open what can open, queue what can run, close completed phases. Call in a transaction
    holding the run's row lock."""
    while run.state == RunState.ACTIVE:
        steps = list(run.steps.filter(phase_index=run.phase_index).order_by("position"))
        if not steps:
            break
        for step in steps:
            if step.kind == "check" and step.state == StepState.LOCKED:
                step.open()
        blocked = False
        for step in steps:
            if step.kind not in SEQUENTIAL or step.is_done:
                continue
            if blocked:
                if step.state == StepState.STARTED and _withdraw(step):
                    step.lock()
                if step.state != StepState.WAITING:
                    step.wait()
                continue
            blocked = True
            if step.kind == "approval":
                opened = step.open()
                if _approved(run, step):
                    _finish_approval(run, step)
                    blocked = False
                elif opened:
                    notices.approval_waiting(run, step)
            elif awaits_deploy(run, step):
                if step.state != StepState.WAITING:
                    step.wait()
            elif step.state in (StepState.LOCKED, StepState.WAITING, StepState.OPEN):
                job = step.start()
                if job is not None:
                    jobs.enqueue(job)
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
            run.end(RunState.COMPLETED)
            record(None, "run.completed", run, details={"target": run.target_revision})
            break
        run.phase_index += 1
        run.save(update_fields=["phase_index"])


def awaits_deploy(run: Run, step: StepRun) -> bool:
    """A destructive action after an approval waits for someone to press Deploy: approving
    records a decision, it never starts the change."""
    registered = REGISTRY.get(step.action)
    if run.deployed_at is not None or registered is None or not registered.destructive:
        return False
    # Read through run.steps.all() so that a list page's prefetch serves it.
    at = (step.phase_index, step.position)
    return any(s.kind == "approval" and (s.phase_index, s.position) < at for s in run.steps.all())


def _withdraw(step: StepRun, stop: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Cancel a started step's job. One still queued is cancelled at once (``state`` says
    cancelled: the caller moves the step); a running one is asked to stop (its action sees
    ``ctx.cancel_requested``) and the step ends when its job does. ``stop``: who asks, why, and
    the grace period, for the action (``StepJob.stop_request``). None when no job is active;
    otherwise what happened, for the caller's audit event."""
    job = step.job if step.state == StepState.STARTED else None
    if job is None or not job.is_active:
        return None
    if stop:
        StepJob.objects.filter(pk=job.pk, state__in=(JobState.QUEUED, JobState.RUNNING)).update(
            stop_request=stop
        )
    job.request_cancel()
    job.refresh_from_db(fields=["state", "cancel_requested_at"])
    return {"step": step.step_id, "job": job.pk, "attempt": job.attempt, "state": job.state}


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
        if step.phase_index != run.phase_index or not step.tick(actor, note):
            raise RunError(f"{step.title!r} belongs to a phase that is not open.")
        record(actor, "run.step_ticked", run, details={"step": step.step_id, "note": note})
        _advance(run)
    return step


def _must_be_active(run: Run) -> None:
    if run.state != RunState.ACTIVE:
        raise RunError(f"Run #{run.pk} is {run.get_state_display().lower()}: nothing can change.")


# --- Approvals ---


def holds(run: Run, step: StepRun, approval: Approval) -> bool:
    """Whether an approval counts for its step now."""
    if approval.decision != Decision.APPROVE or approval.void_reasons(run):
        return False
    return not (step.four_eyes and approval.user_id == run.started_by_id)


def _approved(run: Run, step: StepRun) -> bool:
    valid = {a.user_id for a in step.approvals.all() if holds(run, step, a)}
    return len(valid) >= step.count


def _finish_approval(run: Run, step: StepRun) -> None:
    valid = [a for a in step.approvals.select_related("user") if holds(run, step, a)]
    step.approve("Approved by " + ", ".join(a.user.get_username() for a in valid))


def decide(actor: Any, run: Run, step: StepRun, decision: str, comment: str) -> Approval:
    """A lead approves, requests changes or rejects at an approval step; an approval is pinned
    to the target revision, the risk report's hash, the backup and the deployment window the
    run has now. Approving records a decision: nothing starts until someone presses Deploy.
    Requesting changes hands the run back to the engineer (who amends it or asks again);
    rejecting ends it."""
    from dashboard.schema import analysis

    comment = comment.strip()
    if not comment:
        raise RunError("A comment is required: say what you checked.")
    if len(comment) > MAX_TEXT:
        raise RunError(f"Keep the comment under {MAX_TEXT} characters.")
    if decision not in Decision.values:
        raise RunError("Approve, request changes or reject.")
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
        if run.changes_requested and decision != Decision.REJECT:
            raise RunError(
                "Changes were requested: the engineer amends the run or asks for review again "
                "before anyone decides (rejecting stays possible)."
            )
        if decision == Decision.APPROVE:
            if any(holds(run, step, a) for a in step.approvals.filter(user=actor)):
                raise RunError("You have already approved this step.")
            missing = policy.staging_missing(run)
            if missing:
                raise RunError(f"Not approvable yet: {missing}")
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
            window_end_seen=run.window_end,
        )
        record(
            actor,
            DECISION_EVENTS[Decision(decision)],
            run,
            details={
                "step": step.step_id,
                "comment": comment,
                "target": run.target_revision,
                "risk_hash": run.risk_hash,
                "backup": run.backup_id,
                "window_end": run.window_end.isoformat() if run.window_end else None,
            },
        )
        if decision == Decision.REJECT:
            why = f"Rejected by {actor.get_username()}: {comment}"
            step.reject(why)
            run.end(RunState.REJECTED, why)
        elif decision == Decision.CHANGES:
            run.review_state = Review.CHANGES
            run.save(update_fields=["review_state"])
        else:
            _advance(run)
        notices.review_decided(run, step, approval)
    return approval


DECISION_EVENTS = {
    Decision.APPROVE: "run.approved",
    Decision.CHANGES: "run.changes_requested",
    Decision.REJECT: "run.rejected",
}


def request_review(actor: Any, run: Run, note: str) -> Run:
    """After changes were requested: the engineer says what changed and asks the leads again."""
    note = note.strip()
    if not note:
        raise RunError("Say what you changed, for the reviewers.")
    if len(note) > MAX_TEXT:
        raise RunError(f"Keep the note under {MAX_TEXT} characters.")
    _engineer(actor, "ask for a review")
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run.pk)
        _must_be_active(run)
        if not run.changes_requested:
            raise RunError("No changes were requested: the review is already open.")
        run.review_state = Review.OPEN
        run.save(update_fields=["review_state"])
        Comment.objects.create(run=run, user=actor, body=f"Review requested again: {note}")
        record(actor, "run.review_requested", run, details={"note": note})
        for step in run.steps.filter(kind="approval", state=StepState.OPEN):
            notices.approval_waiting(run, step)
    return run


def comment(
    actor: Any, run: Run, body: str, revision: str = "", statement: int | None = None
) -> Comment:
    """A remark on the run's review, or on one statement of one of its revisions; audited."""
    body = body.strip()
    if not body:
        raise RunError("Write the comment first.")
    if len(body) > MAX_TEXT:
        raise RunError(f"Keep the comment under {MAX_TEXT} characters.")
    _engineer(actor, "comment")
    if revision and revision not in run.revisions:
        raise RunError(f"{revision!r} is not one of this run's revisions.")
    if statement is not None and (not revision or not 0 <= statement < 10_000):
        raise RunError("A statement comment names its revision and a statement number.")
    with transaction.atomic():
        made = Comment.objects.create(
            run=run, user=actor, body=body, revision=revision, statement=statement
        )
        record(
            actor,
            "run.commented",
            run,
            details={"revision": revision, "statement": statement, "comment": body},
        )
    return made


def _engineer(actor: Any, what: str) -> None:
    role = role_of(actor)
    if role is None or role < Role.ENGINEER:
        raise RunError(f"Only an engineer (or higher) can {what}.")


def deploy(actor: Any, run: Run) -> Run:
    """Start the change an approval allowed: an engineer (or the approver) presses Deploy.
    Refused outside the deployment window; a window that passed, a stale approval or any other
    change to what was approved voids the approvals (the run goes back to review) instead."""
    from dashboard.schema import analysis

    _engineer(actor, "deploy")
    void: list[str] = []
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run.pk)
        _must_be_active(run)
        if run.deployed_at is not None:
            raise RunError(f"Run #{run.pk} was deployed by {run.deployed_by} already.")
        open_approvals = run.steps.filter(kind="approval").exclude(state=StepState.DONE)
        if open_approvals.exists():
            raise RunError("Not approved yet: Deploy opens once every approval step is done.")
        waiting = [s for s in run.steps.filter(kind="action") if awaits_deploy(run, s)]
        if not waiting:
            raise RunError(f"Run #{run.pk} has no change waiting for Deploy.")
        now = timezone.now()
        if run.window_start is not None and now < run.window_start:
            raise RunError(
                f"The deployment window opens at {local_time(run.window_start)}: "
                "nothing starts before it."
            )
        missing = policy.staging_missing(run)
        if missing:
            raise RunError(missing)
        if run.revisions:
            current = analysis.pinned_hash(run.database, run.revisions)
            if current != run.risk_hash:
                run.risk_hash = current
                run.save(update_fields=["risk_hash"])
                record(None, "run.risk_report_changed", run, details={"hash": current})
        void = void_approvals(run)
        if void:
            _reopen_approvals(run, void)
        else:
            run.deployed_by, run.deployed_at = actor, now
            run.save(update_fields=["deployed_by", "deployed_at"])
            record(
                actor,
                "run.deployed",
                run,
                details={"target": run.target_revision, "steps": [s.step_id for s in waiting]},
            )
            _advance(run)
    if void:
        raise RunError("Nothing started: " + "; ".join(void) + ". The run is back in review.")
    return run


def amend(
    actor: Any,
    run: Run,
    target: str,
    *,
    planned_at: datetime | None = None,
    window_start: datetime | None = None,
    window_end: datetime | None = None,
) -> Run:
    """Before Deploy, an engineer changes the run's target revision or its schedule. A new
    target starts the run over from its first phase (its analyses, rehearsal, backup and gates
    run again; approvals given so far are void); a new schedule keeps the steps but voids the
    approvals, which were given for the old window. Either way the review opens again."""
    _engineer(actor, "amend a run")
    target = target.strip()
    _check_schedule(planned_at, window_start, window_end)
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run.pk)
        _must_be_active(run)
        if run.is_rollback:
            raise RunError("A rollback cannot be amended.")
        if run.deployed_at is not None:
            raise RunError("The run was deployed: it can no longer be amended (abort it instead).")
        live = [s.title for s in run.steps.all() if s.state == StepState.STARTED]
        if live:
            raise RunError(f"Wait for “{live[0]}” to finish (or abort it) before amending.")
        new_target = target != run.target_revision
        current, revisions, grade = (
            _plan(bool(run.runbook.get("needs_target")), run.runbook_title, run.database, target)
            if new_target
            else (run.from_revisions, run.revisions, run.max_grade)
        )
        new_window = (run.planned_at, run.window_start, run.window_end) != (
            planned_at,
            window_start,
            window_end,
        )
        if not new_target and not new_window:
            raise RunError("Nothing changed: give a new target or a new schedule.")
        before = {"target": run.target_revision, **_schedule_details(run)}
        run.target_revision, run.from_revisions, run.revisions = target, current, revisions
        run.max_grade = grade
        run.planned_at, run.window_start, run.window_end = planned_at, window_start, window_end
        run.review_state = Review.OPEN
        run.reminders = {}
        reason = f"amended by {actor.get_username()}"
        for approval in Approval.objects.filter(run=run, decision=Decision.APPROVE, voided_at=None):
            approval.voided_at, approval.void_reason = timezone.now(), f"the run was {reason}"
            approval.save(update_fields=["voided_at", "void_reason"])
        reset = []
        if new_target:
            for step in run.steps.all():
                if step.reset(f"The run was {reason}: this step starts over."):
                    reset.append(step.step_id)
            run.phase_index = 0
            run.risk_hash = ""
        else:
            for step in run.steps.filter(kind="approval", state=StepState.DONE):
                step.void(f"Approval void: the run was {reason} (new schedule).")
                run.phase_index = min(run.phase_index, step.phase_index)
                # What waited for Deploy waits for the approvals again.
                for later in run.steps.filter(
                    phase_index__gt=step.phase_index, state=StepState.WAITING
                ):
                    later.lock()
        for step in run.steps.filter(kind="approval"):
            count = policy.requirement(run.database, grade, _book_count(run, step)).approvals
            if count != step.count:
                StepRun.objects.filter(pk=step.pk).update(count=count)
        run.required_approvals = sum(
            run.steps.filter(kind="approval").values_list("count", flat=True)
        )
        run.save()
        record(
            actor,
            "run.amended",
            run,
            details={
                "before": before,
                "after": {"target": target, **_schedule_details(run)},
                "revisions": revisions,
                "grade": grade,
                "reset": reset,
            },
        )
        _advance(run)
    return run


def recheck_approvals(run_id: int) -> list[str]:
    """Void the approvals of an approved run that no longer hold (gone stale, window passed)
    before anyone presses Deploy, so the run shows it is back in review and the leads are told.
    Returns the reasons ([] when they hold, or there is nothing to recheck)."""
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run_id)
        if run.state != RunState.ACTIVE or run.deployed_at is not None:
            return []
        reasons = void_approvals(run)
        if reasons:
            _reopen_approvals(run, reasons)
            for step in run.steps.filter(kind="approval", state=StepState.OPEN):
                notices.approval_waiting(run, step)
    return reasons


def _book_count(run: Run, step: StepRun) -> int:
    """The approvals the runbook itself asks of ``step`` (before any policy)."""
    for candidate in run.runbook_steps():
        if candidate.get("id") == step.step_id:
            return int(candidate.get("count") or 0)
    return step.count


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
    now = timezone.now()
    for approval in Approval.objects.filter(run=run, decision=Decision.APPROVE, voided_at=None):
        why = approval.void_reasons(run, now)
        if why:
            approval.voided_at, approval.void_reason = now, "; ".join(why)
            approval.save(update_fields=["voided_at", "void_reason"])
    for step in run.steps.filter(kind="approval", state=StepState.DONE):
        if not _approved(run, step):
            step.void("Approval void: " + "; ".join(reasons))
            first = step.phase_index if first is None else min(first, step.phase_index)
    withdrawn = []
    if first is not None:
        # What waited for Deploy waits for the approvals again.
        for later in run.steps.filter(phase_index__gt=first, state=StepState.WAITING):
            later.lock()
    if first is not None and first < run.phase_index:
        for later in run.steps.filter(phase_index__gt=first, state=StepState.STARTED):
            job = later.job
            if job is not None and job.state == JobState.QUEUED:
                done = _withdraw(later)
                if done and done["state"] == JobState.CANCELLED:
                    later.lock()
                    withdrawn.append(done)
        run.phase_index = first
        run.save(update_fields=["phase_index"])
    record(None, "run.approvals_void", run, details={"reasons": reasons, "withdrawn": withdrawn})


# --- Automated steps (what a run_step job does: runbooks/steps.py) ---


def run_action(run: Run, step: StepRun, ctx: Context) -> Outcome:
    """The step's action, once the run allows it: an unknown action or an ended run fails with
    nothing run; a destructive action first checks that the approvals still hold."""
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
    ctx.check_cancelled()
    return registered.fn(ctx)


def finish_step(job: StepJob, how: str, outcome: Outcome, output: str) -> bool:
    """End the step's job as ``how`` (succeeded, failed or cancelled) with the action's
    outcome, end the step with it and advance the run, in one transaction with its audit
    event. False when the job had already ended (the reaper interrupted it meanwhile): its end
    stands, and the late result is only recorded."""
    result = {
        "verdict": outcome.verdict,
        "summary": outcome.summary[:5000],
        "evidence": outcome.evidence,
        "output": output,
    }
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=job.step.run_id)
        if how == "succeeded":
            moved = job.succeed(**result)
        elif how == "cancelled":
            moved = job.cancelled(outcome.summary[:2000], **result)
        else:
            moved = job.fail(outcome.summary[:2000], **result)
        step = StepRun.objects.get(pk=job.step_id)
        details = {
            "step": step.step_id,
            "action": step.action,
            "job": job.pk,
            "attempt": job.attempt,
            "verdict": outcome.verdict,
            "summary": outcome.summary[:2000],
        }
        if not moved:
            job.refresh_from_db(fields=["state"])
            record(None, "run.step_late_result", run, details=details | {"job_state": job.state})
            return False
        ok = how == "succeeded" and outcome.ok
        if step.finish(ok, outcome.summary) and not ok:
            notices.step_failed(run, step, outcome.summary)
        record(None, "run.step_finished", run, details=details | {"job_state": job.state})
        aborted = outcome.evidence.get("abort") if how == "cancelled" else None
        if aborted:
            record(
                None,
                "run.migration_aborted",
                run,
                details={"step": step.step_id, "job": job.pk, "attempt": job.attempt, **aborted},
            )
        if ok and run.state == RunState.ACTIVE:
            _advance(run)
    return True


WORKER_DIED = "The worker died mid-step ({why}); retry it."


def step_interrupted(job: StepJob, recovery: Outcome | None = None) -> None:
    """The reaper interrupted the step's job (its worker stopped beating, or no worker took
    it): the step fails saying so (and what the action's clean-up, ``recovery``, found), and
    the run stops there."""
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=job.step.run_id)
        step = StepRun.objects.get(pk=job.step_id)
        current = step.job
        if step.state != StepState.STARTED or current is None or current.pk != job.pk:
            return
        if job.started_at is None:
            minutes = jobs.kind_of(StepJob).queued_after / 60
            summary = (
                f"No worker took this step within {minutes:g} minutes "
                "(are the workers running?); retry it."
            )
        else:
            since = job.heartbeat_at.strftime("%Y-%m-%d %H:%M:%S %Z") if job.heartbeat_at else "?"
            summary = WORKER_DIED.format(
                why=f"worker {job.worker or 'unknown'}, no heartbeat since {since}"
            )
        details: dict[str, Any] = {}
        if recovery is not None:
            summary += f" {recovery.summary}"
            details["recovery"] = {"verdict": recovery.verdict, **recovery.evidence}
            # The attempt's last word on where it was: kept beside its last snapshot.
            StepJob.objects.filter(pk=job.pk, state=JobState.INTERRUPTED).update(
                progress={**(job.progress or {}), "recovery": details["recovery"]}
            )
        if step.finish(False, summary):
            notices.step_failed(run, step, summary)
        record(
            None,
            "run.step_finished",
            run,
            details={
                "step": step.step_id,
                "action": step.action,
                "job": job.pk,
                "attempt": job.attempt,
                "job_state": job.state,
                "verdict": "fail",
                "summary": summary,
                **details,
            },
        )


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
        if step.kind != "action" or not step.retry():
            raise RunError(f"Only a failed automated step can be retried ({step.status}).")
        record(actor, "run.step_retried", run, details={"step": step.step_id})
        _advance(run)
    step.refresh_from_db()
    return step


def cancel_step(actor: Actor, run: Run, step: StepRun) -> dict[str, Any]:
    """Ask a started step's job to stop. A queued one never runs: the step fails at once,
    cancelled. A running one's action sees the request (``ctx.cancel_requested``,
    ``ctx.check_cancelled()``, ``ctx.wait_for_cancel()``) and the step fails as cancelled when
    the action stops; an action that never looks runs to its end. Either way the run stops
    at the step, which can be retried (a new job)."""
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run.pk)
        step = StepRun.objects.get(pk=step.pk, run=run)
        _must_be_active(run)
        done = _withdraw(step)
        if done is None:
            raise RunError(f"{step.title!r} has no queued or running job ({step.status}).")
        if done["state"] == JobState.CANCELLED:
            step.finish(False, "Cancelled before it ran.")
        record(actor, "run.step_cancel_requested", run, details=done)
    return done


MAX_GRACE = 600


def abort_step(
    actor: User | None, run: Run, step: StepRun, reason: str, *, grace: float | None = None
) -> dict[str, Any]:
    """Ask a started step to stop, saying who and why. A queued step never runs (it fails at
    once); a running migration stops safely (``schema.upgrade``: nothing more starts, its
    statement is cancelled, its session ended after ``grace`` seconds if still in the
    revision's transaction, the rollback confirmed) and fails as aborted, with the revision the
    database is at; any other action sees the cancel request. Only an engineer (or higher) may;
    ``actor`` None is the system (a command run on the server)."""
    from dashboard.schema.watch import DEFAULT_GRACE

    reason = reason.strip()
    if not reason:
        raise RunError("Say why the migration is aborted.")
    if len(reason) > MAX_TEXT:
        raise RunError(f"Keep the reason under {MAX_TEXT} characters.")
    grace = DEFAULT_GRACE if grace is None else float(grace)
    if not 0 <= grace <= MAX_GRACE:
        raise RunError(f"The grace period is 0 to {MAX_GRACE} seconds.")
    if actor is not None:
        role = role_of(actor)
        if role is None or role < Role.ENGINEER:
            raise RunError("Only an engineer (or higher) can abort a step.")
    _may_stop(actor, run)
    who = actor.get_username() if actor is not None else "system"
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run.pk)
        step = StepRun.objects.get(pk=step.pk, run=run)
        _must_be_active(run)
        if step.kind != "action":
            raise RunError(f"{step.title!r} is not an automated step.")
        stop = {
            "by": who,
            "by_id": actor.pk if actor is not None else None,
            "reason": reason,
            "grace_seconds": grace,
        }
        done = _withdraw(step, stop)
        if done is None:
            raise RunError(f"{step.title!r} has no queued or running job ({step.status}).")
        if done["state"] == JobState.CANCELLED:
            step.finish(False, f"Aborted by {who} before it ran: {reason}")
        record(actor, "run.step_abort_requested", run, details=done | stop)
    return done


ROLLBACK_STOP_ROLE = Role.LEAD


def _may_stop(actor: Any, run: Run) -> None:
    """An automatic rollback is what puts the database back: only a lead stops it (an engineer
    would otherwise go around the lead-only cancel of its grace period)."""
    if actor is None or not run.is_rollback:
        return
    role = role_of(actor)
    if role is None or role < ROLLBACK_STOP_ROLE:
        raise RunError(
            f"Stopping an automatic rollback needs the {ROLLBACK_STOP_ROLE.label} role: it is "
            "what puts the database back. A lead may cancel it within its grace period."
        )


def abort(actor: Actor, run: Run, reason: str) -> Run:
    _may_stop(actor, run)
    reason = reason.strip()
    if not reason:
        raise RunError("Say why the run is aborted.")
    if len(reason) > MAX_TEXT:
        raise RunError(f"Keep the reason under {MAX_TEXT} characters.")
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run.pk)
        _must_be_active(run)
        run.end(RunState.ABORTED, reason)
        withdrawn = []
        stop = {"by": actor.get_username(), "reason": f"the run was aborted: {reason}"}
        for step in run.steps.filter(state=StepState.STARTED):
            done = _withdraw(step, stop)
            if done is None:
                continue
            if done["state"] == JobState.CANCELLED:
                step.lock()
            withdrawn.append(done)
        record(actor, "run.aborted", run, details={"reason": reason, "jobs": withdrawn})
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
        elif step.kind == "approval" and step.state == StepState.OPEN and run.changes_requested:
            out.append(
                f"{run.started_by.get_username()} to amend the run or ask for review again "
                "(changes requested)"
            )
        elif step.kind == "approval" and step.state == StepState.OPEN:
            have = len({a.user_id for a in step.approvals.all() if holds(run, step, a)})
            out.append(f"a {step.role} to approve “{step.title}” ({have}/{step.count})")
        elif step.kind == "action" and step.state == StepState.WAITING and awaits_deploy(run, step):
            out.append(f"an engineer to press Deploy{_window_words(run)}")
        elif step.kind == "action" and step.is_live:
            out.append(f"a worker: “{step.title}” is {step.status}")
        elif step.kind == "action" and step.state == StepState.FAILED:
            out.append(f"an engineer to retry “{step.title}” or abort")
    return out


def _window_words(run: Run) -> str:
    if run.window_start is None or run.window_end is None:
        return ""
    return f" between {local_time(run.window_start)} and {local_time(run.window_end)}"
