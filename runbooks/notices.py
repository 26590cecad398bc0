"""What a run tells people (through :mod:`dashboard.notify`): an approval waiting, a step that
failed. Called by the engine inside the transaction that moves the step, so the notification
exists exactly when the step's new state does; delivery happens later, on a worker."""

from __future__ import annotations

from dashboard.notify import events
from dashboard.notify.outbox import emit
from runbooks.models import Approval, Decision, Run, StepRun


def _about(run: Run) -> dict[str, object]:
    return {
        "run": run.pk,
        "runbook": run.runbook_id,
        "database": run.database.name,
        "target": run.target_revision,
        "started_by": run.started_by.get_username() if run.started_by_id else None,
    }


def approval_waiting(run: Run, step: StepRun) -> None:
    db = run.database
    who = step.role or "lead"
    needed = f"{step.count} approval{'s' if step.count != 1 else ''}" if step.count else "approval"
    target = f" to {run.target_revision}" if run.target_revision else ""
    emit(
        events.APPROVAL_WAITING,
        db,
        f"Approval waiting: {run.runbook_title}{target} on {db.name}",
        f"Run #{run.pk} ({run.runbook_title}{target}) on {db.name} ({db.environment}) waits for "
        f'{needed} from a {who} at the step "{step.title}". '
        f"Started by {run.started_by.get_username()}.",
        run.get_absolute_url(),
        _about(run) | {"step": step.step_id, "step_title": step.title, "needs": step.count},
    )


def step_failed(run: Run, step: StepRun, summary: str) -> None:
    db = run.database
    emit(
        events.STEP_FAILED,
        db,
        f"Step failed: {step.title} (run #{run.pk} on {db.name})",
        f'The step "{step.title}" of run #{run.pk} ({run.runbook_title}) on {db.name} '
        f"({db.environment}) failed: {summary}\nThe run stops there until someone retries the "
        "step or aborts the run.",
        run.get_absolute_url(),
        _about(run) | {"step": step.step_id, "action": step.action, "summary": summary[:2000]},
    )


def review_decided(run: Run, step: StepRun, approval: Approval) -> None:
    db = run.database
    who = approval.user.get_username()
    then = {
        Decision.APPROVE: "Once every approval is in, an engineer presses Deploy on the run page.",
        Decision.CHANGES: "Amend the run or answer, then ask for review again.",
        Decision.REJECT: "The run has ended.",
    }[Decision(approval.decision)]
    emit(
        events.REVIEW_DECIDED,
        db,
        f"{approval.get_decision_display()} by {who}: run #{run.pk} on {db.name}",
        f'{who} decided “{approval.get_decision_display()}” at the step "{step.title}" of run '
        f"#{run.pk} ({run.runbook_title}) on {db.name} ({db.environment}): "
        f"{approval.comment}\n{then}",
        run.get_absolute_url(),
        _about(run) | {"step": step.step_id, "decision": approval.decision, "by": who},
    )


def run_due(run: Run, subject: str, body: str, what: dict[str, object]) -> None:
    emit(
        events.RUN_DUE,
        run.database,
        subject,
        body,
        run.get_absolute_url(),
        _about(run) | what,
    )
