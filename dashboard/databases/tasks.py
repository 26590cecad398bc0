from celery import shared_task

from dashboard.databases import checks


@shared_task(acks_late=True)
def run_connection_check(check_id: int) -> None:
    checks.perform(check_id)


@shared_task
def check_all_connections() -> None:
    checks.request_all()
