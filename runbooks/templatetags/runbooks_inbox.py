"""The inbox on the overview: ``{% load runbooks_inbox %}{% inbox_panel %}`` (the overview app
knows nothing of runs; the template asks)."""

from typing import Any

from django import template

from runbooks import inbox

register = template.Library()


@register.inclusion_tag("runbooks/_inbox.html", takes_context=True)
def inbox_panel(context: template.Context) -> dict[str, Any]:
    request = context.get("request")
    items = inbox.for_request(request) if request is not None else []
    return {"items": items, "can_engineer": context.get("can_engineer")}
