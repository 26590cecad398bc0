"""Approval policies: how many approvals a run's approval steps need on its environment and at
its risk grade, whether the same revisions must have completed on the staging partner first,
and, in words, why a policy cannot be met and what to do about it.

The strictest rule wins: the step's own count in the runbook, RUNWAY_PRODUCTION_APPROVALS on
production, and every :class:`ApprovalPolicy` row of the environment whose grade is at or below
the run's worst pending revision. Admins edit the rows (Admin → Approval policies); the
migration seeds one: two approvals for a high-risk production change.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import User

from dashboard.accounts.roles import Role, users_with
from dashboard.databases.models import ManagedDatabase
from runbooks.models import GRADES, ApprovalPolicy, Run, RunState, StepRun

HOW_TO_MEET = (
    "An admin can give another person the {role} role (Admin → Users → Groups), or change the "
    "policy (Admin → Approval policies); README: Approval policies."
)


@dataclass(frozen=True)
class Requirement:
    approvals: int
    staging_first: bool
    why: list[str]  # the rules that set it, in words


def requirement(db: ManagedDatabase, grade: str, step_count: int = 0) -> Requirement:
    approvals = step_count
    why = [f"the runbook asks for {step_count}"] if step_count else []
    if db.is_production and approvals < settings.RUNWAY_PRODUCTION_APPROVALS:
        approvals = settings.RUNWAY_PRODUCTION_APPROVALS
        why.append(f"production needs {approvals} (RUNWAY_PRODUCTION_APPROVALS)")
    staging_first = False
    rank = GRADES.index(grade) if grade in GRADES else len(GRADES) - 1
    for rule in ApprovalPolicy.objects.filter(environment=db.environment):
        if GRADES.index(rule.grade) > rank:
            continue
        if rule.approvals > approvals:
            approvals = rule.approvals
        first = ", staging first" if rule.staging_first else ""
        why.append(
            f"policy: {rule.approvals} approval{'s' if rule.approvals != 1 else ''} on "
            f"{rule.environment} from {rule.grade} risk{first}"
        )
        staging_first = staging_first or rule.staging_first
    return Requirement(approvals, staging_first, why)


def of_run(run: Run) -> Requirement:
    count = max((s.count for s in run.steps.all() if s.kind == "approval"), default=0)
    book_count = max(
        (int(s.get("count") or 0) for s in run.runbook_steps() if s.get("kind") == "approval"),
        default=0,
    )
    found = requirement(run.database, run.max_grade, book_count)
    return Requirement(max(count, found.approvals), found.staging_first, found.why)


def eligible(run: Run, step: StepRun) -> list[User]:
    """Who may give this step an approval: active users of its role or higher, never whoever
    started the run when the step is four-eyes."""
    people = users_with(Role[(step.role or "lead").upper()]).order_by("username")
    if step.four_eyes:
        people = people.exclude(pk=run.started_by_id)
    return list(people)


def cannot_be_met(run: Run, step: StepRun) -> str:
    """Why ``step`` can never get its approvals as things stand ("" when it can)."""
    people = eligible(run, step)
    if len(people) >= step.count:
        return ""
    role = step.role or "lead"
    others = " other than the person who started the run" if step.four_eyes else ""
    have = ", ".join(u.get_username() for u in people) or "nobody"
    return (
        f"This step needs {step.count} approval{'s' if step.count != 1 else ''} from "
        f"different people with the {role} role{others}, and only {len(people)} exist "
        f"({have}). " + HOW_TO_MEET.format(role=role)
    )


def staging_missing(run: Run) -> str:
    """What the staging-first rule still misses for this run ("" when it holds or no policy
    asks for it)."""
    if not of_run(run).staging_first or not run.revisions:
        return ""
    partner = run.database.staging_partner
    if partner is None:
        return (
            f"The policy asks for the same revisions to complete on staging first, and "
            f"{run.database.name} has no staging partner: set one on its settings page."
        )
    done: set[str] = set()
    for revisions in Run.objects.filter(database=partner, state=RunState.COMPLETED).values_list(
        "revisions", flat=True
    ):
        done.update(revisions or [])
    missing = [r for r in run.revisions if r not in done]
    if not missing:
        return ""
    return (
        f"No completed run on the staging partner {partner.name} has deployed "
        f"{', '.join(missing)} yet: run them there first (the policy asks for staging first)."
    )
