"""Job kinds, and the one way any of them is queued, run, beaten, retried, cancelled and reaped.

A domain module declares its kind once (``register(Kind(...))``: the model, the function that
does the work, its timeouts, its clean-up when interrupted) and asks for work with
``enqueue(job)`` (``from dashboard.jobs import lifecycle as jobs``). It never imports a task:
one Celery task (``dashboard.jobs.tasks.run_job``) runs every kind, so the circle domain ->
task -> domain is gone.

``run(kind, id)`` is what that task calls: it claims the row (compare-and-set: two workers never
run one job), starts a heartbeat thread, calls the kind's ``perform(job, context)``, and turns
what escapes it into the row's end: :class:`Transient` requeues it (up to ``max_attempts``, with
backoff), :class:`Cancelled` ends it cancelled, anything else fails it with the reason. The
reaper (``reap()``, every minute from beat) interrupts running jobs whose heart stopped for
longer than their kind's ``stale_after`` and runs the kind's clean-up; it also interrupts queued
jobs no worker took within ``queued_after`` (a lost message, no worker running) and runs the
kind's ``on_not_taken``.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from dashboard.jobs.models import Job, JobState

logger = logging.getLogger(__name__)


class Transient(Exception):
    """A failure worth another attempt (the network, a server starting up)."""


class Cancelled(Exception):
    """Raised inside ``perform`` when the job saw its cancel request."""


@dataclass
class Context:
    """What a running job's work gets: its row, a heartbeat it can add progress to, and the
    cancel request when someone makes one."""

    job: Job
    worker: str
    _progress: dict[str, Any] = field(default_factory=dict)
    _cancel: threading.Event = field(default_factory=threading.Event)
    _lost: threading.Event = field(default_factory=threading.Event)

    def progress(self, **fields: Any) -> None:
        """Fields the next beat writes with the heartbeat (e.g. bytes done)."""
        self._progress.update(fields)

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    @property
    def lost(self) -> bool:
        """The row left the running state under us (the reaper interrupted it)."""
        return self._lost.is_set()

    def check_cancelled(self) -> None:
        """Raise Cancelled when a cancel was asked for (call it between units of work)."""
        if self._cancel.is_set():
            raise Cancelled("Cancelled on request.")

    def wait_for_cancel(self, timeout: float | None = None) -> bool:
        """Block until a cancel is asked for (True) or ``timeout`` passes (False): for a
        watcher thread that must act while the work itself is blocked (a long statement)."""
        return self._cancel.wait(timeout)

    def beat(self) -> None:
        """One heartbeat now (the heartbeat thread does it every ``heartbeat_every``)."""
        if not self.job.beat(**self._progress):
            self._lost.set()
            return
        self._progress = {}
        fresh = (
            type(self.job)
            .objects.filter(pk=self.job.pk)
            .values_list("cancel_requested_at", flat=True)
        )
        if fresh.first() is not None:
            self._cancel.set()


@dataclass(frozen=True)
class Kind:
    """What a job kind declares. Timeouts are seconds; ``settings.RUNWAY_JOB_STALE_SECONDS``
    (``{"backup": 600}``) overrides ``stale_after`` per kind."""

    name: str
    model: type[Job]
    perform: Callable[[Any, Context], None]
    stale_after: float = 300
    queued_after: float = 900
    heartbeat_every: float = 15
    max_attempts: int = 3
    retry_backoff: float = 30
    on_interrupted: Callable[[Any], None] | None = None
    # The reaper interrupted a queued job no worker took within queued_after.
    on_not_taken: Callable[[Any], None] | None = None
    describe: Callable[[Any], str] = field(default=lambda job: f"{job}")
    # The seconds before each retry (the first, the second, ...; the last repeats), read when
    # the retry is sent; None: ``retry_backoff * 2**(attempts-1)``.
    retry_delays: Callable[[], Sequence[float]] | None = None
    # The Celery queue of this kind's jobs, read when one is sent; None: ``queue()``, every
    # job's queue (a kind on a queue of its own needs a worker consuming it).
    queue: Callable[[], str] | None = None

    def stale_seconds(self) -> float:
        overrides = getattr(settings, "RUNWAY_JOB_STALE_SECONDS", {}) or {}
        return float(overrides.get(self.name, self.stale_after))

    def retry_countdown(self, attempts: int) -> float:
        """Seconds to wait before the attempt after ``attempts`` failed ones."""
        delays = list(self.retry_delays()) if self.retry_delays is not None else []
        if not delays:
            return self.retry_backoff * 2 ** (attempts - 1)
        return float(delays[min(max(attempts, 1), len(delays)) - 1])

    def queue_name(self) -> str:
        return (self.queue() if self.queue is not None else "") or queue()


KINDS: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    if kind.name in KINDS and KINDS[kind.name].model is not kind.model:
        raise ValueError(f"job kind {kind.name!r} is registered twice")
    kind.model.JOB_KIND = kind.name
    KINDS[kind.name] = kind
    return kind


def kind_of(model: type[Job]) -> Kind:
    try:
        return KINDS[model.JOB_KIND]
    except KeyError:
        raise LookupError(f"{model.__name__} is not a registered job kind") from None


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# --- Queueing ---


def queue() -> str:
    """The Celery queue jobs go to (RUNWAY_JOB_QUEUE, "celery" by default: what a worker
    started without -Q consumes)."""
    return getattr(settings, "RUNWAY_JOB_QUEUE", "") or "celery"


def enqueue(job: Job, *, countdown: float = 0) -> None:
    """Send ``job`` (a saved, queued row) to the workers once the transaction commits."""
    kind = kind_of(type(job))
    from dashboard.jobs.tasks import run_job

    def send() -> None:
        run_job.apply_async(
            (kind.name, job.pk), countdown=countdown or None, queue=kind.queue_name()
        )

    transaction.on_commit(send)


# --- Running ---


def run(kind_name: str, job_id: int) -> Job | None:
    """Claim the job and do its work; None when another worker has it or it has ended.

    ``perform`` may end the job itself (``job.succeed(...)``/``job.fail(...)`` in the same
    transaction as its audit event); a job still running when it returns has succeeded."""
    kind = KINDS[kind_name]
    job = kind.model.objects.filter(pk=job_id).first()
    if job is None or not job.claim(worker_name()):
        return None
    context = Context(job, worker_name())
    beating = _Heartbeat(context, kind.heartbeat_every)
    beating.start()
    try:
        kind.perform(job, context)
    except Cancelled as exc:
        why = str(exc) or "Cancelled on request."
        _end(kind, job, "cancelled", why, lambda: job.cancelled(why))
    except Transient as exc:
        _retry(kind, job, str(exc))
    except Exception as exc:
        logger.exception("%s failed", kind.describe(job))
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        _end(kind, job, "failed", error, lambda: job.fail(error))
    else:
        if job.state == JobState.RUNNING:
            job.succeed()
    finally:
        beating.stop()
    job.refresh_from_db()
    return job


def _end(kind: Kind, job: Job, how: str, reason: str, move: Callable[[], bool]) -> bool:
    """A transition the lifecycle makes itself, audited in its transaction."""
    from dashboard.audit.chain import record

    with transaction.atomic():
        if not move():
            return False
        record(None, f"{kind.name}.{how}", job, details={"job": job.pk, "reason": reason[:2000]})
    return True


def _retry(kind: Kind, job: Job, error: str) -> None:
    if job.attempts >= kind.max_attempts:
        message = f"Gave up after {job.attempts} attempts: {error}"
        _end(kind, job, "failed", message, lambda: job.fail(message))
        return
    if _end(
        kind,
        job,
        "requeued",
        error,
        lambda: job.requeue(f"Attempt {job.attempts} failed, retrying: {error}"),
    ):
        enqueue_now(job, countdown=kind.retry_countdown(job.attempts))


def enqueue_now(job: Job, *, countdown: float = 0) -> None:
    """Send outside any transaction (a retry from inside a job)."""
    from dashboard.jobs.tasks import run_job

    kind = kind_of(type(job))
    run_job.apply_async((kind.name, job.pk), countdown=countdown or None, queue=kind.queue_name())


class _Heartbeat(threading.Thread):
    def __init__(self, context: Context, every: float) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{context.job.pk}")
        self.context = context
        self.every = every
        self._stop_event = threading.Event()

    def run(self) -> None:
        from django.db import connection

        try:
            while not self._stop_event.wait(self.every):
                self.context.beat()
        finally:
            connection.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=self.every + 5)


# --- Reaping ---


@dataclass
class Reaped:
    kind: str
    job: Job
    reason: str


def reap(*, now: datetime | None = None, kinds: list[str] | None = None) -> list[Reaped]:
    """Interrupt every running job whose heart stopped past its kind's timeout, and every queued
    job no worker took within ``queued_after``; run the kind's clean-up. Safe on any number of
    hosts at once (each interruption is a compare-and-set)."""
    now = now or timezone.now()
    reaped: list[Reaped] = []
    for kind in (KINDS[name] for name in (kinds or list(KINDS))):
        cutoff = now - timedelta(seconds=kind.stale_seconds())
        for job in kind.model.objects.filter(state=JobState.RUNNING, heartbeat_at__lt=cutoff):
            since = job.heartbeat_at
            reason = (
                f"Interrupted: its worker ({job.worker or 'unknown'}) stopped reporting "
                f"(no heartbeat since {since:%Y-%m-%d %H:%M:%S %Z})."
            )
            if _end(
                kind,
                job,
                "interrupted",
                reason,
                functools.partial(job.interrupt, reason, heartbeat=since),
            ):
                _clean_up(kind, job, kind.on_interrupted)
                reaped.append(Reaped(kind.name, job, reason))
        created = _created_field(kind.model)
        if created is None:
            continue
        waited = now - timedelta(seconds=kind.queued_after)
        for job in kind.model.objects.filter(state=JobState.QUEUED, **{f"{created}__lt": waited}):
            reason = (
                f"Interrupted: no worker took it within {kind.queued_after / 60:g} minutes "
                "(are the workers running?)."
            )
            if _end(
                kind, job, "interrupted", reason, functools.partial(job.interrupt_queued, reason)
            ):
                _clean_up(kind, job, kind.on_not_taken)
                reaped.append(Reaped(kind.name, job, reason))
    return reaped


def _clean_up(kind: Kind, job: Job, hook: Callable[[Any], None] | None) -> None:
    if hook is None:
        return
    try:
        hook(job)
    except Exception:
        logger.exception("clean-up after %s failed", kind.describe(job))


def _created_field(model: type[Job]) -> str | None:
    names = {f.name for f in model._meta.get_fields()}
    return next((n for n in ("created_at", "requested_at") if n in names), None)
