"""Time on a run (beat runs :func:`tick` every minute): a phase whose due date comes near
reminds the team once, and an approved run whose deployment window passed, or whose approvals
went stale, goes back to review before anyone can press Deploy."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from dashboard.audit.chain import record
from runbooks import engine, notices
from runbooks.models import Run, RunState


def tick(now: datetime | None = None) -> list[str]:
    """What it did, in words (for the task's result and the tests)."""
    now = now or timezone.now()
    done: list[str] = []
    active = Run.objects.filter(state=RunState.ACTIVE).select_related("database", "started_by")
    for run in active.filter(deployed_at=None, steps__kind="approval").distinct():
        for reason in engine.recheck_approvals(run.pk):
            done.append(f"run #{run.pk}: {reason}")
    for run in active.exclude(planned_at=None):
        done.extend(_remind(run, now))
    return done


def _remind(run: Run, now: datetime) -> list[str]:
    lead = timedelta(minutes=settings.RUNWAY_REMINDER_MINUTES)
    sent = []
    for index in range(run.phase_index, len(run.phases)):
        phase = run.phases[index]
        due = run.due_of(index)
        key = str(phase["id"])
        if due is None or now < due - lead or key in run.reminders:
            continue
        with transaction.atomic():
            locked = Run.objects.select_for_update().get(pk=run.pk)
            if key in locked.reminders or locked.state != RunState.ACTIVE:
                continue
            locked.reminders = {**locked.reminders, key: now.isoformat()}
            locked.save(update_fields=["reminders"])
            late = now >= due
            when = f"{timezone.localtime(due):%Y-%m-%d %H:%M}"
            words = f"{'overdue since' if late else 'due at'} {when}"
            notices.run_due(
                locked,
                f"{phase['title']} of run #{run.pk} on {run.database.name} is {words}",
                f"The phase “{phase['title']}” of run #{run.pk} ({run.runbook_title}) on "
                f"{run.database.name} is {words} (planned deployment "
                f"{timezone.localtime(run.planned_at or now):%Y-%m-%d %H:%M}); "
                f"{'it is not complete' if index == run.phase_index else 'it has not started'}.",
                {"phase": key, "due": due.isoformat(), "overdue": late},
            )
            record(
                None,
                "run.reminded",
                locked,
                details={"phase": key, "due": due.isoformat(), "overdue": late},
            )
        sent.append(f"run #{run.pk}: {key} {words}")
    return sent
