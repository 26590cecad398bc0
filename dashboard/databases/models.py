from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse
from django.utils import timezone

from dashboard.jobs.models import Job, JobQuerySet, JobState
from dashboard.lib import pg


class Environment(models.TextChoices):
    DEVELOPMENT = "development", "Development"
    STAGING = "staging", "Staging"
    PRODUCTION = "production", "Production"


class AuthMethods(models.TextChoices):
    """What a server may ask the password with (libpq's ``require_auth``): never clear text."""

    SCRAM = "scram-sha-256", "SCRAM-SHA-256 only (recommended)"
    SCRAM_OR_MD5 = "scram-sha-256,md5", "SCRAM-SHA-256 or MD5 (for a server that only speaks md5)"


class RunMode(models.TextChoices):
    """How a database's revisions run (execution and rehearsal alike)."""

    RUNWAY = "runway", "Runway's environment: the revision files only, on Runway's connection"
    PROJECT = "project", "The project's own env.py, in the application's Python environment"


# The migration policy's bounds (guarded execution, dashboard/schema/guard.py): each field's range.
LOCK_TIMEOUT_MS = (10, 30_000)
LOCK_ATTEMPTS = (1, 200)
LOCK_WAIT_SECONDS = (0, 3600)
STATEMENT_TIMEOUT_SECONDS = (1, 86_400)
# An Alembic revision id as alembic_version holds it (varchar(32)): letters, digits and _.
REVISION_ID = re.compile(r"^[A-Za-z0-9_]{1,32}$")


def _bounded(low: int, high: int) -> list[Any]:
    return [MinValueValidator(low), MaxValueValidator(high)]


def revision_timeouts_problems(value: object) -> list[str]:
    """What is wrong with a revision -> statement timeout (seconds) map; [] when nothing."""
    if not isinstance(value, dict):
        return ['Give a JSON object of revision id -> seconds, e.g. {"3c2e1f9a": 3600}.']
    problems = []
    low, high = STATEMENT_TIMEOUT_SECONDS
    for revision, seconds in value.items():
        if not isinstance(revision, str) or not REVISION_ID.match(revision):
            problems.append(
                f"{revision!r} is not a revision id (up to 32 letters, digits or _, as "
                "alembic_version holds it)."
            )
        elif isinstance(seconds, bool) or not isinstance(seconds, int):
            problems.append(f"{revision}: {seconds!r} is not a whole number of seconds.")
        elif not low <= seconds <= high:
            problems.append(
                f"{revision}: {seconds} s is outside {low}..{high} s (24 hours at most)."
            )
    return problems


def validate_revision_timeouts(value: object) -> None:
    problems = revision_timeouts_problems(value)
    if problems:
        raise ValidationError(problems)


class ManagedDatabase(models.Model):
    """A PostgreSQL database Runway manages. The password is never stored: only a reference
    (``env:NAME`` or ``file:/path``) that the worker resolves when it connects.

    The reference is bound to where the database is (``secret_bound_to``: the reference and the
    DSN's user, host, port and database). The workers send the password only while the binding
    matches: changing the connection clears it until a lead confirms it again.
    """

    name = models.SlugField(max_length=63, unique=True)
    environment = models.CharField(max_length=20, choices=Environment.choices)
    dsn = models.CharField(
        "connection (DSN without password)",
        max_length=500,
        help_text="host=db.internal port=5432 dbname=app user=app, or postgresql://app@db/app",
    )
    password_ref = models.CharField(
        "password reference",
        max_length=300,
        blank=True,
        help_text="env:VARIABLE_NAME or file:/path/to/secret; empty for none (e.g. trust auth)",
    )
    require_auth = models.CharField(
        "password authentication",
        max_length=40,
        choices=AuthMethods.choices,
        default=AuthMethods.SCRAM,
        help_text="How the server may ask for the password; clear text is always refused",
    )
    secret_bound_to = models.CharField(max_length=700, blank=True, editable=False)
    secret_bound_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    secret_bound_at = models.DateTimeField(null=True, blank=True, editable=False)
    script_location = models.CharField(
        "Alembic script location",
        max_length=500,
        help_text="Folder with env.py and versions/; relative paths start at Runway's folder",
    )
    critical_tables = ArrayField(models.CharField(max_length=128), default=list, blank=True)
    # Data-loss detection (dashboard/schema/snapshot.py): how each critical table is snapshot
    # before and after a run's execution, and the columns the application itself writes.
    snapshot_modes = models.JSONField(
        "snapshot per table",
        default=dict,
        blank=True,
        help_text="table -> sampled (the default), full or count",
    )
    application_writes = ArrayField(
        models.CharField(max_length=260),
        default=list,
        blank=True,
        verbose_name="columns the application writes",
        help_text="table.column the application updates during a run: not compared",
    )
    partner = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Blue/green partner",
    )
    staging_partner = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The staging database whose runs go first, where an approval policy asks",
    )
    disk_probe = models.CharField(
        max_length=500,
        blank=True,
        help_text=(
            "A command run on the worker that prints the data directory's use, e.g. "
            "`ssh db1 df --output=pcent /var/lib/postgresql`"
        ),
    )
    run_mode = models.CharField(
        "how the revisions run",
        max_length=10,
        choices=RunMode.choices,
        default=RunMode.RUNWAY,
        help_text=(
            "Runway's environment never runs env.py (which imports the application); the "
            "project's env.py is for chains whose revisions import application code"
        ),
    )
    project_python = models.CharField(
        "application's Python",
        max_length=500,
        blank=True,
        help_text="The interpreter that runs the project's alembic: one of RUNWAY_PROJECT_PYTHONS",
    )
    project_directory = models.CharField(
        "working directory",
        max_length=500,
        blank=True,
        help_text=(
            "Where the project's alembic runs: the script folder or a folder up to three levels "
            "above it; empty: beside alembic.ini"
        ),
    )
    project_url_variable = models.CharField(
        "database URL variable",
        max_length=64,
        default="DATABASE_URL",
        help_text="The environment variable the project's env.py reads the database URL from",
    )
    # The migration policy (guarded execution): how each revision's attempts run.
    lock_timeout_ms = models.PositiveIntegerField(
        "lock timeout (ms)",
        default=500,
        validators=_bounded(*LOCK_TIMEOUT_MS),
        help_text=(
            "The longest any attempt may wait for a lock (and so hold up the application "
            "queued behind it): attempts escalate 20%, 40%, 60%, then 100% of it"
        ),
    )
    lock_attempts = models.PositiveSmallIntegerField(
        "attempts per revision",
        default=30,
        validators=_bounded(*LOCK_ATTEMPTS),
        help_text="Attempts before the step fails naming the session that blocks it",
    )
    lock_wait_seconds = models.PositiveIntegerField(
        "wait for conflicting sessions (s)",
        default=10,
        validators=_bounded(*LOCK_WAIT_SECONDS),
        help_text=(
            "Before each attempt, how long to wait (without queueing) for sessions holding or "
            "waiting for a conflicting lock to finish; 0: attempt at once"
        ),
    )
    statement_timeout_seconds = models.PositiveIntegerField(
        "statement timeout (s)",
        default=300,
        validators=_bounded(*STATEMENT_TIMEOUT_SECONDS),
        help_text="The longest one statement of a revision may run",
    )
    revision_statement_timeouts = models.JSONField(
        "statement timeouts per revision",
        default=dict,
        blank=True,
        validators=[validate_revision_timeouts],
        help_text=(
            "Revision id -> seconds, for long builds (CREATE INDEX CONCURRENTLY), e.g. "
            '{"3c2e1f9a": 3600}'
        ),
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("database-detail", args=[self.name])

    @property
    def script_path(self) -> Path:
        path = Path(self.script_location)
        return path if path.is_absolute() else Path(settings.BASE_DIR) / path

    @property
    def is_production(self) -> bool:
        return self.environment == Environment.PRODUCTION

    @property
    def binding(self) -> str:
        """What the password reference would be bound to now: the reference and where the DSN
        connects. Empty without a reference (or with a DSN that does not parse)."""
        target = self.target
        return f"{self.password_ref} -> {target}" if self.password_ref and target else ""

    @property
    def target(self) -> str:
        """Where the DSN connects (``user@host:port/dbname``), or "" when it does not parse."""
        try:
            return pg.target(self.dsn)
        except pg.BadDsn:
            return ""

    @property
    def secret_is_bound(self) -> bool:
        return not self.password_ref or (
            bool(self.secret_bound_to) and self.secret_bound_to == self.binding
        )

    def bind_secret(self, actor: Any) -> None:
        self.secret_bound_to = self.binding
        self.secret_bound_by = actor if actor is not None and actor.pk else None
        self.secret_bound_at = timezone.now()

    def latest_check(self) -> ConnectionCheck | None:
        return self.checks.order_by("-requested_at").first()


class CheckQuerySet(JobQuerySet):
    def connected(self) -> CheckQuerySet:
        """Checks that ran and connected (a check that ran and could not connect succeeded as a
        job: its ``problem`` says what the worker found)."""
        return self.filter(state=JobState.SUCCEEDED, problem="")


CheckManager = models.Manager.from_queryset(CheckQuerySet)


class ConnectionCheck(Job):
    """One "test connection": queued by a person or the schedule, run by a worker (job kind
    ``connection_check``, see checks.py)."""

    database = models.ForeignKey(ManagedDatabase, on_delete=models.CASCADE, related_name="checks")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_at = models.DateTimeField(default=timezone.now)
    problem = models.CharField(max_length=40, blank=True)
    message = models.TextField(blank=True)
    server_version = models.CharField(max_length=40, blank=True)
    current_revisions = ArrayField(models.CharField(max_length=64), default=list, blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    wal = models.JSONField(
        default=dict, blank=True, help_text="WAL archiving as read by the check (lib.pg.read_wal)"
    )
    table_sizes = models.JSONField(
        default=dict,
        blank=True,
        help_text="Table -> [estimated rows, total bytes] as read by the check (risk analysis)",
    )

    objects: ClassVar[CheckManager] = CheckManager()

    class Meta:
        ordering = ["-requested_at"]
        indexes = [models.Index(fields=["database", "-requested_at"])]

    def __str__(self) -> str:
        return f"check of {self.database} ({self.state})"

    @property
    def connected(self) -> bool:
        return self.state == JobState.SUCCEEDED and not self.problem

    @property
    def outcome(self) -> str:
        """What the page says: queued, running, connected, failed (and why), interrupted."""
        if self.connected:
            return "connected"
        if self.state == JobState.SUCCEEDED:
            return "failed"
        return str(self.state)

    @property
    def outcome_label(self) -> str:
        return (
            "Connected"
            if self.connected
            else ("Failed" if self.outcome == "failed" else self.get_state_display())
        )
