"""Following a deployment with its database's rules: a watch opens when execution starts (each
rule measured against what it was before), the periodic tick samples every enabled rule, and a
rule over its threshold fires once per watch: an alert, or the rollback runbook (through
hooks.py). The watch ends at the end of the post-deployment window, or when the run is rolled
back.

What a rule's value is:

- execution time, and its ratio to the rehearsal: while execution runs (frozen when it ends);
- data loss: once, when execution has ended, from the snapshot taken before it (the application
  deleting its own rows later is not the migration's doing);
- health: the share of failed answers among the window's samples (at least MIN_SAMPLES: when
  fewer fit in the window, because each waited for a URL that hangs, the last MIN_SAMPLES);
- performance: how much slower the window's median probe is than the baseline, in %, and only
  when it is also PERFORMANCE_FLOOR_MS slower (a 0.1 ms probe doubling is noise, not harm);
- custom SQL and HTTP: the mean of the window's samples.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from dashboard.audit.chain import record
from dashboard.databases.models import ManagedDatabase
from dashboard.notify import events
from dashboard.notify.outbox import emit
from dashboard.schema.models import DataSnapshot
from dashboard.triggers import hooks, signals
from dashboard.triggers.models import Action, Firing, Rule, Sample, Signal, Watch
from dashboard.triggers.rules import rules_of

log = logging.getLogger(__name__)
MIN_SAMPLES = 3
PERFORMANCE_FLOOR_MS = 5.0


def start(
    db: ManagedDatabase,
    run_id: int,
    *,
    run_url: str = "",
    revisions: list[str] | None = None,
    snapshot: DataSnapshot | None = None,
    rehearsed_seconds: float | None = None,
) -> Watch:
    """Open (or, for a resumed execution, keep) the watch of ``run_id``; baselines taken now."""
    existing = Watch.objects.filter(run_id=run_id, state=Watch.State.ACTIVE).first()
    if existing is not None:
        return existing
    watch = Watch.objects.create(
        database=db,
        run_id=run_id,
        run_url=run_url,
        revisions=list(revisions or []),
        snapshot=snapshot,
        rehearsed_seconds=rehearsed_seconds,
    )
    base: dict[str, Any] = {}
    for rule in rules_of(db):
        if rule.enabled and rule.signal == Signal.PERFORMANCE:
            try:
                base[str(rule.pk)] = signals.baseline(rule, watch)
            except signals.SignalError as exc:
                base[str(rule.pk)] = None
                log.warning("no baseline for rule %s: %s", rule.pk, exc)
    watch.baseline = base
    watch.save(update_fields=["baseline"])
    return watch


def executed(run_id: int) -> None:
    """Execution of ``run_id`` ended (its upgrade finished, failed or was stopped): the
    post-deployment window starts."""
    hours = settings.RUNWAY_TRIGGER_WINDOW_HOURS
    now = timezone.now()
    Watch.objects.filter(run_id=run_id, state=Watch.State.ACTIVE, executed_at=None).update(
        executed_at=now, until=now + timedelta(hours=hours)
    )


def end(run_id: int, reason: str) -> None:
    Watch.objects.filter(run_id=run_id, state=Watch.State.ACTIVE).update(
        state=Watch.State.ENDED, ended_reason=reason[:300]
    )


def _due(rule: Rule, watch: Watch) -> bool:
    if rule.signal in (Signal.EXECUTION_TIME, Signal.REHEARSAL_RATIO):
        return watch.executed_at is None or not rule.samples.filter(watch=watch).exists()
    if rule.signal == Signal.DATA_LOSS:
        return watch.executed_at is not None and not rule.samples.filter(watch=watch).exists()
    return True


def value_of(rule: Rule, watch: Watch) -> float | None:
    """The rule's value now, from its samples in the window (None: not enough to judge)."""
    samples = rule.samples.filter(watch=watch)
    if rule.signal in (Signal.EXECUTION_TIME, Signal.REHEARSAL_RATIO, Signal.DATA_LOSS):
        last = samples.order_by("-at").first()
        return None if last is None else last.value
    since = timezone.now() - timedelta(seconds=max(rule.window_seconds, 1))
    recent = list(samples.filter(at__gte=since))
    if len(recent) < MIN_SAMPLES:  # slow samples (a hanging URL, a blocked probe): the last few
        recent = list(samples.order_by("-at")[:MIN_SAMPLES])
    values = [s.value for s in recent if s.value is not None]
    if rule.signal == Signal.HEALTH:  # a sample that could not even ask is a failure
        if len(recent) < MIN_SAMPLES:
            return None
        return sum(100.0 if s.value is None else s.value for s in recent) / len(recent)
    if not values:
        return None
    if rule.signal == Signal.PERFORMANCE:
        base = (watch.baseline or {}).get(str(rule.pk))
        if not base or len(values) < MIN_SAMPLES:
            return None
        median = sorted(values)[len(values) // 2]
        if median - base < PERFORMANCE_FLOOR_MS:
            return min(0.0, (median - base) / base * 100)
        return (median - base) / base * 100
    return sum(values) / len(values)


def over(rule: Rule, value: float | None) -> bool:
    if value is None:
        return False
    return value > rule.threshold


def tick() -> int:
    """Sample every enabled rule of every active watch, end the watches whose window passed,
    fire what is over its threshold. Returns the number of firings."""
    fired = 0
    for watch_id in Watch.objects.filter(state=Watch.State.ACTIVE).values_list("pk", flat=True):
        with transaction.atomic():
            watch = (
                Watch.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("database", "snapshot")
                .filter(pk=watch_id, state=Watch.State.ACTIVE)
                .first()
            )
            if watch is None:
                continue  # another tick has it
            if watch.until is not None and watch.until <= timezone.now():
                watch.state, watch.ended_reason = Watch.State.ENDED, "post-deployment window ended"
                watch.save(update_fields=["state", "ended_reason"])
                continue
            fired += _look(watch)
            watch.looked_at = timezone.now()
            watch.save(update_fields=["looked_at"])
    return fired


def _look(watch: Watch) -> int:
    fired = 0
    done = set(watch.firings.values_list("rule_id", flat=True))
    for rule in rules_of(watch.database):
        if not rule.enabled or not _due(rule, watch):
            continue
        try:
            value, note = signals.measure(rule, watch)
        except signals.SignalError as exc:
            value, note = None, f"not measured: {exc}"
        Sample.objects.create(rule=rule, watch=watch, value=value, note=note[:500])
        if rule.pk in done:
            continue
        now = value_of(rule, watch)
        if over(rule, now):
            assert now is not None
            fired += fire(rule, watch, now, note)
    return fired


def fire(rule: Rule, watch: Watch, value: float, note: str) -> int:
    """Record the firing, audit and notify it; for a roll-back rule, start the rollback."""
    evidence = {"signal": rule.signal, "note": note, "config": _shown_config(rule)}
    try:
        with transaction.atomic():
            firing = Firing.objects.create(
                rule=rule,
                watch=watch,
                value=value,
                threshold=rule.threshold,
                action=rule.action,
                evidence=evidence,
            )
    except IntegrityError:
        return 0  # fired already
    db = watch.database
    sentence = (
        f"{rule.name} fired on {db.name} for run #{watch.run_id}: {value:g} over {rule.threshold:g}"
    )
    outcome = "alerted"
    if rule.action == Action.ROLLBACK:
        starter = hooks.rollback_starter()
        if starter is None:
            outcome = "no rollback runbook is installed: alerted only"
        else:
            try:
                started = starter(
                    watch.run_id,
                    sentence,
                    source=f"trigger:{rule.pk} {rule.signal}",
                    grace_seconds=rule.grace_seconds,
                )
                firing.rollback_run_id = getattr(started, "pk", None)
                outcome = f"rollback run #{firing.rollback_run_id} started"
                # Rolled back: what the rules watched is undone (the rollback checks itself).
                watch.state = Watch.State.ENDED
                watch.ended_reason = f"rolled back by run #{firing.rollback_run_id}"
                watch.save(update_fields=["state", "ended_reason"])
            except Exception as exc:  # noqa: BLE001 - recorded; the alert still goes out
                log.exception("rollback of run %s could not start", watch.run_id)
                outcome = f"the rollback could not start: {exc}"[:300]
    firing.outcome = outcome
    firing.save(update_fields=["rollback_run_id", "outcome"])
    with transaction.atomic():
        record(
            None,
            "trigger.fired",
            db,
            details={
                "rule": rule.pk,
                "signal": rule.signal,
                "value": value,
                "threshold": rule.threshold,
                "action": rule.action,
                "run": watch.run_id,
                "outcome": outcome,
            },
        )
        emit(
            events.TRIGGER_FIRED,
            db,
            f"Trigger fired on {db.name}: {rule.name}",
            f"{sentence}. {outcome}.",
            watch.run_url,
            {"rule": rule.pk, "signal": rule.signal, "value": value, "run": watch.run_id},
        )
    return 1


def _shown_config(rule: Rule) -> dict[str, Any]:
    return {k: v for k, v in (rule.config or {}).items() if k in ("query",)}
