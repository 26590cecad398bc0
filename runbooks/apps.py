from django.apps import AppConfig


class RunbooksConfig(AppConfig):
    name = "runbooks"
    label = "runbooks"
    verbose_name = "Runbooks"

    def ready(self) -> None:
        from runbooks import steps  # noqa: F401  (registers the run_step job kind)
