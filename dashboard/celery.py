import os

from celery import Celery
from celery.signals import beat_init, worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")

app = Celery("dashboard")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.conf.imports = ["dashboard.backups.scheduled_tasks"]  # autodiscovery reads only tasks.py


def _refuse_to_start_insecure(process: str) -> None:
    from dashboard.checks import InsecureConfiguration, refuse_to_start_insecure

    try:
        refuse_to_start_insecure(process)
    except InsecureConfiguration as refused:
        # Celery logs and swallows a signal handler's exception; SystemExit stops the process.
        raise SystemExit(str(refused)) from None


# Celery runs no system checks of its own: a worker or beat with an insecure configuration exits
# with the checks' messages instead of starting.
@worker_init.connect
def refuse_insecure_worker(**kwargs: object) -> None:
    _refuse_to_start_insecure("Celery worker")


@beat_init.connect
def refuse_insecure_beat(**kwargs: object) -> None:
    _refuse_to_start_insecure("Celery beat")
