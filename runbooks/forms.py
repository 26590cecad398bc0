from __future__ import annotations

from typing import Any

from django import forms

from dashboard.databases.models import ManagedDatabase
from runbooks.engine import MAX_GRACE, MAX_TEXT
from runbooks.models import Decision, RunState

DEFAULT_RUNBOOK = "production-deployment"
LOCAL = "%Y-%m-%dT%H:%M"


def _when(label: str, help_text: str = "") -> forms.DateTimeField:
    return forms.DateTimeField(
        label=label,
        required=False,
        input_formats=[LOCAL, "%Y-%m-%d %H:%M"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format=LOCAL),
        help_text=help_text,
    )


class ScheduleFields(forms.Form):
    """A planned deployment time and a deployment window (engine._check_schedule says what
    makes sense)."""

    planned_at = _when(
        "Planned deployment", "The phases' offsets (one week before, …) become due dates"
    )
    window_start = _when("Window opens", "Deploy is refused before it")
    window_end = _when("Window closes", "Passed without a deployment, the approvals expire")


class StartRunForm(ScheduleFields):
    runbook = forms.ChoiceField(label="Runbook")
    database = forms.ModelChoiceField(
        ManagedDatabase.objects.order_by("name"), to_field_name="name", label="Database"
    )
    target = forms.ChoiceField(
        label="Target revision",
        required=False,
        help_text="A pending revision of the chosen database; only for runbooks that migrate.",
    )
    field_order = ["runbook", "database", "target", "planned_at", "window_start", "window_end"]

    def __init__(
        self,
        *args: Any,
        books: dict[str, Any],
        targets: list[tuple[str, str]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["runbook"]
        assert isinstance(field, forms.ChoiceField)
        # A rollback starts from the run it rolls back (its triggers, or start_rollback).
        field.choices = [(b.id, b.title) for b in books.values() if not b.automatic]
        if DEFAULT_RUNBOOK in books and "runbook" not in self.initial:
            self.initial["runbook"] = DEFAULT_RUNBOOK
        target = self.fields["target"]
        assert isinstance(target, forms.ChoiceField)
        target.choices = [("", "— none (runbooks that do not migrate) —")] + (targets or [])
        if targets and "target" not in self.initial:
            self.initial["target"] = targets[0][0]


class AmendForm(ScheduleFields):
    target = forms.ChoiceField(
        label="Target revision",
        required=False,
        help_text="A pending revision; a new one starts the run over",
    )
    field_order = ["target", "planned_at", "window_start", "window_end"]

    def __init__(
        self, *args: Any, targets: list[tuple[str, str]] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["target"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [("", "— none —")] + (targets or [])


class RequestReviewForm(forms.Form):
    note = forms.CharField(max_length=MAX_TEXT, widget=forms.Textarea(attrs={"rows": 2}))


class CommentForm(forms.Form):
    body = forms.CharField(max_length=MAX_TEXT, widget=forms.Textarea(attrs={"rows": 2}))
    revision = forms.CharField(required=False, max_length=64)
    statement = forms.IntegerField(required=False, min_value=0, max_value=9999)


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
    mine = forms.BooleanField(required=False, label="Waiting for me")
