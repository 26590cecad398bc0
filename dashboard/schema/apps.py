from django.apps import AppConfig


class SchemaConfig(AppConfig):
    name = "dashboard.schema"
    label = "schema"

    def ready(self) -> None:
        # Each registers its job kind (gate_run, rehearsal) with the lifecycle.
        from dashboard.schema import gates, rehearsal  # noqa: F401
