import json
from datetime import datetime
from typing import Any

from django import template
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.utils.timesince import timesince

register = template.Library()


@register.filter
def ago(moment: datetime | None) -> str:
    """'just now' under a minute, else Django's '3 minutes ago'."""
    if moment is None:
        return ""
    if (timezone.now() - moment).total_seconds() < 60:
        return "just now"
    return f"{timesince(moment)} ago"


@register.filter
def breakable(text: Any) -> SafeString:
    """``text`` escaped, with a line-break opportunity after each '.', '_' and '/': a long
    action (``notification.preferences_changed``) or path wraps there, not mid-word."""
    escaped = str(escape(text))
    for mark in "._/":
        escaped = escaped.replace(mark, mark + "<wbr>")
    return mark_safe(escaped)  # noqa: S308  (escaped above; only <wbr> is added)


@register.filter
def verdict_class(verdict: str) -> str:
    return {"pass": "b-ok", "warn": "b-warn", "fail": "b-bad"}.get(verdict, "b-muted")


@register.filter
def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


@register.filter
def get_item(mapping: Any, key: Any) -> Any:
    return mapping.get(key) if hasattr(mapping, "get") else None


@register.filter
def slice_item(sequence: Any, index: int) -> Any:
    try:
        return sequence[int(index)]
    except (IndexError, TypeError, ValueError):
        return None
