from celery import shared_task

from dashboard.databases import checks


@shared_task
def check_all_connections() -> None:
    checks.request_all()
