"""What the trigger page of a database shows: each rule with its current value as a small plot
(the latest watch's samples), what it does, when it last fired; the firings; who changed what."""

from __future__ import annotations

from typing import Any

from dashboard.audit.models import AuditEvent
from dashboard.backups import plots
from dashboard.databases.models import ManagedDatabase
from dashboard.triggers import rules, watch
from dashboard.triggers.forms import RuleForm
from dashboard.triggers.models import Firing, Watch


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def context(db: ManagedDatabase, user: Any, invalid: RuleForm | None = None) -> dict[str, Any]:
    current = db.watches.filter(state=Watch.State.ACTIVE).first() or db.watches.first()
    editable = rules.may_change(user, db)
    rows = []
    for rule in rules.rules_of(db):
        samples = list(rule.samples.filter(watch=current).order_by("-at")[:60])[::-1]
        value = watch.value_of(rule, current) if current is not None else None
        last = rule.firings.order_by("-at").first()
        form = (
            invalid if invalid is not None and invalid.rule.pk == rule.pk else RuleForm(rule=rule)
        )
        rows.append(
            {
                "rule": rule,
                "unit": rules.UNITS[rule.signal],
                "value": value,
                "over": watch.over(rule, value),
                "plot": plots.sparkline(
                    [s.value for s in samples],
                    [s.at.strftime("%H:%M:%S") for s in samples],
                    fmt=_fmt,
                    width=200,
                    height=40,
                )
                if samples
                else "",
                "last_note": samples[-1].note if samples else "",
                "last_firing": last,
                "form": form,
                "open": invalid is not None and invalid.rule.pk == rule.pk,
            }
        )
    changes = AuditEvent.objects.filter(
        action="trigger.rule_changed", object_type="manageddatabase", object_id=str(db.pk)
    ).order_by("-created_at")[:20]
    return {
        "db": db,
        "rows": rows,
        "watch": current,
        "firings": Firing.objects.filter(watch__database=db).select_related("rule")[:20],
        "changes": changes,
        "editable": editable,
        "needed": rules.change_role(db).label,
        "nav": "overview",
    }
