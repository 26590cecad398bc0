"""Thin tasks for the schema app: ids and JSON values in, one domain call each."""

from celery import shared_task

from dashboard.schema import gates, rehearsal


@shared_task(acks_late=True)
def run_gates(gate_run_id: int, tables: list[str] | None = None) -> None:
    gates.perform_gate_run(gate_run_id, tables)


@shared_task(acks_late=True)
def run_rehearsal(rehearsal_id: int) -> None:
    rehearsal.perform_rehearsal(rehearsal_id)


@shared_task
def reap_stale_rehearsals() -> None:
    rehearsal.reap_stale()
