from django.apps import AppConfig


class DatabasesConfig(AppConfig):
    name = "dashboard.databases"
    label = "databases"

    def ready(self) -> None:
        from dashboard.audit import links
        from dashboard.databases import checks  # noqa: F401  (registers its job kind)
        from dashboard.databases.models import ConnectionCheck, ManagedDatabase

        # The audit page links a database's events and its connection checks' to their pages.
        links.register_page("manageddatabase", ManagedDatabase, "database-detail", "name")
        links.register_page(
            "connectioncheck", ConnectionCheck, "database-check", "database__name", "pk"
        )
