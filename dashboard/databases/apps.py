from collections.abc import Iterable

from django.apps import AppConfig
from django.urls import reverse


class DatabasesConfig(AppConfig):
    name = "dashboard.databases"
    label = "databases"

    def ready(self) -> None:
        from dashboard.audit import links
        from dashboard.databases import checks  # noqa: F401  (registers its job kind)

        # The audit page links a database's events and its connection checks' to their pages.
        links.register("manageddatabase", _database_links)
        links.register("connectioncheck", _check_links)


def _database_links(ids: list[int]) -> Iterable[tuple[int, str]]:
    from dashboard.databases.models import ManagedDatabase

    for pk, name in ManagedDatabase.objects.filter(pk__in=ids).values_list("pk", "name"):
        yield pk, reverse("database-detail", args=[name])


def _check_links(ids: list[int]) -> Iterable[tuple[int, str]]:
    from dashboard.databases.models import ConnectionCheck

    rows = ConnectionCheck.objects.filter(pk__in=ids).values_list("pk", "database__name")
    for pk, name in rows:
        yield pk, reverse("database-check", args=[name, pk])
