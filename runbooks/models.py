"""Runs of runbooks: a run copies its runbook's phases and steps when it starts (so editing the
library never changes a run under way), and each step records who did what, when, with what
evidence."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from dashboard.databases.models import ManagedDatabase


class RunState(models.TextChoices):
    ACTIVE = "active", "Active"
    COMPLETED = "completed", "Completed"
    ABORTED = "aborted", "Aborted"
    REJECTED = "rejected", "Rejected"


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
    def phases(self) -> list[dict[str, object]]:
        return list(self.runbook.get("phases", []))


class StepState(models.TextChoices):
    LOCKED = "locked", "Locked"  # its phase is not open yet
    OPEN = "open", "Open"  # a person can tick it / it can start
    WAITING = "waiting", "Waiting"  # an approval or action waits for earlier steps
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class StepRun(models.Model):
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
    verdict = models.CharField(max_length=4, blank=True)  # pass | warn | fail (actions)
    summary = models.TextField(blank=True)
    output = models.TextField(blank=True, help_text="The action's live log")
    evidence = models.JSONField(default=dict, blank=True)
    note = models.TextField(blank=True)
    done_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["phase_index", "position"]
        constraints = [
            models.UniqueConstraint(fields=["run", "step_id"], name="one_step_id_per_run")
        ]

    def __str__(self) -> str:
        return f"{self.step_id} of run #{self.run_id}"

    @property
    def is_done(self) -> bool:
        return self.state == StepState.DONE


class Decision(models.TextChoices):
    APPROVE = "approve", "Approved"
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
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.get_decision_display()} by {self.user} on run #{self.run_id}"

    def void_reasons(self, run: Run) -> list[str]:
        """Why this approval no longer holds for the run as it is now ([] when it holds)."""
        reasons = []
        if self.target_revision != run.target_revision:
            reasons.append(
                f"the target revision changed ({self.target_revision} → {run.target_revision})"
            )
        if self.risk_hash != run.risk_hash:
            reasons.append("the risk report changed since it was approved")
        if self.backup_id_seen != run.backup_id:
            seen = f"#{self.backup_id_seen}" if self.backup_id_seen else "none"
            now = f"#{run.backup_id}" if run.backup_id else "none"
            reasons.append(f"the backup changed ({seen} → {now})")
        return reasons
