from __future__ import annotations

from datetime import datetime, timedelta
from typing import ClassVar

from django.conf import settings
from django.db import models
from django.db.models import Case, F, Value, When
from django.utils import timezone

from dashboard.databases.models import ManagedDatabase
from dashboard.jobs.models import Job, JobQuerySet, JobState


class BackupPolicy(models.Model):
    """Per database: how often to back up and validate, how long to keep, what RPO to meet."""

    database = models.OneToOneField(
        ManagedDatabase, on_delete=models.CASCADE, related_name="backup_policy"
    )
    retention_days = models.PositiveIntegerField(default=30)
    rpo_hours = models.PositiveIntegerField(
        "RPO (hours)", default=24, help_text="A backup older than this breaks the policy"
    )
    backup_every_hours = models.PositiveIntegerField(
        default=24, help_text="0 turns scheduled backups off"
    )
    validate_every_hours = models.PositiveIntegerField(
        default=24, help_text="0 turns scheduled validation off"
    )
    storage_url = models.CharField(
        max_length=500,
        blank=True,
        help_text="file:///path or s3://bucket/prefix; empty for RUNWAY_BACKUP_STORAGE",
    )
    # Since when the policy is not met, once someone was told (lapses.py); cleared when met.
    missed_since = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"backup policy of {self.database}"

    @classmethod
    def of(cls, db: ManagedDatabase) -> BackupPolicy:
        policy, _ = cls.objects.get_or_create(database=db)
        return policy


class DumpFormat(models.TextChoices):
    CUSTOM = "custom", "custom (-Fc)"
    DIRECTORY = "directory", "directory (-Fd)"


class Compression(models.TextChoices):
    ZSTD = "zstd", "zstd"
    GZIP = "gzip", "gzip"
    NONE = "none", "none"


class BackupOutcome(models.TextChoices):
    """What a page says about a backup: its job state, except that a succeeded backup reads
    "completed" while its object is stored and "pruned" once retention deleted it."""

    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    PRUNED = "pruned", "Pruned"
    FAILED = "failed", "Failed"
    INTERRUPTED = "interrupted", "Interrupted"
    CANCELLED = "cancelled", "Cancelled"


class BackupQuerySet(JobQuerySet):
    def completed(self) -> BackupQuerySet:
        """Backups that succeeded and are still stored: the only ones that count (for the RPO,
        the gates, retention, validation). Never a failed, interrupted or cancelled one."""
        return self.filter(state=JobState.SUCCEEDED, pruned_at__isnull=True)

    def validated(self) -> BackupQuerySet:
        """Completed backups with at least one passed validation."""
        return self.completed().filter(pk__in=Validation.objects.passed().values("backup_id"))


BackupManager = models.Manager.from_queryset(BackupQuerySet)


class Backup(Job):
    """One dump of one database, compressed, encrypted, stored. Never holds the passphrase.

    A job of kind ``backup`` (see pipeline.py): queued, running (``progress_bytes`` moves with
    its heartbeat), then succeeded (stored, with size, sha256, counts and revision), failed (with
    the reason), interrupted (its worker died; the reaper removed its partial object) or
    cancelled. Retention prunes a succeeded backup by deleting its object and setting
    ``pruned_at``: the state stays succeeded (it was taken), the page says "Pruned", and nothing
    counts it as a backup one could restore (:meth:`BackupQuerySet.completed`).
    """

    database = models.ForeignKey(ManagedDatabase, on_delete=models.PROTECT, related_name="backups")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.CharField(max_length=200, blank=True, help_text="e.g. scheduled, pre-migration")
    format = models.CharField(max_length=10, choices=DumpFormat.choices, default=DumpFormat.CUSTOM)
    compression = models.CharField(
        max_length=10, choices=Compression.choices, default=Compression.ZSTD
    )
    encrypted = models.BooleanField(default=True)
    storage_url = models.CharField(max_length=1000, blank=True)
    upload_id = models.CharField(max_length=300, blank=True, help_text="open S3 multipart upload")
    size_bytes = models.BigIntegerField(null=True, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    progress_bytes = models.BigIntegerField(default=0)
    revision = models.CharField(max_length=200, blank=True, help_text="Alembic revision at dump")
    row_counts = models.JSONField(
        default=dict, blank=True, help_text="critical tables, same snapshot"
    )
    facts = models.JSONField(
        default=dict, blank=True, help_text="the seed's user/plan query, same snapshot"
    )
    created_at = models.DateTimeField(default=timezone.now)
    duration_s = models.FloatField(null=True, blank=True)
    pruned_at = models.DateTimeField(null=True, blank=True)

    objects: ClassVar[BackupManager] = BackupManager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["database", "state", "-created_at"])]

    def __str__(self) -> str:
        return f"backup #{self.pk} of {self.database}"

    @property
    def completed(self) -> bool:
        """Succeeded and still stored: restorable, countable."""
        return self.state == JobState.SUCCEEDED and self.pruned_at is None

    @property
    def outcome(self) -> str:
        if self.state == JobState.SUCCEEDED:
            return BackupOutcome.PRUNED if self.pruned_at else BackupOutcome.COMPLETED
        return str(self.state)

    @property
    def outcome_label(self) -> str:
        return str(BackupOutcome(self.outcome).label)

    @property
    def badge(self) -> str:
        """The badge's css class suffix (b-ok, b-muted, b-failed, b-interrupted, ...)."""
        return {"completed": "ok", "pruned": "muted"}.get(self.outcome, self.outcome)

    @property
    def age(self) -> timedelta | None:
        return timezone.now() - self.finished_at if self.finished_at else None

    def latest_validation(self) -> Validation | None:
        return self.validations.order_by("-created_at").first()

    def prune(self, now: datetime) -> bool:
        """Mark a completed backup pruned (its object is gone); False when it was not completed
        (any more). The state stays succeeded."""
        moved = type(self).objects.completed().filter(pk=self.pk).update(pruned_at=now)
        if moved:
            self.pruned_at = now
        return bool(moved)


class ValidationOutcome(models.TextChoices):
    """What a page says about a validation: passed or failed once it ended, else its state."""

    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    PASSED = "passed", "Passed"
    FAILED = "failed", "Failed"
    INTERRUPTED = "interrupted", "Interrupted"
    CANCELLED = "cancelled", "Cancelled"


def validation_outcome(prefix: str = "") -> Case:
    """The outcome as an SQL expression (``prefix`` reaches a validation through a relation,
    e.g. ``"validations__"``), for annotations and subqueries."""
    succeeded = {f"{prefix}state": JobState.SUCCEEDED}
    return Case(
        When(**succeeded, **{f"{prefix}passed": True}, then=Value(ValidationOutcome.PASSED)),
        When(**succeeded, then=Value(ValidationOutcome.FAILED)),
        default=F(f"{prefix}state"),
        output_field=models.CharField(),
    )


class ValidationQuerySet(JobQuerySet):
    def passed(self) -> ValidationQuerySet:
        return self.filter(state=JobState.SUCCEEDED, passed=True)


ValidationManager = models.Manager.from_queryset(ValidationQuerySet)


class Validation(Job):
    """A restore of one backup into a scratch database, with integrity queries and timings.

    A job of kind ``validation`` (see validation.py). It *succeeded* when it ran to a verdict:
    the backup was fetched, decrypted and restored, and the integrity queries ran; ``passed``
    says whether every check held (``passed = False``: it ran and found problems, named in
    ``error`` and ``checks``). It *failed* when it could not reach a verdict: the backup did not
    decrypt or restore, the scratch database could not be made or dropped, the store could not
    be read (``passed`` stays None; ``error`` says why). Interrupted: its worker died (the
    reaper dropped its scratch database). The pages say "Passed" only for succeeded with
    ``passed``, and "Failed" for both other ends.
    """

    backup = models.ForeignKey(Backup, on_delete=models.PROTECT, related_name="validations")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    scratch_database = models.CharField(max_length=63, blank=True)
    restore_s = models.FloatField(null=True, blank=True)
    queries_s = models.FloatField(null=True, blank=True)
    checks = models.JSONField(
        default=list, blank=True, help_text="[{name, ok, expected, found, detail}]"
    )
    passed = models.BooleanField(
        null=True, blank=True, help_text="every integrity check held (set when it succeeded)"
    )

    objects: ClassVar[ValidationManager] = ValidationManager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"validation #{self.pk} of backup #{self.backup_id}"

    @property
    def outcome(self) -> str:
        if self.state == JobState.SUCCEEDED:
            return ValidationOutcome.PASSED if self.passed else ValidationOutcome.FAILED
        return str(self.state)

    @property
    def outcome_label(self) -> str:
        return str(ValidationOutcome(self.outcome).label)

    @property
    def badge(self) -> str:
        return "ok" if self.outcome == ValidationOutcome.PASSED else self.outcome
