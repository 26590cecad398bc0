import importlib

from django.apps import AppConfig

TRIGGER_HOOKS = "dashboard.triggers.hooks"


class RunbooksConfig(AppConfig):
    name = "runbooks"
    label = "runbooks"
    verbose_name = "Runbooks"

    def ready(self) -> None:
        from runbooks import steps  # noqa: F401  (registers the run_step job kind)

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
