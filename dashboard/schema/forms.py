from __future__ import annotations

from typing import Any

from django import forms

from dashboard.schema.acceptance import MAX_COMMENT


class AcceptFindingForm(forms.Form):
    rule = forms.ChoiceField(label="Rule", choices=())
    comment = forms.CharField(
        label="Why it is acceptable",
        max_length=MAX_COMMENT,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Recorded in the audit trail with your name.",
    )

    def __init__(self, *args: Any, rules: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["rule"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [(r, r) for r in rules]
        field.error_messages["invalid_choice"] = (
            "%(value)s is not an open finding of this revision."
        )
