"""The runbooks' periodic task (beat); a run's steps are jobs (runbooks.steps)."""

from celery import shared_task


@shared_task
def run_schedules() -> list[str]:
    """Every minute: reminders of due phases, approvals whose window passed or went stale."""
    from runbooks import schedule

    return schedule.tick()
