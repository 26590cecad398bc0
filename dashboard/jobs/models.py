"""The one life every background job lives: the abstract model its rows share.

A job is a row: queued, then running on exactly one worker (claimed by compare-and-set), beating
its heart while it works, and ending succeeded, failed, interrupted (its worker died or stopped
beating: the reaper says so) or cancelled (someone asked, and the job saw it). Every state change
is one of the transition methods below, each a conditional UPDATE that names the state it leaves,
so two processes can never both move one row: the loser gets False. Nothing else in Runway
assigns a job's state.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, ClassVar, Self, cast

from django.db import models
from django.utils import timezone


class JobState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    INTERRUPTED = "interrupted", "Interrupted"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE = (JobState.QUEUED, JobState.RUNNING)
FINISHED = (JobState.SUCCEEDED, JobState.FAILED, JobState.INTERRUPTED, JobState.CANCELLED)


class JobQuerySet(models.QuerySet):
    def active(self) -> Self:
        return self.filter(state__in=ACTIVE)

    def finished(self) -> Self:
        return self.filter(state__in=FINISHED)

    def stale(self, *, now: datetime | None = None) -> Self:
        """Running jobs whose heart stopped: no beat for the kind's ``stale_after``."""
        now = now or timezone.now()
        cutoff = now - timedelta(seconds=cast("type[Job]", self.model).job_kind().stale_seconds())
        return self.filter(state=JobState.RUNNING, heartbeat_at__lt=cutoff)


class Job(models.Model):
    """Fields and transitions every job kind shares. A concrete model names its kind in
    ``JOB_KIND`` and registers it (see :mod:`dashboard.jobs.lifecycle`)."""

    JOB_KIND: ClassVar[str] = ""

    state = models.CharField(max_length=12, choices=JobState.choices, default=JobState.QUEUED)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    worker = models.CharField(max_length=200, blank=True, help_text="host:pid that ran it")
    cancel_requested_at = models.DateTimeField(null=True, blank=True)

    objects = JobQuerySet.as_manager()

    class Meta:
        abstract = True

    @classmethod
    def job_kind(cls) -> Any:
        from dashboard.jobs.lifecycle import kind_of

        return kind_of(cls)

    # --- what a page asks ---

    @property
    def is_done(self) -> bool:
        return self.state in FINISHED

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE

    @property
    def succeeded(self) -> bool:
        return self.state == JobState.SUCCEEDED

    # --- transitions: each a compare-and-set; False when another process moved the row ---

    def _move(self, leaving: tuple[str, ...], to: str, **fields: Any) -> bool:
        moved = type(self).objects.filter(pk=self.pk, state__in=leaving).update(state=to, **fields)
        if moved:
            self.state = to
            for name, value in fields.items():
                setattr(self, name, value)
        return bool(moved)

    def claim(self, worker: str) -> bool:
        """queued -> running, on this worker. Never twice: the second claimer gets False."""
        now = timezone.now()
        return self._move(
            (JobState.QUEUED,),
            JobState.RUNNING,
            started_at=now,
            heartbeat_at=now,
            worker=worker[:200],
            attempts=models.F("attempts") + 1,
        ) and self._reload("attempts")

    def beat(self, **progress: Any) -> bool:
        """The heart of a running job (with any progress fields). False when the job is no
        longer running (interrupted by the reaper, or cancelled): the worker should stop."""
        fields = {"heartbeat_at": timezone.now(), **progress}
        return self._move((JobState.RUNNING,), JobState.RUNNING, **fields)

    def succeed(self, **result: Any) -> bool:
        return self._move(
            (JobState.RUNNING,), JobState.SUCCEEDED, finished_at=timezone.now(), **result
        )

    def fail(self, error: str, **result: Any) -> bool:
        return self._move(
            (JobState.RUNNING,),
            JobState.FAILED,
            finished_at=timezone.now(),
            error=error,
            **result,
        )

    def fail_queued(self, error: str, **result: Any) -> bool:
        """queued -> failed: a job refused before it could start (its input is gone)."""
        return self._move(
            (JobState.QUEUED,), JobState.FAILED, finished_at=timezone.now(), error=error, **result
        )

    def requeue(self, error: str) -> bool:
        """running -> queued after a transient failure: another attempt will claim it."""
        return self._move((JobState.RUNNING,), JobState.QUEUED, error=error, heartbeat_at=None)

    def interrupt(self, reason: str, *, heartbeat: datetime | None = None) -> bool:
        """running -> interrupted (the reaper). With ``heartbeat``, only if the heart has not
        beaten since: a live worker's beat wins the race."""
        query = type(self).objects.filter(pk=self.pk, state=JobState.RUNNING)
        if heartbeat is not None:
            query = query.filter(heartbeat_at=heartbeat)
        now = timezone.now()
        moved = query.update(state=JobState.INTERRUPTED, finished_at=now, error=reason)
        if moved:
            self.state, self.finished_at, self.error = JobState.INTERRUPTED, now, reason
        return bool(moved)

    def interrupt_queued(self, reason: str) -> bool:
        """queued -> interrupted: nobody took it in time (the reaper)."""
        return self._move(
            (JobState.QUEUED,), JobState.INTERRUPTED, finished_at=timezone.now(), error=reason
        )

    def request_cancel(self) -> bool:
        """Ask the job to stop: a queued one is cancelled at once; a running one sees the
        request at its next beat and stops (see lifecycle.Context.check_cancelled)."""
        now = timezone.now()
        if self._move(
            (JobState.QUEUED,),
            JobState.CANCELLED,
            finished_at=now,
            cancel_requested_at=now,
            error="Cancelled before it started.",
        ):
            return True
        return bool(
            type(self)
            .objects.filter(pk=self.pk, state=JobState.RUNNING)
            .update(cancel_requested_at=now)
        )

    def cancelled(self, reason: str, **result: Any) -> bool:
        """running -> cancelled: the job saw the request and stopped cleanly."""
        return self._move(
            (JobState.RUNNING,),
            JobState.CANCELLED,
            finished_at=timezone.now(),
            error=reason,
            **result,
        )

    def _reload(self, *names: str) -> bool:
        fresh = type(self).objects.filter(pk=self.pk).values(*names).first()
        for name, value in (fresh or {}).items():
            setattr(self, name, value)
        return True
