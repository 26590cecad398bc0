"""A finding's message and safe way: `code` in backticks shows as code, everything escaped."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from helpers import checked, make_database

from dashboard.schema.templatetags.risk_ui import code_spans


def test_backtick_pairs_become_code_after_escaping():
    text = 'Use `CREATE INDEX CONCURRENTLY ix ON t (a)` <b>now</b>\nthen `a < b && "c"`.'
    assert code_spans(text) == (
        "Use <code>CREATE INDEX CONCURRENTLY ix ON t (a)</code> &lt;b&gt;now&lt;/b&gt;<br>"
        "then <code>a &lt; b &amp;&amp; &quot;c&quot;</code>."
    )


def test_hostile_text_inside_backticks_is_still_escaped():
    html = code_spans("`<script>alert(1)</script>` and `<img src=x onerror=alert(1)>`")
    assert "<script>" not in html and "<img" not in html
    assert html.startswith("<code>&lt;script&gt;alert(1)&lt;/script&gt;</code>")


def test_a_lone_backtick_or_one_across_lines_stays_literal():
    assert code_spans("it's a ` alone") == "it&#x27;s a ` alone"
    assert code_spans("`one\ntwo`") == "`one<br>two`"
    assert code_spans(None) == ""


@pytest.mark.django_db
def test_the_revision_page_shows_the_safe_way_with_code(client, viewer):
    db = make_database()
    checked(db, "0016")
    client.force_login(viewer)
    body = client.get(reverse("schema-revision", args=[db.name, "0020"])).content.decode()
    safe = re.findall(r'<div class="safe">(.*?)</div>', body, re.S)
    assert safe, "0020's findings have a safe way"
    assert any("<code>" in s for s in safe)
    assert not any("`" in s for s in safe), safe
