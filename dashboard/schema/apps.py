from collections.abc import Iterable
from typing import Any

from django.apps import AppConfig
from django.urls import reverse


class SchemaConfig(AppConfig):
    name = "dashboard.schema"
    label = "schema"

    def ready(self) -> None:
        from dashboard.audit import links
        from dashboard.databases import checks

        # Each registers its job kind (gate_run, rehearsal) with the lifecycle.
        from dashboard.schema import gates, rehearsal  # noqa: F401

        # The audit page links gate runs' and rehearsals' events to their pages.
        links.register("gaterun", _gate_run_links)
        links.register("rehearsal", _rehearsal_links)
        # A check that finds pending revisions has them analysed on the worker (stored).
        checks.AFTER_CONNECTED.append(_analyse_pending)


def _analyse_pending(check: Any) -> None:
    from dashboard.schema import analysis

    analysis.reports_for(
        check.database, analysis.pending_of(check.database, check).revisions, check=check
    )


def _gate_run_links(ids: list[int]) -> Iterable[tuple[int, str]]:
    from dashboard.schema.models import GateRun

    for pk, name in GateRun.objects.filter(pk__in=ids).values_list("pk", "database__name"):
        yield pk, reverse("schema-gate-run", args=[name, pk])


def _rehearsal_links(ids: list[int]) -> Iterable[tuple[int, str]]:
    from dashboard.schema.models import Rehearsal

    for pk, name in Rehearsal.objects.filter(pk__in=ids).values_list("pk", "database__name"):
        yield pk, reverse("schema-rehearsal", args=[name, pk])
