"""Which runbook run a gate run was part of, for the pages that list gate runs.

The runbook action ``gates.preflight`` records an ordinary ``GateRun`` and keeps its id in its
step job's evidence (``{"gate_run": <id>, ...}``). This app never imports the runbook engine
(contract ``domain-runbooks``): the runbooks app hands it the lookup when it starts
(:func:`register`, from ``runbooks/apps.py``, as it does the triggers' rollback); without it no
gate run has an origin.

A gate run whose step is still running has no origin yet: its step job writes the evidence
when it finishes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.urls import NoReverseMatch, reverse

__all__ = ["Origin", "gate_run_origins", "register"]

# (gate run ids) -> [(gate run id, run id, step title), ...], oldest first.
Lookup = Callable[[list[int]], Iterable[tuple[int, int, str]]]
_lookup: Lookup | None = None


def register(lookup: Lookup) -> None:
    global _lookup
    _lookup = lookup


@dataclass(frozen=True)
class Origin:
    run_id: int
    step_title: str
    url: str


def gate_run_origins(database_name: str, gate_run_ids: Iterable[int]) -> dict[int, Origin]:
    """The runbook run (and its step) each of ``gate_run_ids`` was run by; ids run from the
    preflight page or ``manage.py preflight`` are absent. One query."""
    ids = [int(i) for i in gate_run_ids]
    if not ids or _lookup is None:
        return {}
    found: dict[int, Origin] = {}
    for gate_run, run_id, title in _lookup(ids):
        try:
            url = reverse("run-detail", args=[database_name, run_id])
        except NoReverseMatch:
            url = ""
        found[int(gate_run)] = Origin(int(run_id), str(title), url)
    return found
