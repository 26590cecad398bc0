"""What a run's page (and its PDF report) shows: its phases with their steps (an action's
current attempt with its live log, and the earlier ones), who ticked and approved what, why an
approval is void, and what the run waits for."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch

from runbooks import engine
from runbooks.models import Approval, Run


def run_context(run: Run) -> dict[str, Any]:
    steps = list(
        run.steps.select_related("done_by").prefetch_related(
            Prefetch("approvals", queryset=Approval.objects.select_related("user")), "jobs"
        )
    )
    phases = []
    for index, phase in enumerate(run.phases):
        mine = [s for s in steps if s.phase_index == index]
        required = [s for s in mine if s.required]
        phases.append(
            {
                "index": index,
                "phase": phase,
                "steps": mine,
                "done": sum(1 for s in required if s.is_done),
                "required": len(required),
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
        "rollbacks": list(run.rollbacks.order_by("pk")),
        "nav": "runs",
    }
