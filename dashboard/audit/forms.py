from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django import forms
from django.contrib.auth import get_user_model

from dashboard.audit import actions as catalog

ANY_ACTION = "Any action"
ANY_OBJECT_TYPE = "Any type"


class AuditFilterForm(forms.Form):
    """The audit page's filters; ``reports.filtered_events(form.cleaned_data)`` applies them.

    ``action`` is one of the trail's actions (``run.approved``) or a family (``run.``: ``run``
    and every ``run.*``); ``run`` and ``run.*`` are read as the family too, as the page's older
    links and hand-written URLs put it. Anything else is refused with a message, on the page
    and by the exports (400) alike.
    """

    actor = forms.CharField(
        required=False,
        max_length=150,
        widget=forms.TextInput(attrs={"list": "audit-actors", "autocomplete": "off"}),
    )
    action = forms.CharField(required=False, max_length=80, widget=forms.Select)
    object_type = forms.CharField(
        required=False, max_length=80, label="Object type", widget=forms.Select
    )
    object_id = forms.CharField(required=False, max_length=64, label="Object id")
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(
        self,
        data: Mapping[str, Any] | None = None,
        *,
        known: Sequence[str] | None = None,
        object_types: Sequence[str] | None = None,
    ) -> None:
        self.known = list(catalog.known() if known is None else known)
        self.object_types = list(catalog.object_types() if object_types is None else object_types)
        if data is not None and data.get("action"):
            # One value per name (a QueryDict's last, as the form reads it), the action normalised.
            data = {name: data.get(name) for name in data}
            data["action"] = catalog.normalise(str(data["action"]), self.known)
        super().__init__(data)
        self.families = catalog.families(self.known)
        choices: list[Any] = [("", ANY_ACTION), *self._refused("action", self._allowed())]
        for family in self.families:
            group = [(family.value, family.label)]
            group += [(action, action) for action in family.actions]
            choices.append((family.title, group))
        action = self.fields["action"]
        assert isinstance(action.widget, forms.Select)
        action.widget.choices = choices
        types: list[Any] = [("", ANY_OBJECT_TYPE), *self._refused("object_type", self.object_types)]
        types += [(name, name) for name in self.object_types]
        object_type = self.fields["object_type"]
        assert isinstance(object_type.widget, forms.Select)
        object_type.widget.choices = types

    def _refused(self, name: str, allowed: Iterable[str]) -> list[tuple[str, str]]:
        """The choice of a value asked for that is not in the trail: shown as asked, so the
        refused value is still in the form beside its error."""
        asked = str(self.data.get(name, "")) if self.is_bound else ""
        return [(asked, f"{asked} (not in the trail)")] if asked and asked not in allowed else []

    def _allowed(self) -> set[str]:
        return set(self.known) | {family.value for family in self.families}

    def clean_action(self) -> str:
        value: str = self.cleaned_data.get("action") or ""
        if value and value not in self._allowed():
            raise forms.ValidationError(
                "No event has the action '%(value)s': choose an action or a family of actions "
                "from the list.",
                code="unknown_action",
                params={"value": value},
            )
        return value

    def clean_object_type(self) -> str:
        value: str = self.cleaned_data.get("object_type") or ""
        if value and value not in self.object_types:
            raise forms.ValidationError(
                "No event is about an object of type '%(value)s': choose a type from the list.",
                code="unknown_object_type",
                params={"value": value},
            )
        return value

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        since, until = data.get("since"), data.get("until")
        if since and until and since > until:
            raise forms.ValidationError("'Since' must not be after 'until'.")
        return data

    def actor_names(self) -> list[str]:
        """Suggestions for the actor field: the users, and "system" (events without a user).
        Users deleted since are not listed, but their events still match their name."""
        users = get_user_model()
        field = users.USERNAME_FIELD
        return ["system", *users.objects.order_by(field).values_list(field, flat=True)]
