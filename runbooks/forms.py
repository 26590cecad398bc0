from __future__ import annotations

from typing import Any

from django import forms

from dashboard.databases.models import ManagedDatabase
from runbooks.engine import MAX_GRACE, MAX_TEXT
from runbooks.models import Decision, RunState


class StartRunForm(forms.Form):
    runbook = forms.ChoiceField(label="Runbook")
    database = forms.ModelChoiceField(
        ManagedDatabase.objects.order_by("name"), to_field_name="name", label="Database"
    )
    target = forms.CharField(
        label="Target revision",
        required=False,
        max_length=64,
        help_text="Empty: the newest revision (the head). Only for runbooks that migrate.",
    )

    def __init__(self, *args: Any, books: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["runbook"]
        assert isinstance(field, forms.ChoiceField)
        # A rollback starts from the run it rolls back (its triggers, or start_rollback).
        field.choices = [(b.id, b.title) for b in books.values() if not b.automatic]


class TickForm(forms.Form):
    note = forms.CharField(required=False, max_length=MAX_TEXT, widget=forms.TextInput)


class DecideForm(forms.Form):
    decision = forms.ChoiceField(choices=Decision.choices)
    comment = forms.CharField(max_length=MAX_TEXT, widget=forms.Textarea(attrs={"rows": 2}))


class AbortForm(forms.Form):
    reason = forms.CharField(max_length=MAX_TEXT, widget=forms.TextInput)


class AbortStepForm(forms.Form):
    reason = forms.CharField(max_length=MAX_TEXT, widget=forms.TextInput)
    grace = forms.FloatField(
        required=False,
        min_value=0,
        max_value=MAX_GRACE,
        help_text="Seconds from the cancel to ending the session (default 10)",
    )


class CancelRollbackForm(forms.Form):
    reason = forms.CharField(max_length=MAX_TEXT, widget=forms.TextInput)


class RunFilterForm(forms.Form):
    database = forms.CharField(required=False, max_length=63)
    state = forms.ChoiceField(required=False, choices=[("", "any")] + RunState.choices)
    person = forms.CharField(required=False, max_length=150)
