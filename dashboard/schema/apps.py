from collections.abc import Iterable

from django.apps import AppConfig
from django.urls import reverse


class SchemaConfig(AppConfig):
    name = "dashboard.schema"
    label = "schema"

    def ready(self) -> None:
        from dashboard.audit import links

        # Each registers its job kind (gate_run, rehearsal) with the lifecycle.
        from dashboard.schema import gates, rehearsal  # noqa: F401

        # The audit page links gate runs' and rehearsals' events to their pages.
        links.register("gaterun", _gate_run_links)
        links.register("rehearsal", _rehearsal_links)


def _gate_run_links(ids: list[int]) -> Iterable[tuple[int, str]]:
    from dashboard.schema.models import GateRun

    for pk, name in GateRun.objects.filter(pk__in=ids).values_list("pk", "database__name"):
        yield pk, reverse("schema-gate-run", args=[name, pk])


def _rehearsal_links(ids: list[int]) -> Iterable[tuple[int, str]]:
    from dashboard.schema.models import Rehearsal

    for pk, name in Rehearsal.objects.filter(pk__in=ids).values_list("pk", "database__name"):
        yield pk, reverse("schema-rehearsal", args=[name, pk])
