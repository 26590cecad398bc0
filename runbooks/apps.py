import importlib
from collections.abc import Iterable

from django.apps import AppConfig
from django.urls import reverse

TRIGGER_HOOKS = "dashboard.triggers.hooks"


class RunbooksConfig(AppConfig):
    name = "runbooks"
    label = "runbooks"
    verbose_name = "Runbooks"

    def ready(self) -> None:
        from dashboard.audit import links
        from dashboard.schema import origins
        from runbooks import steps  # (also registers the run_step job kind)

        # The preflight page links a gate run to the run whose step ran it.
        origins.register(steps.gate_run_origins)
        # The audit page links a run's events, and its step jobs', to the run's page.
        links.register("run", _run_links)
        links.register("stepjob", _step_job_links)

        # The triggers app, once installed, starts a rollback when a "roll back" rule fires; it
        # never imports runbooks: this hands it the function. Absent, nothing to do (a broken
        # hooks module still fails loudly).
        try:
            hooks = importlib.import_module(TRIGGER_HOOKS)
        except ModuleNotFoundError as exc:
            if exc.name not in ("dashboard.triggers", TRIGGER_HOOKS):
                raise
            return
        from runbooks.rollback import start_rollback

        hooks.register_rollback(start_rollback)


def _run_links(ids: list[int]) -> Iterable[tuple[int, str]]:
    from runbooks.models import Run

    for pk, name in Run.objects.filter(pk__in=ids).values_list("pk", "database__name"):
        yield pk, reverse("run-detail", args=[name, pk])


def _step_job_links(ids: list[int]) -> Iterable[tuple[int, str]]:
    from runbooks.models import StepJob

    rows = StepJob.objects.filter(pk__in=ids).values_list(
        "pk", "step__run__database__name", "step__run_id"
    )
    for pk, name, run_id in rows:
        yield pk, reverse("run-detail", args=[name, run_id])
