"""What waits for a person: the runs where they are the one to act now. A lead sees the reviews
they may decide; an engineer the runs they started that came back with changes requested,
that are approved and wait for Deploy, or whose step failed. On the overview, as a Runs filter
("waiting for me") and as the count in the navigation."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest

from dashboard.accounts.roles import Role, role_of
from runbooks import engine
from runbooks.models import Approval, Run, RunState, StepJob, StepRun, StepState


@dataclass(frozen=True)
class Item:
    run: Run
    what: str  # review | changes | deploy | retry
    words: str


def _active() -> QuerySet[Run]:
    return (
        Run.objects.filter(state=RunState.ACTIVE)
        .select_related("database", "started_by")
        .prefetch_related(
            Prefetch("steps__approvals", queryset=Approval.objects.only("user_id", "step_id")),
            Prefetch("steps__jobs", queryset=StepJob.objects.only("step_id", "attempt", "state")),
        )
        .order_by("started_at")
    )


def waiting_for(user: User) -> list[Item]:
    role = role_of(user)
    if role is None or role < Role.ENGINEER:
        return []
    items: list[Item] = []
    for run in _active():
        item = _for(run, user, role)
        if item is not None:
            items.append(item)
    return items


def _for(run: Run, user: User, role: Role) -> Item | None:
    steps = sorted(run.steps.all(), key=lambda s: (s.phase_index, s.position))
    mine = run.started_by_id == user.pk
    for step in steps:
        if step.phase_index != run.phase_index or step.is_done:
            continue
        if step.kind == "approval" and step.state == StepState.OPEN:
            if run.changes_requested:
                if not mine:
                    return None
                return Item(run, "changes", "changes requested: amend or ask again")
            if _may_approve(run, step, user, role):
                have = len({a.user_id for a in step.approvals.all() if engine.holds(run, step, a)})
                return Item(run, "review", f"review and decide ({have}/{step.count} approvals)")
            return None
        if (
            step.kind == "action"
            and step.state == StepState.WAITING
            and engine.awaits_deploy(run, step)
        ):
            approvers = {a.user_id for s in steps for a in s.approvals.all()}
            if mine or user.pk in approvers:
                return Item(run, "deploy", "approved: press Deploy")
            return None
        if step.kind == "action" and step.state == StepState.FAILED and mine:
            return Item(run, "retry", f"“{step.title}” failed: retry or abort")
    return None


def _may_approve(run: Run, step: StepRun, user: User, role: Role) -> bool:
    needed = Role[(step.role or "lead").upper()]
    if role < needed or (step.four_eyes and run.started_by_id == user.pk):
        return False
    given = [a for a in step.approvals.all() if a.user_id == user.pk]
    return not any(engine.holds(run, step, a) for a in given)


_CACHE = "_runway_inbox"


def for_request(request: HttpRequest) -> list[Item]:
    """:func:`waiting_for` the request's user, counted once per request (the navigation's count
    and the overview's panel share it)."""
    cached: list[Item] | None = getattr(request, _CACHE, None)
    if cached is None:
        user = getattr(request, "user", None)
        cached = waiting_for(user) if isinstance(user, User) and user.is_authenticated else []
        setattr(request, _CACHE, cached)
    return cached


def run_ids(user: User) -> list[int]:
    return [item.run.pk for item in waiting_for(user)]
