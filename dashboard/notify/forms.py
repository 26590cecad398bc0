from __future__ import annotations

from typing import Any

from django import forms
from django.core.validators import validate_email
from django.http import QueryDict

from dashboard.databases.models import ManagedDatabase
from dashboard.notify import events, webhooks
from dashboard.notify.models import WEBHOOKS, ChannelKind
from dashboard.notify.webhooks import WebhookRefused

MAX_ADDRESSES = 20


class PreferenceForm(forms.Form):
    events = forms.MultipleChoiceField(
        label="Email me when",
        choices=events.CHOICES,
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )
    muted = forms.ModelMultipleChoiceField(
        label="Never email me about these databases",
        queryset=ManagedDatabase.objects.order_by("name"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )


class ChannelForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What the page calls it, e.g. #db-ops")
    kind = forms.ChoiceField(choices=ChannelKind.choices)
    url_ref = forms.CharField(
        label="Webhook URL reference",
        max_length=300,
        required=False,
        help_text=(
            "Webhooks: env:RUNWAY_WEBHOOK_NAME or file:/path in the secrets directory, holding "
            "the URL. Runway reads it when it sends and never stores or shows the URL."
        ),
    )
    addresses = forms.CharField(
        label="Email addresses",
        max_length=2000,
        required=False,
        help_text="Email: one or more addresses, separated by commas",
    )
    events = forms.MultipleChoiceField(
        label="Send",
        choices=events.CHOICES,
        widget=forms.CheckboxSelectMultiple,
        error_messages={"required": "Choose at least one event to send."},
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.url: webhooks.Target | None = None

    def _forget(self, name: str) -> None:
        """Never show back what was typed into ``name``: it may be the URL itself."""
        data = QueryDict(mutable=True)
        data.update(self.data)
        data[self.add_prefix(name)] = ""
        self.data = data

    def clean_addresses(self) -> list[str]:
        raw = self.cleaned_data.get("addresses", "")
        return [a.strip() for a in raw.replace(";", ",").split(",") if a.strip()]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        kind = data.get("kind")
        if kind in WEBHOOKS:
            self._clean_webhook(data)
        elif kind == ChannelKind.EMAIL and "addresses" in data:
            self._check_addresses(data["addresses"])
        return data

    def _check_addresses(self, found: list[str]) -> None:
        if not found:
            self.add_error("addresses", "Give at least one address for an email channel.")
        elif len(found) > MAX_ADDRESSES:
            self.add_error("addresses", f"At most {MAX_ADDRESSES} addresses per channel.")
        else:
            bad = []
            for address in found:
                try:
                    validate_email(address)
                except forms.ValidationError:
                    bad.append(address)
            if bad:
                shown = ", ".join(b[:80] for b in bad[:3])
                self.add_error("addresses", f"Not an email address: {shown}.")

    def _clean_webhook(self, data: dict[str, Any]) -> None:
        try:
            ref = webhooks.check_reference_form(data.get("url_ref", ""))
        except WebhookRefused as exc:
            self._forget("url_ref")  # it may be the URL itself, or a secret
            self.add_error("url_ref", str(exc))
            return
        try:
            self.url = webhooks.check_url(webhooks.resolve_url(ref))
        except WebhookRefused as exc:
            self.add_error("url_ref", str(exc))
        else:
            data["url_ref"] = ref
