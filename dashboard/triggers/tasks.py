from celery import shared_task

from dashboard.triggers import watch


@shared_task
def watch_triggers() -> int:
    """Every RUNWAY_TRIGGER_SECONDS (beat): sample and judge every active watch."""
    return watch.tick()
