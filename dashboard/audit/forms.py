from __future__ import annotations

from django import forms


class AuditFilterForm(forms.Form):
    """The audit page's filters; ``reports.filtered_events(form.cleaned_data)`` applies them."""

    actor = forms.CharField(required=False, max_length=150)
    action = forms.CharField(required=False, max_length=80)
    object_type = forms.CharField(required=False, max_length=80, label="Object type")
    object_id = forms.CharField(required=False, max_length=64, label="Object id")
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        since, until = data.get("since"), data.get("until")
        if since and until and since > until:
            raise forms.ValidationError("'Since' must not be after 'until'.")
        return data
