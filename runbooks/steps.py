"""The ``run_step`` job kind: one attempt of a run's automated step, on a worker.

The engine starts a :class:`~runbooks.models.StepJob` when an action's turn comes (and again on
each retry) and sends it through the job lifecycle (:mod:`dashboard.jobs.lifecycle`), which
claims it (two workers never run one attempt), beats its heart while the action runs and reaps
it when the worker dies. :func:`perform` is the work: the action runs with a context that logs
into the job's live log and carries the job's cancel request; its outcome ends the job and the
step in one transaction (``engine.finish_step``). When the reaper interrupts a job, the step
fails saying its worker died (``engine.step_interrupted``), after the action's own clean-up
(``Action.recover``: a migration checks its session is gone and the lock free), and the run stops
there. An action that stopped on an abort request (:class:`~runbooks.actions.Aborted`) ends its
attempt cancelled, with the outcome it gave.
"""

from __future__ import annotations

import logging
import threading
import traceback

from django.utils import timezone

from dashboard.audit.chain import record
from dashboard.jobs import lifecycle as jobs
from dashboard.jobs.models import JobState
from runbooks import engine
from runbooks.actions import REGISTRY, Aborted, Context, Outcome
from runbooks.models import StepJob, StepRun

logger = logging.getLogger(__name__)

MAX_LOG = 100_000  # characters of an attempt's live log kept (its tail)


class Log:
    """An attempt's live log: each line, time-stamped, is written to the job's row at once, so
    the run page (polling) follows it."""

    def __init__(self, job: StepJob) -> None:
        self.job = job
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        stamp = timezone.now().strftime("%H:%M:%S")
        with self._lock:
            self.lines.append(f"{stamp} {line}")
            text = self.text()
        # The log is not the job's state: written while the job runs, never after it ended.
        StepJob.objects.filter(pk=self.job.pk, state=JobState.RUNNING).update(output=text)

    def text(self) -> str:
        return "\n".join(self.lines)[-MAX_LOG:]


def perform(job: StepJob, context: jobs.Context) -> None:
    step = StepRun.objects.select_related("run__database", "run__started_by").get(pk=job.step_id)
    job.step = step
    run = step.run
    record(
        None,
        "run.step_started",
        run,
        details={
            "step": step.step_id,
            "action": step.action,
            "job": job.pk,
            "attempt": job.attempt,
            "worker": context.worker,
        },
    )
    log = Log(job)
    try:
        outcome = engine.run_action(run, step, Context(run, step, log, job=job, lifecycle=context))
    except Aborted as exc:  # stopped on request, and says where it left things
        engine.finish_step(job, "cancelled", exc.outcome, log.text())
    except jobs.Cancelled as exc:
        log(f"cancelled: {exc}")
        engine.finish_step(job, "cancelled", Outcome("fail", f"Cancelled: {exc}"), log.text())
    except Exception as exc:  # an action's bug must not leave the step started
        logger.exception("step %s of run %s crashed", step.step_id, run.pk)
        log("".join(traceback.format_exception_only(exc)).strip())
        crashed = Outcome("fail", f"The action crashed: {type(exc).__name__}: {exc}")
        engine.finish_step(job, "failed", crashed, log.text())
    else:
        engine.finish_step(job, "succeeded", outcome, log.text())


def interrupted(job: StepJob) -> None:
    """The reaper interrupted the attempt (its worker stopped beating): the action's own
    clean-up first (a migration's: its session gone, the lock free, where the database is),
    outside any transaction because it waits on the managed database; then the step fails,
    saying what the clean-up found."""
    step = StepRun.objects.select_related("run__database").get(pk=job.step_id)
    job.step = step
    registered = REGISTRY.get(step.action)
    recovered: Outcome | None = None
    if registered is not None and registered.recover is not None and job.started_at:
        try:
            recovered = registered.recover(job)
        except Exception as exc:  # the step must fail all the same
            logger.exception("the clean-up of step %s of run %s failed", step.step_id, step.run_id)
            recovered = Outcome("fail", f"The clean-up failed: {type(exc).__name__}: {exc}")
    engine.step_interrupted(job, recovered)


jobs.register(
    jobs.Kind(
        "run_step",
        StepJob,
        perform,
        # An action may run for an hour (a big backup, a long migration) and be silent all the
        # while: its heart beats from its own thread every 5 s whatever the action does, so
        # 90 s without a beat means the worker is gone, not that the step is long.
        stale_after=90,
        heartbeat_every=5,
        # A step waits for a free worker behind other runs' long steps: after an hour with no
        # worker taking it, say so (the step fails and can be retried).
        queued_after=3600,
        # No action is retried by the lifecycle: a failed attempt fails the step, and a person
        # retries it (a new job) once they know why.
        max_attempts=1,
        on_interrupted=interrupted,
        on_not_taken=engine.step_interrupted,
        describe=lambda job: f"run step job #{job.pk}",
    )
)


def gate_run_origins(ids: list[int]) -> list[tuple[int, int, str]]:
    """Which run's step ran each gate run (its id is in the step job's evidence), oldest first:
    what dashboard.schema.origins asks (registered by runbooks/apps.py)."""
    rows = (
        StepJob.objects.filter(evidence__gate_run__in=ids)
        .order_by("created_at")
        .values_list("evidence__gate_run", "step__run_id", "step__title")
    )
    return [(int(g), int(r), str(t)) for g, r, t in rows]
