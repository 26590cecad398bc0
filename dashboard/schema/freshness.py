"""Whether a gate run or a rehearsal still says something about the deployment to come.

A gate run and a rehearsal each judged a moment: the pending revisions as they were, the
database at the revision it was at, the backups and rehearsals that existed then. A result is
*current* while none of that has moved; it is *out of date* once it has, and ``Freshness.reasons``
say what moved, in words a lead reads on a page.

Out of date, for either:

- the database's current revision is not known (no good connection check): nothing can be
  said to still apply, so nothing is current (unknown is never a pass);
- the pending revisions now differ from those it ran for;
- a newer one of the same kind (requested later) has finished.

A rehearsal is also out of date when the database was at another revision when it was
requested (``Rehearsal.from_revisions``) than it is now. A gate run is also out of date when a
rehearsal or a backup's restore validation finished after it (its rehearsal or backup gate
would now see something else). A gate run does not record the revision the database was at;
the pending revisions stand for it (they are the scripts' revisions after it).

A result that has not finished yet is neither: ``freshness`` says current with the reason
list empty, and the pages show its state instead.

Pure reads, no writes: usable by any page (preflight, a run's review).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db.models import QuerySet
from django.utils import timezone
from django.utils.timesince import timesince

from dashboard.backups.models import Validation
from dashboard.jobs.models import FINISHED
from dashboard.schema.analysis import Pending
from dashboard.schema.models import GateRun, Rehearsal

__all__ = ["Freshness", "freshness"]


@dataclass(frozen=True)
class Freshness:
    """``current`` and, when not, the reasons (each one sentence, no final full stop)."""

    current: bool
    reasons: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return "current" if self.current else "out of date"

    @property
    def why(self) -> str:
        """The reasons as one text ('' when current)."""
        return "; ".join(self.reasons) + "." if self.reasons else ""


def _names(revisions: Sequence[str]) -> str:
    return ", ".join(revisions) if revisions else "nothing"


def _ago(when: object) -> str:
    if when is None:
        return ""
    return f" {timesince(when, timezone.now()).split(',')[0]} ago"  # type: ignore[arg-type]


def _pending_reasons(ran_for: Sequence[str], pending: Pending) -> list[str]:
    if not pending.known:
        why = f" ({pending.error})" if pending.error else ""
        return [
            f"the database's current revision is not known{why}, so nothing can be said to "
            "still apply"
        ]
    if list(ran_for) != list(pending.revisions):
        return [f"it ran for {_names(ran_for)}; pending now: {_names(pending.revisions)}"]
    return []


def _rehearsal(found: Rehearsal, pending: Pending) -> list[str]:
    reasons = _pending_reasons(found.revisions, pending)
    if pending.known and sorted(found.from_revisions) != sorted(pending.current):
        reasons.append(
            f"the database was at {_names(sorted(found.from_revisions))} when it was requested; "
            f"it is at {_names(sorted(pending.current))} now"
        )
    newer = (
        Rehearsal.objects.filter(database_id=found.database_id, state__in=FINISHED)
        .filter(requested_at__gt=found.requested_at)
        .order_by("-requested_at", "-pk")
        .first()
    )
    if newer is not None:
        reasons.append(
            f"rehearsal #{newer.pk} is newer ({newer.get_state_display().lower()}"
            f"{_ago(newer.finished_at)})"
        )
    return reasons


def _gate_run(run: GateRun, pending: Pending) -> list[str]:
    reasons = _pending_reasons(run.revisions, pending)
    newer = (
        GateRun.objects.filter(database_id=run.database_id, state__in=FINISHED)
        .filter(requested_at__gt=run.requested_at)
        .order_by("-requested_at", "-pk")
        .first()
    )
    if newer is not None:
        verdict = newer.get_verdict_display().lower() if newer.verdict else newer.state
        reasons.append(f"gate run #{newer.pk} is newer ({verdict}{_ago(newer.finished_at)})")
    ended = run.finished_at
    if ended is not None:
        rehearsed = _first_after(Rehearsal.objects.filter(database_id=run.database_id), ended)
        if rehearsed is not None:
            reasons.append(
                f"rehearsal #{rehearsed.pk} ({rehearsed.get_state_display().lower()}) finished "
                "after these gates ran, so their rehearsal gate is not what it would say now"
            )
        validated = _first_after(
            Validation.objects.filter(backup__database_id=run.database_id), ended
        )
        if validated is not None:
            reasons.append(
                f"a restore validation of backup #{validated.backup_id} finished after these "
                "gates ran, so their backup gate is not what it would say now"
            )
    return reasons


def _first_after[J: (Rehearsal, Validation)](found: QuerySet[J], ended: datetime) -> J | None:
    """The newest of ``found`` that finished after ``ended``."""
    return (
        found.filter(state__in=FINISHED, finished_at__gt=ended)
        .order_by("-finished_at", "-pk")
        .first()
    )


def freshness(result: GateRun | Rehearsal, pending: Pending) -> Freshness:
    """Whether ``result`` (a gate run or a rehearsal) is current for ``pending`` (what the
    database's last good check says is to run: ``analysis.pending_of(db)``), and if not why.
    A result still queued or running is current (nothing superseded it yet)."""
    if not result.is_done:
        return Freshness(True)
    if isinstance(result, Rehearsal):
        reasons = _rehearsal(result, pending)
    else:
        reasons = _gate_run(result, pending)
    return Freshness(not reasons, tuple(reasons))
