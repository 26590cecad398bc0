"""Where each database stands against its backup policy, read from Runway's own tables.

The rule, in one sentence (the status page shows it too): the policy is *met* when a completed
backup younger than the RPO exists and the newest completed backup's latest validation passed.
A backup's age counts from when its dump started (the snapshot it holds), not when it finished.
"Completed" is a backup job that succeeded and is still stored: a failed, interrupted or
cancelled backup never counts, and neither does a pruned one.

``statuses()`` answers for any number of databases in three queries, so the overview can show a
badge per row without a query per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import F, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.timesince import timesince

from dashboard.backups.models import (
    Backup,
    BackupPolicy,
    Validation,
    ValidationOutcome,
    validation_outcome,
)
from dashboard.databases.models import ConnectionCheck, ManagedDatabase
from dashboard.jobs.models import JobState

ACTIVE_VALIDATION = (ValidationOutcome.QUEUED, ValidationOutcome.RUNNING)
UNFINISHED_VALIDATION = (ValidationOutcome.INTERRUPTED, ValidationOutcome.CANCELLED)


def _span(delta: timedelta) -> str:
    """'2 days', '5 hours', '3 minutes': the largest unit only, for badges."""
    if delta < timedelta(minutes=1):
        return "< 1 minute"
    now = timezone.now()
    return timesince(now - delta, now, depth=1).replace("\xa0", " ")


@dataclass
class BackupStatus:
    db: ManagedDatabase
    policy: BackupPolicy
    now: datetime
    last: Backup | None = None  # the newest completed backup
    # Its latest validation (annotated on ``last``): its outcome (a ValidationOutcome: passed,
    # failed, queued, running, interrupted, cancelled), when it finished, its id, its error.
    last_validation_state: str = ""
    last_validated_at: datetime | None = None
    last_validation_id: int | None = None
    last_validation_error: str = ""
    newest_validated: Backup | None = None
    newest_validated_at: datetime | None = None

    @property
    def rpo(self) -> timedelta:
        return timedelta(hours=self.policy.rpo_hours)

    @property
    def last_taken_at(self) -> datetime | None:
        if self.last is None:
            return None
        return self.last.started_at or self.last.finished_at or self.last.created_at

    @property
    def age(self) -> timedelta | None:
        taken = self.last_taken_at
        return self.now - taken if taken else None

    @property
    def fresh(self) -> bool:
        return self.age is not None and self.age <= self.rpo

    @property
    def validated(self) -> bool:
        return self.last_validation_state == ValidationOutcome.PASSED

    @property
    def met(self) -> bool:
        return self.fresh and self.validated

    @property
    def rpo_percent(self) -> int:
        """How much of the RPO the newest backup's age uses up (capped at 100, for a bar)."""
        if self.age is None:
            return 100
        return min(100, round(self.age / self.rpo * 100))

    @property
    def age_text(self) -> str:
        return _span(self.age) if self.age is not None else ""

    @property
    def reasons(self) -> list[str]:
        """Why the policy is not met, one sentence each; empty when it is."""
        if self.last is None:
            return ["No completed backup exists."]
        reasons = []
        if not self.fresh:
            reasons.append(
                f"The newest completed backup (#{self.last.pk}) is {self.age_text} old; "
                f"the RPO is {self.policy.rpo_hours} hours."
            )
        state = self.last_validation_state
        if state == ValidationOutcome.FAILED:
            reasons.append(
                f"The newest completed backup (#{self.last.pk}) failed its validation"
                + (f": {self.last_validation_error}" if self.last_validation_error else ".")
            )
        elif state in ACTIVE_VALIDATION:
            reasons.append(
                f"The newest completed backup (#{self.last.pk}) is being validated "
                "(the policy is met once the restore passes)."
            )
        elif state in UNFINISHED_VALIDATION:
            reasons.append(
                f"The validation of the newest completed backup (#{self.last.pk}) was {state} "
                "before it could prove anything: validate it again."
            )
        elif state != ValidationOutcome.PASSED:
            reasons.append(f"The newest completed backup (#{self.last.pk}) was never validated.")
        return reasons

    @property
    def validation_text(self) -> str:
        """One word or two for the newest completed backup's validation, for the page."""
        state = self.last_validation_state
        if state == ValidationOutcome.PASSED:
            return "validated"
        if state == ValidationOutcome.FAILED:
            return "failed"
        if state in ACTIVE_VALIDATION:
            return "validating"
        if state in UNFINISHED_VALIDATION:
            return f"validation {state}"
        return "not validated"

    @property
    def badge(self) -> tuple[str, str]:
        """(css class, short text) for the overview."""
        if self.met:
            return "b-ok", "policy met"
        if self.last is None:
            return "b-bad", "no backup"
        if not self.fresh:
            return "b-warn", f"backup {self.age_text} old"
        if self.last_validation_state == ValidationOutcome.FAILED:
            return "b-bad", "validation failed"
        if self.last_validation_state in ACTIVE_VALIDATION:
            return "b-info", "validating"
        return "b-warn", "not validated"


def _policies(dbs: Sequence[ManagedDatabase]) -> dict[int, BackupPolicy]:
    saved = {p.database_id: p for p in BackupPolicy.objects.filter(database__in=dbs)}
    # A database without a saved policy runs under the defaults; reading never writes.
    return {db.pk: saved.get(db.pk) or BackupPolicy(database=db) for db in dbs}


def statuses(
    dbs: Sequence[ManagedDatabase], *, now: datetime | None = None
) -> dict[int, BackupStatus]:
    """Each database's backup status, in three queries whatever the number of databases."""
    now = now or timezone.now()
    dbs = list(dbs)
    if not dbs:
        return {}
    policies = _policies(dbs)
    latest = (
        Validation.objects.filter(backup=OuterRef("pk"))
        .annotate(v_outcome=validation_outcome())
        .order_by("-created_at")
    )
    last_completed = (
        Backup.objects.filter(database__in=dbs)
        .completed()
        .annotate(
            v_state=Subquery(latest.values("v_outcome")[:1]),
            v_at=Subquery(latest.values("finished_at")[:1]),
            v_id=Subquery(latest.values("pk")[:1]),
            v_error=Subquery(latest.values("error")[:1]),
            taken=Coalesce("started_at", "finished_at", "created_at"),
        )
        .order_by("database_id", F("taken").desc())
        .distinct("database_id")
    )
    newest_passes = (
        Validation.objects.passed()
        .filter(
            backup__database__in=dbs,
            backup__state=JobState.SUCCEEDED,
            backup__pruned_at__isnull=True,
        )
        .select_related("backup")
        .order_by("backup__database_id", "-backup__created_at", "-finished_at")
        .distinct("backup__database_id")
    )
    result = {db.pk: BackupStatus(db, policies[db.pk], now) for db in dbs}
    for backup in last_completed:
        status = result[backup.database_id]
        status.last = backup
        status.last_validation_state = backup.v_state or ""  # type: ignore[attr-defined]
        status.last_validated_at = backup.v_at  # type: ignore[attr-defined]
        status.last_validation_id = backup.v_id  # type: ignore[attr-defined]
        status.last_validation_error = backup.v_error or ""  # type: ignore[attr-defined]
    for validation in newest_passes:
        status = result[validation.backup.database_id]
        status.newest_validated = validation.backup
        status.newest_validated_at = validation.finished_at
    return result


def status_of(db: ManagedDatabase, *, now: datetime | None = None) -> BackupStatus:
    return statuses([db], now=now)[db.pk]


@dataclass
class Series:
    """Size and duration of the last completed backups, oldest first (for the trend plots)."""

    backups: list[Backup] = field(default_factory=list)

    @property
    def sizes(self) -> list[float | None]:
        return [b.size_bytes for b in self.backups]  # type: ignore[misc]

    @property
    def durations(self) -> list[float | None]:
        return [b.duration_s for b in self.backups]

    @property
    def labels(self) -> list[str]:
        return [f"#{b.pk} {b.created_at:%Y-%m-%d %H:%M}" for b in self.backups]


def series(db: ManagedDatabase, limit: int = 30) -> Series:
    """Pruned backups count too: they completed, and their size and time are still history."""
    rows = (
        db.backups.filter(state=JobState.SUCCEEDED)
        .only("pk", "database", "created_at", "size_bytes", "duration_s")
        .order_by("-created_at")[:limit]
    )
    return Series(list(reversed(rows)))


@dataclass
class Activity:
    backups: list[Backup]
    validations: list[Validation]
    expected_bytes: int | None = None  # the last completed backup's size: a progress estimate

    @property
    def active(self) -> bool:
        return bool(self.backups or self.validations)


def activity(db: ManagedDatabase) -> Activity:
    """Backups and validations of ``db`` that are queued or running (two or three queries)."""
    backups = list(db.backups.active().order_by("created_at"))
    validations = list(
        Validation.objects.active()
        .filter(backup__database=db)
        .select_related("backup")
        .order_by("created_at")
    )
    expected = None
    if backups:
        expected = (
            db.backups.completed()
            .filter(size_bytes__gt=0)
            .order_by("-created_at")
            .values_list("size_bytes", flat=True)
            .first()
        )
    return Activity(backups, validations, expected)


# --- WAL archiving, as the worker's latest connection check read it ---


def _when(value: str | None) -> datetime | None:
    return parse_datetime(value) if value else None


@dataclass
class WalStatus:
    check: ConnectionCheck | None
    now: datetime

    @property
    def wal(self) -> dict:
        return self.check.wal if self.check else {}

    @property
    def known(self) -> bool:
        return bool(self.wal)

    @property
    def archiver(self) -> dict:
        return self.wal.get("archiver") or {}

    @property
    def archiving(self) -> bool:
        return self.wal.get("archive_mode") in ("on", "always")

    @property
    def last_archived_at(self) -> datetime | None:
        return _when(self.archiver.get("last_archived_time"))

    @property
    def last_failed_at(self) -> datetime | None:
        return _when(self.archiver.get("last_failed_time"))

    @property
    def last_archived_age(self) -> timedelta | None:
        at = self.last_archived_at
        return self.now - at if at else None

    @property
    def failing(self) -> bool:
        failed, archived = self.last_failed_at, self.last_archived_at
        return failed is not None and (archived is None or failed > archived)

    @property
    def warnings(self) -> list[str]:
        if not self.known:
            return []
        wal = self.wal
        found = []
        if wal.get("wal_level") == "minimal":
            found.append(
                "wal_level is minimal: WAL cannot be archived, so point-in-time recovery "
                "is impossible."
            )
        if wal.get("archive_mode") == "off":
            found.append(
                "WAL archiving is off (archive_mode = off): only full backups can be restored, "
                "so anything written since the last backup would be lost."
            )
        elif self.archiving and wal.get("archive_command_set") is False:
            found.append(
                "archive_mode is on but neither archive_command nor archive_library is set: "
                "WAL segments are kept in pg_wal and never archived."
            )
        if self.failing:
            found.append(
                f"WAL archiving is failing: {self.archiver.get('last_failed_wal')} failed "
                f"{timesince(self.last_failed_at, self.now)} ago "  # type: ignore[arg-type]
                f"({self.archiver.get('failed_count')} failures since the statistics were reset)."
            )
        return found


def wal_status(db: ManagedDatabase, *, now: datetime | None = None) -> WalStatus:
    """From the newest connection check that read WAL settings (the web never connects)."""
    check = db.checks.exclude(wal={}).order_by("-requested_at").first()
    return WalStatus(check, now or timezone.now())
