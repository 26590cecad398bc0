"""Thin Celery tasks for the per-database beat schedules (see schedules.py).

Registered through ``app.conf.imports`` in dashboard/celery.py, since autodiscovery only reads
``tasks.py``.
"""

from celery import shared_task

from dashboard.backups import scheduled


@shared_task
def run_scheduled_backup(database_id: int) -> None:
    scheduled.run_scheduled_backup(database_id)


@shared_task
def run_scheduled_validation(database_id: int) -> None:
    scheduled.run_scheduled_validation(database_id)
