"""A lead accepts a revision's findings of one rule, with a reason. Audited; the finding stays
listed (as accepted) and stops counting toward the revision's grade."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction

from dashboard.audit.chain import Actor, record
from dashboard.databases.models import ManagedDatabase
from dashboard.schema import analysis
from dashboard.schema.models import RiskAcceptance

MAX_COMMENT = 2000


class AcceptanceError(ValueError):
    """The acceptance was refused; the message says why."""


def accept(
    actor: User, db: ManagedDatabase, revision: str, rule: str, comment: str
) -> RiskAcceptance:
    comment = comment.strip()
    if not comment:
        raise AcceptanceError("Say why the finding is acceptable: the comment is required.")
    if len(comment) > MAX_COMMENT:
        raise AcceptanceError(f"Keep the comment under {MAX_COMMENT} characters.")
    if analysis.known_revision(db, revision) is None:
        raise AcceptanceError(f"No revision {revision!r} in {db.name}'s scripts.")
    reports = analysis.reports_for(db, [revision])
    rules = {f.rule for f in reports[0].findings} if reports else set()
    if rule not in rules:
        raise AcceptanceError(f"Revision {revision} has no finding of rule {rule!r} to accept.")
    try:
        with transaction.atomic():
            acceptance = RiskAcceptance.objects.create(
                database=db, revision=revision, rule=rule, comment=comment, accepted_by=actor
            )
            record(
                actor,
                "schema.finding_accepted",
                db,
                details={"revision": revision, "rule": rule, "comment": comment},
            )
    except IntegrityError:
        existing = RiskAcceptance.objects.select_related("accepted_by").get(
            database=db, revision=revision, rule=rule
        )
        raise AcceptanceError(
            f"{rule} is already accepted for {revision} by {existing.accepted_by.get_username()}."
        ) from None
    return acceptance


def withdraw(actor: Actor, acceptance: RiskAcceptance) -> None:
    with transaction.atomic():
        record(
            actor,
            "schema.finding_acceptance_withdrawn",
            acceptance.database,
            details={"revision": acceptance.revision, "rule": acceptance.rule},
        )
        acceptance.delete()
