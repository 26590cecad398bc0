"""The one task every job kind runs through, and the one reaper for all of them."""

from celery import shared_task

from dashboard.jobs import lifecycle


@shared_task(acks_late=True)
def run_job(kind: str, job_id: int) -> None:
    lifecycle.run(kind, job_id)


@shared_task
def reap_jobs() -> None:
    lifecycle.reap()
