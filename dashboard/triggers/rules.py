"""Each database's rollback-trigger rules: the seed audit's defaults, and changes to them, each
audited with its before and after (on a production database only a lead may change them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser as User
from django.db import transaction
from django.utils import timezone

from dashboard.accounts.roles import Role, has_role
from dashboard.audit.chain import record
from dashboard.databases.models import ManagedDatabase
from dashboard.triggers.models import Action, Rule, Signal


@dataclass(frozen=True)
class Default:
    signal: str
    name: str
    threshold: float
    unit: str
    window_seconds: int
    action: str
    grace_seconds: int
    needs: str = ""  # the config key the rule cannot run without

    def explain(self) -> str:
        return UNITS[self.signal]


# The seed's "automatic rollback on": execution > 60 min, data loss (any), health-check failures
# > 50%, database performance degradation > 30%, authentication failure rate > 5%; and a warning
# at three times the rehearsed time.
DEFAULTS = (
    Default(Signal.EXECUTION_TIME, "Execution longer than 60 minutes", 60, "min", 0,
            Action.ROLLBACK, 120),
    Default(Signal.REHEARSAL_RATIO, "Execution 3x the rehearsed time", 3, "x", 0,
            Action.ALERT, 0),
    Default(Signal.DATA_LOSS, "Any data loss", 0, "rows", 0, Action.ROLLBACK, 0),
    Default(Signal.HEALTH, "Health-check failures above 50%", 50, "%", 10, Action.ROLLBACK, 120,
            "url"),
    Default(Signal.PERFORMANCE, "Probe query 30% slower than before", 30, "%", 10,
            Action.ROLLBACK, 120, "query"),
    Default(Signal.CUSTOM_SQL, "Authentication failures above 5%", 5, "", 10, Action.ROLLBACK,
            120, "query"),
    Default(Signal.CUSTOM_HTTP, "Custom HTTP signal", 0, "", 10, Action.ALERT, 0, "url"),
)  # fmt: skip
BY_SIGNAL = {d.signal: d for d in DEFAULTS}
UNITS: dict[str, str] = {
    Signal.EXECUTION_TIME: "minutes since the first revision started",
    Signal.REHEARSAL_RATIO: "times the rehearsal's total",
    Signal.DATA_LOSS: "rows lost or changed that no revision declared",
    Signal.HEALTH: "% of the health URL's answers in the window that were not 2xx",
    Signal.PERFORMANCE: "% slower than the probe's median before the run (and 5 ms at least)",
    Signal.CUSTOM_SQL: "the query's number, averaged over the window",
    Signal.CUSTOM_HTTP: 'the URL\'s number (plain, or JSON {"value": n}), averaged',
}
EDITABLE = ("enabled", "threshold", "window_seconds", "action", "grace_seconds", "config")


def rules_of(db: ManagedDatabase) -> list[Rule]:
    """The database's rules, the seed's defaults created for signals it has none of. A rule that
    needs a URL or a query starts disabled until someone gives one."""
    have = {r.signal for r in db.trigger_rules.all()}
    for d in DEFAULTS:
        if d.signal not in have:
            config = {"query": "SELECT 1"} if d.signal == Signal.PERFORMANCE else {}
            Rule.objects.get_or_create(
                database=db,
                signal=d.signal,
                defaults={
                    "name": d.name,
                    "threshold": d.threshold,
                    "window_seconds": d.window_seconds,
                    "action": d.action,
                    "grace_seconds": d.grace_seconds,
                    "config": config,
                    "enabled": not d.needs or bool(config.get(d.needs)),
                },
            )
    return list(db.trigger_rules.order_by("pk"))


def change_role(db: ManagedDatabase) -> Role:
    return Role.LEAD if db.is_production else Role.ENGINEER


def may_change(actor: User, db: ManagedDatabase) -> bool:
    return has_role(actor, change_role(db))


class NotAllowed(PermissionError):
    pass


@transaction.atomic
def update(actor: User, rule: Rule, values: dict[str, Any]) -> Rule:
    """Save ``values`` (of EDITABLE) on ``rule``; audited with before and after."""
    stored = Rule.objects.select_for_update().get(pk=rule.pk)
    needed = change_role(stored.database)
    if not has_role(actor, needed):
        raise NotAllowed(
            f"Changing the rollback triggers of {stored.database.name} needs the "
            f"{needed.label} role."
        )
    changes = {
        k: [getattr(stored, k), values[k]]
        for k in EDITABLE
        if k in values and getattr(stored, k) != values[k]
    }
    if not changes:
        return stored
    for k, (_, new) in changes.items():
        setattr(stored, k, new)
    stored.changed_at = timezone.now()
    stored.changed_by_id = actor.pk
    stored.save()
    record(
        actor,
        "trigger.rule_changed",
        stored.database,
        details={"rule": stored.pk, "signal": stored.signal, "changes": changes},
    )
    return stored
