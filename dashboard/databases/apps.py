from django.apps import AppConfig


class DatabasesConfig(AppConfig):
    name = "dashboard.databases"
    label = "databases"

    def ready(self) -> None:
        from dashboard.databases import checks  # noqa: F401  (registers its job kind)
