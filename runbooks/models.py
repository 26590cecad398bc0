"""Runs of runbooks: a run copies its runbook's phases and steps when it starts (so editing the
library never changes a run under way), and each step records who did what, when, with what
evidence."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse
from django.utils import timezone

from dashboard.databases.models import Environment, ManagedDatabase
from dashboard.jobs.models import Job, JobState


class RunState(models.TextChoices):
    ACTIVE = "active", "Active"
    COMPLETED = "completed", "Completed"
    ABORTED = "aborted", "Aborted"
    REJECTED = "rejected", "Rejected"


class Review(models.TextChoices):
    """Where a run's review stands while its approval steps are open."""

    OPEN = "open", "Waiting for review"
    CHANGES = "changes", "Changes requested"


class Run(models.Model):
    runbook_id = models.SlugField(max_length=63)
    runbook_title = models.CharField(max_length=200)
    runbook = models.JSONField(help_text="The runbook as it was when the run started")
    database = models.ForeignKey(ManagedDatabase, on_delete=models.PROTECT, related_name="runs")
    target_revision = models.CharField(max_length=64, blank=True)
    from_revisions = models.JSONField(default=list, blank=True)
    revisions = models.JSONField(default=list, blank=True, help_text="Pending at the start")
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    state = models.CharField(max_length=10, choices=RunState.choices, default=RunState.ACTIVE)
    reason = models.TextField(blank=True, help_text="Why it was aborted or rejected")
    phase_index = models.PositiveIntegerField(default=0, help_text="The open phase")
    required_approvals = models.PositiveIntegerField(default=0)
    backup = models.ForeignKey(
        "backups.Backup", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    risk_hash = models.CharField(max_length=64, blank=True)
    # The critical tables as they were before execution began (taken by the upgrade step, once:
    # a resumed upgrade keeps the first), compared by the integrity step.
    snapshot_before = models.ForeignKey(
        "schema.DataSnapshot", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # A rollback run (the failed-migration-rollback runbook started by runbooks.rollback): the
    # run it rolls back, who asked and why, the grace period a lead may cancel it in, and the
    # path it chose once the grace ended (``rollback_plan``: empty until then).
    rollback_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="rollbacks"
    )
    rollback_source = models.CharField(max_length=200, blank=True)
    rollback_reason = models.TextField(blank=True)
    grace_until = models.DateTimeField(null=True, blank=True)
    rollback_plan = models.JSONField(default=dict, blank=True)
    cancelled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # Approval apart from rollout (runbooks.review): a destructive step after an approval waits
    # for someone to press Deploy, inside the deployment window when one is set. The planned
    # time turns the runbook's phase offsets into due dates (runbooks.schedule).
    planned_at = models.DateTimeField(null=True, blank=True)
    window_start = models.DateTimeField(null=True, blank=True)
    window_end = models.DateTimeField(null=True, blank=True)
    deployed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    deployed_at = models.DateTimeField(null=True, blank=True)
    review_state = models.CharField(max_length=10, choices=Review.choices, default=Review.OPEN)
    # The worst risk grade of the pending revisions when the run started or was amended: what
    # the approval policy scales with.
    max_grade = models.CharField(max_length=10, blank=True)
    # Reminders already sent: {"<phase id>": "<when>", "window": "<when>"}.
    reminders = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["database", "state"])]

    def __str__(self) -> str:
        return f"run #{self.pk} {self.runbook_id} on {self.database.name}"

    def get_absolute_url(self) -> str:
        return reverse("run-detail", args=[self.database.name, self.pk])

    @property
    def is_active(self) -> bool:
        return self.state == RunState.ACTIVE

    @property
    def is_rollback(self) -> bool:
        return self.rollback_of_id is not None

    @property
    def in_grace(self) -> bool:
        """A rollback that has not begun yet and whose grace period runs: a lead may cancel."""
        return (
            self.is_rollback
            and self.is_active
            and not self.rollback_plan
            and self.grace_until is not None
            and timezone.now() < self.grace_until
        )

    @property
    def phases(self) -> list[dict[str, object]]:
        return list(self.runbook.get("phases", []))

    def runbook_steps(self) -> list[dict[str, Any]]:
        """The steps of the runbook as it was when the run started, in order."""
        return [step for phase in self.runbook.get("phases", []) for step in phase.get("steps", [])]

    @property
    def changes_requested(self) -> bool:
        return self.review_state == Review.CHANGES

    def due_of(self, index: int) -> datetime | None:
        """When phase ``index`` is due: the planned time plus the phase's offset (``due``)."""
        offset = self.phases[index].get("due_seconds") if index < len(self.phases) else None
        if self.planned_at is None or not isinstance(offset, int):
            return None
        return self.planned_at + timedelta(seconds=offset)

    def end(self, state: str, reason: str = "") -> bool:
        """active -> completed, aborted or rejected; False when it had already ended."""
        now = timezone.now()
        moved = Run.objects.filter(pk=self.pk, state=RunState.ACTIVE).update(
            state=state, reason=reason, finished_at=now
        )
        if moved:
            self.state, self.reason, self.finished_at = state, reason, now
        return bool(moved)


class StepState(models.TextChoices):
    """Where a step stands in its run. An action's work has its own life in its jobs
    (:class:`StepJob`): while one is queued or running the step is ``started``."""

    LOCKED = "locked", "Locked"  # its phase is not open yet
    OPEN = "open", "Open"  # a person can tick or decide it / an action can start
    WAITING = "waiting", "Waiting"  # an approval or action waits for earlier steps
    STARTED = "started", "Started"  # an action handed to its job (queued or running)
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class StepRun(models.Model):
    """One step of a run and its place in the run's state machine. Only the methods below move
    it; each is a compare-and-set on the state it leaves (the engine also holds the run's row
    lock). An action step's attempts are its jobs, newest last; the step shows the current one's
    log, verdict and evidence, and ends when that job ends."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps")
    phase_index = models.PositiveIntegerField()
    position = models.PositiveIntegerField()
    step_id = models.SlugField(max_length=63)
    kind = models.CharField(max_length=10)  # check | action | approval
    title = models.CharField(max_length=300)
    help = models.TextField(blank=True)
    required = models.BooleanField(default=True)
    action = models.CharField(max_length=63, blank=True)
    role = models.CharField(max_length=20, blank=True)
    count = models.PositiveIntegerField(default=0)
    four_eyes = models.BooleanField(default=True)
    state = models.CharField(max_length=10, choices=StepState.choices, default=StepState.LOCKED)
    summary = models.TextField(blank=True, help_text="The step's last word: result or reason")
    note = models.TextField(blank=True)
    done_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["phase_index", "position"]
        constraints = [
            models.UniqueConstraint(fields=["run", "step_id"], name="one_step_id_per_run")
        ]

    def __str__(self) -> str:
        return f"{self.step_id} of run #{self.run_id}"

    # --- what a page asks ---

    @property
    def is_done(self) -> bool:
        return self.state == StepState.DONE

    @property
    def job(self) -> StepJob | None:
        """The current attempt of an action step (its newest job), None before the first."""
        if "jobs" in getattr(self, "_prefetched_objects_cache", {}):
            return max(self.jobs.all(), key=lambda j: j.attempt, default=None)
        return self.jobs.order_by("-attempt").first()

    @property
    def history(self) -> list[StepJob]:
        """The earlier attempts, newest first (the current one is :attr:`job`)."""
        return sorted(self.jobs.all(), key=lambda j: -j.attempt)[1:]

    @property
    def status(self) -> str:
        """What a page shows: the step's state, or its job's while it is started."""
        if self.state == StepState.STARTED:
            job = self.job
            return job.state if job is not None else self.state
        return self.state

    @property
    def is_live(self) -> bool:
        """An action whose job is queued or running."""
        job = self.job if self.state == StepState.STARTED else None
        return job is not None and job.is_active

    @property
    def verdict(self) -> str:
        job = self.job if self.kind == "action" else None
        if job is None:
            return ""
        if job.verdict:
            return job.verdict
        return "fail" if job.state in JOB_ENDED_BADLY else ""

    @property
    def output(self) -> str:
        job = self.job if self.kind == "action" else None
        return job.output if job is not None else ""

    @property
    def evidence(self) -> dict[str, Any]:
        job = self.job if self.kind == "action" else None
        return job.evidence if job is not None else {}

    # --- transitions: each a compare-and-set; False when the step was not where it must be ---

    def _move(self, leaving: tuple[str, ...], to: str, **fields: Any) -> bool:
        moved = StepRun.objects.filter(pk=self.pk, state__in=leaving).update(state=to, **fields)
        if moved:
            self.state = to
            for name, value in fields.items():
                setattr(self, name, value)
        return bool(moved)

    def open(self) -> bool:
        """A check its phase reached, an approval whose turn came."""
        return self._move((StepState.LOCKED, StepState.WAITING), StepState.OPEN)

    def wait(self) -> bool:
        """An action or approval behind a sequential step that is not done."""
        return self._move((StepState.LOCKED, StepState.OPEN, StepState.FAILED), StepState.WAITING)

    def lock(self) -> bool:
        """Back to not open: its phase closed again (approvals void, run aborted). A started
        step only once its job is no longer active (withdrawn before it ran)."""
        job = self.job if self.state == StepState.STARTED else None
        if job is not None and job.is_active:
            return False
        return self._move((StepState.OPEN, StepState.WAITING, StepState.STARTED), StepState.LOCKED)

    def start(self) -> StepJob | None:
        """An action's turn: a new job (its next attempt) is queued for it. The caller sends it
        (``jobs.enqueue``) in the same transaction."""
        if self.kind != "action" or not self._move(
            (StepState.LOCKED, StepState.WAITING, StepState.OPEN),
            StepState.STARTED,
            started_at=timezone.now(),
            finished_at=None,
            summary="",
        ):
            return None
        last = self.jobs.aggregate(n=models.Max("attempt"))["n"] or 0
        return StepJob.objects.create(step=self, attempt=last + 1)

    def finish(self, ok: bool, summary: str) -> bool:
        """A started action's job ended: done when it succeeded with a passing verdict, failed
        otherwise (with the reason)."""
        return self._move(
            (StepState.STARTED,),
            StepState.DONE if ok else StepState.FAILED,
            summary=summary[:5000],
            finished_at=timezone.now(),
        )

    def retry(self) -> bool:
        """A failed action opens again; the engine starts its next attempt."""
        return self.kind == "action" and self._move((StepState.FAILED,), StepState.OPEN)

    def tick(self, actor: Any, note: str) -> bool:
        return self.kind == "check" and self._move(
            (StepState.OPEN,),
            StepState.DONE,
            note=note,
            done_by=actor,
            finished_at=timezone.now(),
        )

    def approve(self, summary: str) -> bool:
        return self.kind == "approval" and self._move(
            (StepState.OPEN,), StepState.DONE, summary=summary, finished_at=timezone.now()
        )

    def reject(self, summary: str) -> bool:
        return self.kind == "approval" and self._move(
            (StepState.OPEN,), StepState.FAILED, summary=summary, finished_at=timezone.now()
        )

    def void(self, summary: str) -> bool:
        """An approval that no longer holds opens again, saying why."""
        return self.kind == "approval" and self._move(
            (StepState.DONE,), StepState.OPEN, summary=summary, finished_at=None
        )

    def reset(self, summary: str) -> bool:
        """The run was amended before its deployment: the step starts over (an action's earlier
        attempts stay in its history; a tick's note and author are cleared, the audit trail
        keeps them). Never a started step: its job must end first."""
        return self._move(
            (StepState.OPEN, StepState.WAITING, StepState.DONE, StepState.FAILED),
            StepState.LOCKED,
            summary=summary,
            note="",
            done_by=None,
            started_at=None,
            finished_at=None,
        )


JOB_ENDED_BADLY = (JobState.FAILED, JobState.INTERRUPTED, JobState.CANCELLED)


class StepJob(Job):
    """One attempt of an action step: a job of kind ``run_step`` (see :mod:`runbooks.steps`).
    A retry is a new row, so every attempt keeps its log, verdict, evidence and end."""

    step = models.ForeignKey(StepRun, on_delete=models.CASCADE, related_name="jobs")
    attempt = models.PositiveIntegerField(help_text="1 for the step's first job, 2 after a retry")
    created_at = models.DateTimeField(default=timezone.now)
    verdict = models.CharField(max_length=4, blank=True)  # pass | warn | fail (the action's)
    summary = models.TextField(blank=True, help_text="The action's own summary")
    output = models.TextField(blank=True, help_text="The action's live log")
    evidence = models.JSONField(default=dict, blank=True)
    progress = models.JSONField(
        default=dict, blank=True, help_text="Live progress, written by the action while it runs"
    )
    stop_request = models.JSONField(
        default=dict, blank=True, help_text="Who asked it to stop, why, and the grace period"
    )

    class Meta:
        ordering = ["step", "attempt"]
        constraints = [
            models.UniqueConstraint(fields=["step", "attempt"], name="one_job_per_step_attempt"),
            models.UniqueConstraint(
                fields=["step"],
                condition=models.Q(state__in=["queued", "running"]),
                name="one_active_job_per_step",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.step.step_id} of run #{self.step.run_id}, attempt {self.attempt}"


class Decision(models.TextChoices):
    APPROVE = "approve", "Approved"
    CHANGES = "changes", "Changes requested"
    REJECT = "reject", "Rejected"


class Approval(models.Model):
    """A lead's decision, pinned to what they reviewed."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="approvals")
    step = models.ForeignKey(StepRun, on_delete=models.CASCADE, related_name="approvals")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    decision = models.CharField(max_length=10, choices=Decision.choices)
    comment = models.TextField()
    target_revision = models.CharField(max_length=64, blank=True)
    risk_hash = models.CharField(max_length=64, blank=True)
    backup_id_seen = models.BigIntegerField(null=True, blank=True)
    window_end_seen = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Set once an approval stopped holding for good (it went stale, its window passed, the run
    # was amended): it never holds again, whatever changes after.
    voided_at = models.DateTimeField(null=True, blank=True)
    void_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.get_decision_display()} by {self.user} on run #{self.run_id}"

    def void_reasons(self, run: Run, now: datetime | None = None) -> list[str]:
        """Why this approval no longer holds for the run as it is now ([] when it holds). Its
        age and the window count until Deploy is pressed; after, they are what they were then."""
        if self.decision != Decision.APPROVE:
            return []
        if self.voided_at is not None:
            return [self.void_reason or "it was voided"]
        reasons = []
        at = run.deployed_at or now or timezone.now()
        limit = approval_max_age(run.database.environment)
        if limit is not None and at - self.created_at > limit:
            hours = limit.total_seconds() / 3600
            reasons.append(
                f"it is stale: given {_hours(at - self.created_at)} ago, and approvals on "
                f"{run.database.environment} hold {hours:g} h"
            )
        if run.window_end is not None and run.deployed_at is None and at > run.window_end:
            reasons.append(
                f"the deployment window ended at {local_time(run.window_end)} without a deployment"
            )
        if self.window_end_seen != run.window_end:
            reasons.append("the deployment window changed since it was approved")
        if self.target_revision != run.target_revision:
            reasons.append(
                f"the target revision changed ({self.target_revision} → {run.target_revision})"
            )
        if self.risk_hash != run.risk_hash:
            reasons.append("the risk report changed since it was approved")
        if self.backup_id_seen != run.backup_id:
            seen = f"#{self.backup_id_seen}" if self.backup_id_seen else "none"
            has = f"#{run.backup_id}" if run.backup_id else "none"
            reasons.append(f"the backup changed ({seen} → {has})")
        return reasons


def approval_max_age(environment: str) -> timedelta | None:
    """How long an approval holds on ``environment`` (RUNWAY_APPROVAL_MAX_AGE_HOURS; 0 or
    missing: no limit)."""
    hours = settings.RUNWAY_APPROVAL_MAX_AGE_HOURS.get(environment, 0)
    return timedelta(hours=hours) if hours else None


def local_time(when: datetime) -> str:
    return f"{timezone.localtime(when):%Y-%m-%d %H:%M}"


def _hours(age: timedelta) -> str:
    hours = age.total_seconds() / 3600
    return f"{hours:.0f} h" if hours >= 1 else f"{age.total_seconds() / 60:.0f} min"


class Comment(models.Model):
    """A remark on a run's review: on the run (the conversation) or on one statement of a
    pending revision. Audited (``run.commented``)."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="comments")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    revision = models.CharField(max_length=64, blank=True)
    statement = models.PositiveIntegerField(null=True, blank=True, help_text="0-based index")
    body = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return f"comment by {self.user} on run #{self.run_id}"


GRADES = ("low", "medium", "high")


class ApprovalPolicy(models.Model):
    """How many approvals a run on an environment needs from a risk grade up, and whether the
    same revisions must have completed on the database's staging partner first. The strictest
    matching row applies (see runbooks.policy)."""

    environment = models.CharField(max_length=20, choices=Environment.choices)
    grade = models.CharField(
        "from risk grade",
        max_length=10,
        choices=[(g, g) for g in GRADES],
        default="low",
        help_text="Applies to runs whose worst pending revision has this grade or a higher one",
    )
    approvals = models.PositiveSmallIntegerField(
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(5)],
        help_text="Approvals each approval step needs (from different people), 1 to 5",
    )
    staging_first = models.BooleanField(
        "staging first",
        default=False,
        help_text="The same revisions must have completed on the database's staging partner",
    )

    class Meta:
        ordering = ["environment", "grade"]
        verbose_name_plural = "approval policies"
        constraints = [
            models.UniqueConstraint(fields=["environment", "grade"], name="one_policy_per_grade"),
            models.CheckConstraint(
                condition=models.Q(approvals__gte=1, approvals__lte=5), name="approvals_1_to_5"
            ),
        ]

    def __str__(self) -> str:
        first = ", staging first" if self.staging_first else ""
        return f"{self.environment} from {self.grade}: {self.approvals} approval(s){first}"
