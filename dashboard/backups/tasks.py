"""The backups' periodic task. Backups and validations themselves are jobs: they run through the
one lifecycle task (``dashboard.jobs.tasks.run_job``) and are reaped by its one reaper; the
per-database schedules' tasks are in scheduled_tasks.py."""

from celery import shared_task

from dashboard.backups import retention


@shared_task
def prune_backups() -> None:
    retention.prune()


@shared_task
def check_backup_policies() -> list[str]:
    """Every few minutes (beat): announce each backup policy that has just been missed."""
    from dashboard.backups import lapses

    return lapses.check()
