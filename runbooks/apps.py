import importlib

from django.apps import AppConfig

TRIGGER_HOOKS = "dashboard.triggers.hooks"


class RunbooksConfig(AppConfig):
    name = "runbooks"
    label = "runbooks"
    verbose_name = "Runbooks"

    def ready(self) -> None:
        from dashboard.audit import links
        from dashboard.schema import origins
        from runbooks import steps  # (also registers the run_step job kind)
        from runbooks.models import Run, StepJob

        # The preflight page links a gate run to the run whose step ran it.
        origins.register(steps.gate_run_origins)
        # The audit page links a run's events, and its step jobs', to the run's page.
        links.register_page("run", Run, "run-detail", "database__name", "pk")
        links.register_page(
            "stepjob", StepJob, "run-detail", "step__run__database__name", "step__run_id"
        )

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
