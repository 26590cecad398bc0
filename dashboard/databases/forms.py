from __future__ import annotations

import re

from django import forms

from dashboard.databases.models import ManagedDatabase
from dashboard.lib import pg
from dashboard.lib.alembic import NotAnAlembicProject, read_scripts
from dashboard.lib.secrets import SecretError, check_reference

_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")


class CriticalTablesField(forms.CharField):
    """Comma- or newline-separated table names, optionally schema-qualified."""

    def prepare_value(self, value: object) -> object:
        if isinstance(value, list):
            return ", ".join(value)
        return value

    def to_python(self, value: str | None) -> list[str]:  # type: ignore[override]
        names = [n.strip() for n in re.split(r"[,\n]", value or "") if n.strip()]
        bad = [n for n in names if not _TABLE.match(n)]
        if bad:
            raise forms.ValidationError(
                "Not a table name: %(bad)s (use table or schema.table).",
                params={"bad": ", ".join(bad)},
            )
        return list(dict.fromkeys(names))


class ManagedDatabaseForm(forms.ModelForm):
    critical_tables = CriticalTablesField(
        required=False,
        help_text="Tables whose rows must survive every change, e.g. users, payments",
    )

    class Meta:
        model = ManagedDatabase
        fields = [
            "name",
            "environment",
            "dsn",
            "password_ref",
            "script_location",
            "critical_tables",
            "partner",
        ]

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        partners = ManagedDatabase.objects.all()
        if self.instance.pk:
            partners = partners.exclude(pk=self.instance.pk)
        self.fields["partner"].queryset = partners  # type: ignore[attr-defined]

    def clean_dsn(self) -> str:
        dsn = self.cleaned_data["dsn"].strip()
        try:
            pg.parse_dsn(dsn)
        except pg.BadDsn as exc:
            # Never echo a password back into the page.
            self.data = self.data.copy()
            self.data[self.add_prefix("dsn")] = pg.redact(dsn)
            raise forms.ValidationError(str(exc)) from None
        return dsn

    def clean_password_ref(self) -> str:
        try:
            return check_reference(self.cleaned_data["password_ref"])
        except SecretError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_script_location(self) -> str:
        location = self.cleaned_data["script_location"].strip()
        probe = ManagedDatabase(script_location=location)
        try:
            read_scripts(probe.script_path)
        except NotAnAlembicProject as exc:
            raise forms.ValidationError(str(exc)) from None
        return location
