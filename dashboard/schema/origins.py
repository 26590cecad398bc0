"""Which runbook run a gate run was part of, for the pages that list gate runs.

The runbook action ``gates.preflight`` records an ordinary ``GateRun`` and keeps its id in its
step job's evidence (``{"gate_run": <id>, ...}``). This app never imports the runbook engine
(contract ``domain-runbooks``), so the step jobs are looked up through Django's app registry by
name, only when the ``runbooks`` app is installed; without it no gate run has an origin.

A gate run whose step is still running has no origin yet: its step job writes the evidence
when it finishes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.apps import apps
from django.urls import NoReverseMatch, reverse

__all__ = ["Origin", "gate_run_origins"]


@dataclass(frozen=True)
class Origin:
    run_id: int
    step_title: str
    url: str


def gate_run_origins(database_name: str, gate_run_ids: Iterable[int]) -> dict[int, Origin]:
    """The runbook run (and its step) each of ``gate_run_ids`` was run by; ids run from the
    preflight page or ``manage.py preflight`` are absent. One query."""
    ids = [int(i) for i in gate_run_ids]
    if not ids or not apps.is_installed("runbooks"):
        return {}
    step_job = apps.get_model("runbooks", "StepJob")
    rows = (
        step_job.objects.filter(evidence__gate_run__in=ids)
        .order_by("created_at")
        .values_list("evidence__gate_run", "step__run_id", "step__title")
    )
    found: dict[int, Origin] = {}
    for gate_run, run_id, title in rows:
        try:
            url = reverse("run-detail", args=[database_name, run_id])
        except NoReverseMatch:
            url = ""
        found[int(gate_run)] = Origin(int(run_id), str(title), url)
    return found
