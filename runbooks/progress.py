"""What a run's page (and its PDF report) shows: its phases with their steps (an action's
current attempt with its live log, and the earlier ones), who ticked and approved what, why an
approval is void, and what the run waits for."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch
from django.utils import timezone

from runbooks import engine, policy
from runbooks.models import Approval, Run, StepRun, StepState


def run_context(run: Run) -> dict[str, Any]:
    steps = list(
        run.steps.select_related("done_by").prefetch_related(
            Prefetch("approvals", queryset=Approval.objects.select_related("user")), "jobs"
        )
    )
    phases = []
    now = timezone.now()
    for index, phase in enumerate(run.phases):
        due = run.due_of(index)
        mine = [s for s in steps if s.phase_index == index]
        required = [s for s in mine if s.required]
        phases.append(
            {
                "index": index,
                "phase": phase,
                "steps": mine,
                "done": sum(1 for s in required if s.is_done),
                "required": len(required),
                "due": due,
                "overdue": due is not None and now > due and index >= run.phase_index,
                "state": (
                    "done"
                    if index < run.phase_index or run.state == "completed"
                    else "open"
                    if index == run.phase_index and run.is_active
                    else "locked"
                ),
            }
        )
    for step in steps:
        step.void_reasons = {a.pk: a.void_reasons(run) for a in step.approvals.all()}  # type: ignore[attr-defined]
    return {
        "db": run.database,
        "run": run,
        "phases": phases,
        "waiting": engine.waiting_for(run),
        "live": any(s.is_live for s in steps) and run.is_active,
        "deploy": _deploy(run, steps),
        "deciding": next(
            (s for s in steps if s.kind == "approval" and s.state == StepState.OPEN), None
        )
        if run.is_active
        else None,
        "rollbacks": list(run.rollbacks.order_by("pk")),
        "nav": "runs",
    }


def _deploy(run: Run, steps: list[StepRun]) -> dict[str, Any] | None:
    """The Deploy box: shown while a destructive step waits for it; whether it may be pressed
    now and, if not, why."""
    if not run.is_active or any(s.kind == "approval" and not s.is_done for s in steps):
        return None
    waiting = [s for s in steps if s.state == StepState.WAITING and engine.awaits_deploy(run, s)]
    if not waiting:
        return None
    now = timezone.now()
    why = ""
    if run.window_start is not None and now < run.window_start:
        why = "The deployment window has not opened yet."
    elif run.window_end is not None and now > run.window_end:
        why = "The deployment window has passed: the approvals expire; amend the schedule."
    else:
        why = policy.staging_missing(run)
    approvers = sorted(
        {
            a.user.get_username()
            for s in steps
            if s.kind == "approval"
            for a in s.approvals.all()
            if engine.holds(run, s, a)
        }
    )
    return {"steps": waiting, "why": why, "approvers": approvers}
