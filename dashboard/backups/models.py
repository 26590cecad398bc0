from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from dashboard.databases.models import ManagedDatabase


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


class BackupState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    PRUNED = "pruned", "Pruned"


class Backup(models.Model):
    """One dump of one database, compressed, encrypted, stored. Never holds the passphrase."""

    database = models.ForeignKey(ManagedDatabase, on_delete=models.PROTECT, related_name="backups")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.CharField(max_length=200, blank=True, help_text="e.g. scheduled, pre-migration")
    state = models.CharField(max_length=10, choices=BackupState.choices, default=BackupState.QUEUED)
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
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_s = models.FloatField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    pruned_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["database", "state", "-created_at"])]

    def __str__(self) -> str:
        return f"backup #{self.pk} of {self.database}"

    @property
    def is_done(self) -> bool:
        return self.state in (BackupState.COMPLETED, BackupState.FAILED, BackupState.PRUNED)

    @property
    def age(self) -> timedelta | None:
        return timezone.now() - self.finished_at if self.finished_at else None

    def latest_validation(self) -> Validation | None:
        return self.validations.order_by("-created_at").first()


class ValidationState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    PASSED = "passed", "Passed"
    FAILED = "failed", "Failed"


class Validation(models.Model):
    """A restore of one backup into a scratch database, with integrity queries and timings."""

    backup = models.ForeignKey(Backup, on_delete=models.PROTECT, related_name="validations")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    state = models.CharField(
        max_length=10, choices=ValidationState.choices, default=ValidationState.QUEUED
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    scratch_database = models.CharField(max_length=63, blank=True)
    restore_s = models.FloatField(null=True, blank=True)
    queries_s = models.FloatField(null=True, blank=True)
    checks = models.JSONField(
        default=list, blank=True, help_text="[{name, ok, expected, found, detail}]"
    )
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"validation #{self.pk} of backup #{self.backup_id}"

    @property
    def is_done(self) -> bool:
        return self.state in (ValidationState.PASSED, ValidationState.FAILED)
