"""The events Runway notifies about: their names, what a page calls them, and who gets them by
email unless they choose otherwise.

An event's name is what callers pass to :func:`dashboard.notify.outbox.emit`, what a channel and a
preference list, and what a webhook's JSON body carries as ``event``.
"""

from __future__ import annotations

from dataclasses import dataclass

from dashboard.accounts.roles import Role

APPROVAL_WAITING = "approval.waiting"
REVIEW_DECIDED = "review.decided"
RUN_DUE = "run.due"
STEP_FAILED = "step.failed"
TRIGGER_FIRED = "trigger.fired"
ROLLBACK_STARTED = "rollback.started"
ROLLBACK_ENDED = "rollback.ended"
BACKUP_POLICY_MISSED = "backup.policy_missed"
# Sent to one channel by its Test button; never chosen, never emailed to users.
TEST = "notification.test"


@dataclass(frozen=True)
class Event:
    name: str
    label: str
    # The lowest role that gets it by email by default (a user's own choice overrides).
    default_role: Role


EVENTS: tuple[Event, ...] = (
    Event(APPROVAL_WAITING, "An approval is waiting", Role.LEAD),
    Event(REVIEW_DECIDED, "A review was decided", Role.ENGINEER),
    Event(RUN_DUE, "A run's phase is due or its window passed", Role.ENGINEER),
    Event(STEP_FAILED, "A run's step failed", Role.ENGINEER),
    Event(TRIGGER_FIRED, "A rollback trigger fired", Role.ENGINEER),
    Event(ROLLBACK_STARTED, "A rollback started", Role.ENGINEER),
    Event(ROLLBACK_ENDED, "A rollback ended", Role.ENGINEER),
    Event(BACKUP_POLICY_MISSED, "A backup policy is missed", Role.LEAD),
)
BY_NAME = {event.name: event for event in EVENTS}
CHOICES = [(event.name, event.label) for event in EVENTS]


def label(name: str) -> str:
    if name == TEST:
        return "A test notification"
    return BY_NAME[name].label if name in BY_NAME else name


def defaults_for(role: Role | None) -> list[str]:
    """The events a user of ``role`` gets by email until they choose otherwise."""
    if role is None:
        return []
    return [event.name for event in EVENTS if role >= event.default_role]
