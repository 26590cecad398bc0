from __future__ import annotations

import re
from typing import Any

from django import template
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

# A pair of backticks on one line; what is between them is already escaped.
_CODE = re.compile(r"`([^`\n]+)`")


@register.filter
def notes_count(findings: list[Any]) -> int:
    """How many findings are style notes (they never raise a grade)."""
    return sum(1 for f in findings if f.severity == "note")


@register.filter(is_safe=False)
def code_spans(text: Any) -> SafeString:
    """Plain text with `code` in backticks, as HTML: everything escaped first, then each pair of
    backticks on a line becomes <code>…</code> and each line break a <br>. A lone backtick stays
    as it is. Nothing of the text itself is ever trusted as HTML."""
    escaped = escape("" if text is None else str(text))
    html = _CODE.sub(r"<code>\1</code>", escaped).replace("\r\n", "\n").replace("\n", "<br>")
    return mark_safe(html)  # noqa: S308 - built from escaped text and our own tags only
