from celery import shared_task

from runbooks import engine


@shared_task(acks_late=True)
def run_step(step_id: int) -> None:
    engine.perform_step(step_id)


@shared_task
def reap_stale_steps() -> None:
    engine.reap_stale_steps()
