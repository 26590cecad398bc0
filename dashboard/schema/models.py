"""What Runway records about a database's pending revisions: accepted risk findings, preflight
gate runs and rehearsals. Reports themselves are computed from the scripts (see risk.py), and
each revision's analysis is stored by what it depends on (RevisionAnalysis)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.functional import cached_property

from dashboard.databases.models import ManagedDatabase
from dashboard.jobs.models import Job
from dashboard.schema.schema_diff import SchemaChange, compare


class RiskAcceptance(models.Model):
    """A lead accepted one rule's findings for one revision of one database, with a reason."""

    database = models.ForeignKey(
        ManagedDatabase, on_delete=models.CASCADE, related_name="risk_acceptances"
    )
    revision = models.CharField(max_length=64)
    rule = models.CharField(max_length=100)
    comment = models.TextField()
    accepted_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    accepted_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["database", "revision", "rule"], name="one_acceptance_per_rule"
            )
        ]
        ordering = ["revision", "rule"]

    def __str__(self) -> str:
        return f"{self.database.name} {self.revision} {self.rule}"


class RevisionAnalysis(models.Model):
    """One revision's risk analysis before live table sizes and acceptances are applied (they
    change on their own; grading with them is cheap), stored under a key of everything it
    depends on (``risk_cache``: the file's bytes, its parents' keys, the server's major, the
    project, Runway's version). Any web process or worker on any host reuses it; a changed
    file, parent or rule gives new keys, so a row is never stale, only unused. Rows unused for
    ``RETENTION`` are deleted whenever new ones are stored."""

    RETENTION = timedelta(days=30)
    TOUCH_AFTER = timedelta(days=1)  # how stale ``used_at`` may get before a read refreshes it

    key = models.CharField(max_length=64, primary_key=True)
    revision = models.TextField()  # for people reading the table
    # Both zlib-compressed JSON: nothing queries inside them, and a 300-revision chain reads
    # a third as many bytes, without jsonb's conversions, in a third less time.
    report = models.BinaryField()
    # The schema facts its children start from: read only when a child is analysed again.
    schema = models.BinaryField()
    created_at = models.DateTimeField(default=timezone.now)
    used_at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return f"analysis of {self.revision} ({self.key[:12]})"


class Verdict(models.TextChoices):
    PASS = "pass", "Pass"
    WARN = "warn", "Warn"
    FAIL = "fail", "Fail"


class GateRun(Job):
    """One run of the pre-migration gates against a database, on a worker (job kind
    ``gate_run``, see gates.py).

    A run whose gates said fail *succeeded* as a job: the gates ran and ``verdict`` and
    ``results`` say what they saw. A failed run is one whose gates could not run at all
    (``error`` says why); it has no verdict."""

    database = models.ForeignKey(
        ManagedDatabase, on_delete=models.CASCADE, related_name="gate_runs"
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    requested_at = models.DateTimeField(default=timezone.now)
    # The pending revisions the gates were run for (oldest first), and the existing tables they
    # touch (the lock gate watches these): what the requester saw, so the worker checks that.
    revisions = models.JSONField(default=list, blank=True)
    tables = models.JSONField(default=list, blank=True)
    # [{"name", "title", "verdict", "summary", "evidence": {...}}, ...]
    results = models.JSONField(default=list, blank=True)
    verdict = models.CharField(max_length=4, choices=Verdict.choices, blank=True)

    class Meta:
        ordering = ["-requested_at"]

    def __str__(self) -> str:
        return f"gates {self.pk} for {self.database.name}"


class Rehearsal(Job):
    """The pending revisions run on a throw-away copy of the database, timed (job kind
    ``rehearsal``, see rehearsal.py).

    A rehearsal in which a revision failed on the copy is a *failed* job, not a succeeded one
    with a failed result (as a connection check that could not connect is). A check's result is
    what it saw, and "cannot connect" is a complete answer. A rehearsal's result is a
    measurement of the whole chain on production's data, what the deployment would take: when
    a revision fails there is no such measurement (the revisions after it never ran, the total
    is not a deployment's), so nothing may use it as one. Only a succeeded rehearsal times the
    revisions (``latest_rehearsal``) and satisfies the rehearsal gate; the failed revision's
    timing (``ok`` False, its error) says why it failed, and ``error`` names it.
    """

    class Method(models.TextChoices):
        TEMPLATE = "template", "CREATE DATABASE … TEMPLATE"
        BACKUP = "backup", "Restore of the latest validated backup"

    database = models.ForeignKey(
        ManagedDatabase, on_delete=models.CASCADE, related_name="rehearsals"
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    requested_at = models.DateTimeField(default=timezone.now)
    from_revisions = models.JSONField(default=list, blank=True)
    to_revision = models.CharField(max_length=64, blank=True)
    # The pending revisions, oldest first, as they were when the rehearsal was requested.
    revisions = models.JSONField(default=list, blank=True)
    method = models.CharField(max_length=10, choices=Method.choices, blank=True)
    backup = models.ForeignKey(
        "backups.Backup", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    copy_seconds = models.FloatField(null=True, blank=True)
    # [{"revision", "seconds", "lock_wait_ms", "ok", "error"}, ...] in the order run.
    timings = models.JSONField(default=list, blank=True)
    total_seconds = models.FloatField(null=True, blank=True)
    longest_lock_wait_ms = models.FloatField(null=True, blank=True)
    drop_error = models.TextField(blank=True)
    # The copy's schema before the revisions ran and after them (after the failing one, on a
    # failed rehearsal), as schema_diff.normalize describes it, at most schema_diff.LIMIT_BYTES
    # each; "" when it could not be read (the worker's log says why).
    schema_before = models.TextField(blank=True)
    schema_after = models.TextField(blank=True)

    class Meta:
        ordering = ["-requested_at"]

    def __str__(self) -> str:
        return f"rehearsal {self.pk} of {self.database.name}"

    @cached_property
    def schema_change(self) -> SchemaChange | None:
        """The revisions' schema change on the copy, for templates/schema/_schema_diff.html;
        None when neither schema was read (an older rehearsal, or none was made)."""
        if not self.schema_before and not self.schema_after:
            return None
        if not self.schema_before or not self.schema_after:
            missing = "before" if not self.schema_before else "after"
            return SchemaChange([], f"The copy's schema {missing} the revisions was not read.")
        return compare(self.schema_before, self.schema_after)

    def timing_of(self, revision: str) -> dict[str, object] | None:
        return next((t for t in self.timings if t.get("revision") == revision), None)


class DataSnapshot(models.Model):
    """The critical tables of a database as one transaction saw them (see snapshot.py): taken
    before a run's execution, compared after it."""

    database = models.ForeignKey(
        ManagedDatabase, on_delete=models.CASCADE, related_name="data_snapshots"
    )
    taken_at = models.DateTimeField(default=timezone.now)
    reason = models.CharField(max_length=200, blank=True)
    database_at = models.CharField(max_length=500, blank=True)  # the Alembic revision(s)
    tables = models.JSONField(default=list)  # [TableSnapshot.to_json(), ...]
    seconds = models.FloatField(default=0.0)

    class Meta:
        ordering = ["-taken_at"]

    def __str__(self) -> str:
        return f"snapshot {self.pk} of {self.database.name}"
