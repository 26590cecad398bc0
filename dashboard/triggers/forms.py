from __future__ import annotations

from typing import Any

from django import forms

from dashboard.notify import webhooks
from dashboard.triggers.models import Action, Rule, Signal

MAX_QUERY = 2000


class RuleForm(forms.Form):
    enabled = forms.BooleanField(required=False)
    threshold = forms.FloatField(min_value=0, max_value=1e9)
    window_seconds = forms.IntegerField(min_value=0, max_value=24 * 3600, label="Window (s)")
    action = forms.ChoiceField(choices=Action.choices)
    grace_seconds = forms.IntegerField(
        min_value=0, max_value=3600, label="Grace (s)", help_text="a lead may cancel meanwhile"
    )
    url = forms.CharField(required=False, max_length=2000, label="URL")
    query = forms.CharField(
        required=False, max_length=MAX_QUERY, widget=forms.Textarea(attrs={"rows": 2})
    )

    def __init__(self, data: Any = None, *, rule: Rule) -> None:
        self.rule = rule
        initial = {
            "enabled": rule.enabled,
            "threshold": rule.threshold,
            "window_seconds": rule.window_seconds,
            "action": rule.action,
            "grace_seconds": rule.grace_seconds,
            "url": (rule.config or {}).get("url", ""),
            "query": (rule.config or {}).get("query", ""),
        }
        super().__init__(data, initial=initial, prefix=f"r{rule.pk}")
        if rule.signal not in (Signal.HEALTH, Signal.CUSTOM_HTTP):
            del self.fields["url"]
        if rule.signal not in (Signal.PERFORMANCE, Signal.CUSTOM_SQL):
            del self.fields["query"]

    def clean_url(self) -> str:
        url = self.cleaned_data.get("url", "").strip()
        if url:
            try:
                webhooks.check_url(url)
            except webhooks.WebhookRefused as exc:
                raise forms.ValidationError(str(exc).replace("webhook", "signal")) from None
        return url

    def clean_query(self) -> str:
        query = self.cleaned_data.get("query", "").strip()
        if "\x00" in query:
            raise forms.ValidationError("The query holds a NUL character.")
        if query and not query.lower().startswith(("select", "with")):
            raise forms.ValidationError(
                "A signal query is one SELECT (or WITH ... SELECT); it runs read-only with a "
                "5-second statement timeout."
            )
        return query

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        needs = "url" if "url" in self.fields else "query" if "query" in self.fields else ""
        if data.get("enabled") and needs and not data.get(needs) and needs not in self.errors:
            self.add_error(needs, f"This rule cannot run without a {needs.upper()}.")
        return data

    def values(self) -> dict[str, Any]:
        data = self.cleaned_data
        config = dict(self.rule.config or {})
        for key in ("url", "query"):
            if key in self.fields:
                config[key] = data[key]
        return {
            "enabled": data["enabled"],
            "threshold": data["threshold"],
            "window_seconds": data["window_seconds"],
            "action": data["action"],
            "grace_seconds": data["grace_seconds"],
            "config": config,
        }
