from __future__ import annotations

import json
import re
from typing import Any

from django import forms
from django.conf import settings
from django.http import QueryDict

from dashboard.databases import credentials, registry, run_modes
from dashboard.databases.models import (
    LOCK_ATTEMPTS,
    LOCK_TIMEOUT_MS,
    LOCK_WAIT_SECONDS,
    STATEMENT_TIMEOUT_SECONDS,
    ManagedDatabase,
    RunMode,
    revision_timeouts_problems,
)
from dashboard.lib import pg
from dashboard.lib.alembic import NotAnAlembicProject, read_scripts
from dashboard.lib.alembic import project as alembic_project
from dashboard.lib.secrets import SecretError
from dashboard.schema.snapshot import MODES as SNAPSHOT_MODES

_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")
SCRIPT_LOCATION_HELP = (
    "The script folder (env.py and versions/), or the project's alembic.ini (alembic.ini#name "
    "for another section), whose version_locations say where the revisions are. Relative paths "
    "start at Runway's folder. Read, never run."
)


class _NamesField(forms.CharField):
    """Comma- or newline-separated names, each one ``valid``; once each, in order."""

    message = ""

    def valid(self, name: str) -> bool:
        raise NotImplementedError

    def prepare_value(self, value: object) -> object:
        if isinstance(value, list):
            return ", ".join(value)
        return value

    def to_python(self, value: str | None) -> list[str]:  # type: ignore[override]
        names = [n.strip() for n in re.split(r"[,\n]", value or "") if n.strip()]
        bad = [n[:100] for n in names if not self.valid(n)]
        if bad:
            raise forms.ValidationError(self.message, params={"bad": ", ".join(bad)})
        return list(dict.fromkeys(names))


class CriticalTablesField(_NamesField):
    """Table names, optionally schema-qualified."""

    message = "Not a table name: %(bad)s (use table or schema.table)."

    def valid(self, name: str) -> bool:
        return bool(_TABLE.match(name))


_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*){1,2}$")


def _name(value: str, pattern: re.Pattern[str]) -> bool:
    """``value`` matches and each dotted part fits PostgreSQL's 63-byte names."""
    return bool(pattern.match(value)) and all(len(p.encode()) <= 63 for p in value.split("."))


class SnapshotModesField(forms.CharField):
    """``table=mode`` pairs, comma- or newline-separated; a table left out is sampled."""

    def prepare_value(self, value: object) -> object:
        if isinstance(value, dict):
            return ", ".join(f"{t}={m}" for t, m in value.items())
        return value

    def to_python(self, value: str | None) -> dict[str, str]:  # type: ignore[override]
        modes: dict[str, str] = {}
        for item in (n.strip() for n in re.split(r"[,\n]", value or "")):
            if not item:
                continue
            table, sep, mode = (part.strip() for part in item.partition("="))
            if not sep or not _name(table, _TABLE) or mode not in SNAPSHOT_MODES:
                raise forms.ValidationError(
                    "Not table=mode: %(item)s (mode is one of sampled, full, count; e.g. "
                    "payments=full).",
                    params={"item": item[:100]},
                )
            modes[table] = mode
        return modes


class ColumnsField(_NamesField):
    """``table.column`` names."""

    message = "Not a table.column: %(bad)s (e.g. users.last_seen_at)."

    def valid(self, name: str) -> bool:
        return _name(name, _COLUMN)


TIMEOUTS_EXAMPLE = '{"3c2e1f9a": 3600}'


class RevisionTimeoutsField(forms.CharField):
    """A JSON object of revision id -> statement timeout in seconds; empty for none."""

    widget = forms.Textarea(attrs={"rows": 3})

    def __init__(self, *, encoder: Any = None, decoder: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # JSONField's encoder and decoder: plain json here

    def prepare_value(self, value: object) -> object:
        if isinstance(value, dict):
            return json.dumps(value, sort_keys=True) if value else ""
        return value

    def to_python(self, value: str | None) -> dict[str, Any]:  # type: ignore[override]
        text = (value or "").strip()
        if not text:
            return {}
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(
                "Not valid JSON (%(why)s at line %(line)s, column %(column)s): write revision "
                "id -> seconds, e.g. %(example)s.",
                params={
                    "why": exc.msg,
                    "line": exc.lineno,
                    "column": exc.colno,
                    "example": TIMEOUTS_EXAMPLE,
                },
            ) from None
        except ValueError:  # a number with thousands of digits (int max str digits)
            raise forms.ValidationError(
                "A number in it is far too long: write revision id -> seconds, e.g. %(example)s.",
                params={"example": TIMEOUTS_EXAMPLE},
            ) from None
        problems = revision_timeouts_problems(parsed)
        if problems:
            raise forms.ValidationError(problems)
        assert isinstance(parsed, dict)
        return parsed


# Each policy field's bounds and what the message says about it.
_POLICY_BOUNDS = {
    "lock_timeout_ms": (LOCK_TIMEOUT_MS, "milliseconds", 500, "the longest one attempt may hold "
                        "up the application"),
    "lock_attempts": (LOCK_ATTEMPTS, "attempts", 30, "how many times a revision is tried"),
    "lock_wait_seconds": (LOCK_WAIT_SECONDS, "seconds", 10, "0 attempts at once"),
    "statement_timeout_seconds": (STATEMENT_TIMEOUT_SECONDS, "seconds", 300, "24 hours at most"),
}  # fmt: skip


class ManagedDatabaseForm(forms.ModelForm):
    critical_tables = CriticalTablesField(
        required=False,
        help_text="Tables whose rows must survive every change, e.g. users, payments",
    )
    snapshot_modes = SnapshotModesField(required=False, label="Snapshot per table")
    application_writes = ColumnsField(required=False, label="Columns the application writes")

    class Meta:
        model = ManagedDatabase
        fields = [
            "name",
            "environment",
            "dsn",
            "password_ref",
            "require_auth",
            "script_location",
            "critical_tables",
            "partner",
            "staging_partner",
            "run_mode",
            "project_python",
            "project_directory",
            "project_url_variable",
            *registry.POLICY_FIELDS,
            *registry.DETECTION_FIELDS,
        ]
        widgets = {"run_mode": forms.RadioSelect}
        field_classes = {"revision_statement_timeouts": RevisionTimeoutsField}

    def __init__(self, *args: Any, user: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["script_location"].help_text = SCRIPT_LOCATION_HELP
        partners = ManagedDatabase.objects.all()
        if self.instance.pk:
            partners = partners.exclude(pk=self.instance.pk)
        self.fields["partner"].queryset = partners  # type: ignore[attr-defined]
        staging = self.fields["staging_partner"]
        assert isinstance(staging, forms.ModelChoiceField)
        staging.queryset = partners.exclude(environment="production")
        self._run_mode_fields(user)
        self._policy_fields(user)
        self._detection_fields(user)
        if self.instance.pk and not registry.may_change_connection(user, self.instance):
            needed = registry.connection_role(self.instance).label
            for name in registry.CONNECTION_FIELDS:
                self.fields[name].disabled = True
                self.fields[
                    name
                ].help_text = (
                    f"Only a {needed} may change this: it decides where the password goes."
                )

    def _run_mode_fields(self, user: Any) -> None:
        """The interpreter is a choice among those an admin allowed (a stored one no longer
        allowed stays shown, marked); only a lead (admin for production) may change these."""
        stored = self.instance.project_python
        choices = [("", "—")] + [(p, p) for p in run_modes.allowed_pythons()]
        if stored and stored not in dict(choices):
            choices.append((stored, f"{stored} (no longer allowed)"))
        # Left out of a form (an older client, a script): Runway's environment, the default name.
        self.fields["run_mode"].required = False
        self.fields["project_url_variable"].required = False
        field = self.fields["project_python"]
        self.fields["project_python"] = forms.ChoiceField(
            choices=choices, required=False, label=field.label, help_text=field.help_text
        )
        if not registry.may_change_run_mode(user, self.instance):
            needed = registry.connection_role(self.instance).label
            for name in registry.RUN_FIELDS:
                locked = self.fields[name]
                locked.disabled = True
                locked.help_text = (
                    f"Only a {needed} may change this: it decides which program the workers run."
                )

    def _policy_fields(self, user: Any) -> None:
        """Left out of a form (an older client, a script): the value stays as it is. On a
        production database only a lead may change them."""
        for name in registry.POLICY_FIELDS:
            self.fields[name].required = False
        for name, ((low, high), _, _, _) in _POLICY_BOUNDS.items():
            # The bounds are checked in clean_<name>, with a message that says them.
            self.fields[name].validators = []
            self.fields[name].widget.attrs.update({"min": low, "max": high})
        self.fields["revision_statement_timeouts"].help_text = (
            "Revision id -> seconds, as JSON, for revisions whose statements need longer than "
            f"the statement timeout (a long CREATE INDEX CONCURRENTLY), e.g. {TIMEOUTS_EXAMPLE}"
        )
        if self.instance.pk and not registry.may_change_policy(user, self.instance):
            needed = registry.policy_role(self.instance).label
            for name in registry.POLICY_FIELDS:
                locked = self.fields[name]
                locked.disabled = True
                locked.help_text = (
                    f"Only a {needed} may change this on a production database: it decides how "
                    "long the application may be held up by a migration."
                )

    def _detection_fields(self, user: Any) -> None:
        """How data loss is looked for; left out of a form: as it is. On a production database
        only a lead may change it."""
        for name in registry.DETECTION_FIELDS:
            self.fields[name].required = False
        self.fields["snapshot_modes"].help_text = (
            "table=mode for critical tables, e.g. payments=full, events=count. sampled (the "
            "default): counts and a sample of rows hashed; full: every value hashed; count: "
            "rows only"
        )
        self.fields["application_writes"].help_text = (
            "table.column the application itself updates while a run goes on (its changes are "
            "not loss), e.g. users.last_seen_at"
        )
        if self.instance.pk and not registry.may_change_policy(user, self.instance):
            needed = registry.policy_role(self.instance).label
            for name in registry.DETECTION_FIELDS:
                locked = self.fields[name]
                locked.disabled = True
                locked.help_text = (
                    f"Only a {needed} may change this on a production database: it decides "
                    "what a run may lose unnoticed."
                )

    def clean_snapshot_modes(self) -> dict[str, str]:
        return dict(self._kept("snapshot_modes", self.cleaned_data.get("snapshot_modes")) or {})

    def clean_application_writes(self) -> list[str]:
        value = self._kept("application_writes", self.cleaned_data.get("application_writes"))
        return list(value or [])

    def _check_detection(self, data: dict[str, Any]) -> None:
        """Each table named is a critical table (a typo would be ignored)."""
        critical = set(data.get("critical_tables") or [])
        for name, tables in (
            ("snapshot_modes", list(data.get("snapshot_modes") or {})),
            (
                "application_writes",
                [c.rsplit(".", 1)[0] for c in data.get("application_writes") or []],
            ),
        ):
            if name not in data:
                continue
            unknown = sorted({t for t in tables if t not in critical})
            if unknown:
                self.add_error(
                    name,
                    f"Not a critical table: {', '.join(unknown)}. Data-loss detection looks at "
                    "the critical tables only; add it there first.",
                )

    def _kept(self, name: str, value: Any) -> Any:
        """``value``, or the stored one when the form left ``name`` out."""
        if self.add_prefix(name) not in self.data:
            return getattr(self.instance, name)
        return value

    def _bounded(self, name: str) -> int:
        value = self._kept(name, self.cleaned_data.get(name))
        (low, high), unit, default, note = _POLICY_BOUNDS[name]
        if value is None:
            return int(getattr(self.instance, name))  # left empty: as it is
        if not low <= value <= high:
            raise forms.ValidationError(
                "%(value)s is outside %(low)s..%(high)s %(unit)s (default %(default)s; %(note)s).",
                params={
                    "value": value,
                    "low": low,
                    "high": high,
                    "unit": unit,
                    "default": default,
                    "note": note,
                },
            )
        return int(value)

    def clean_lock_timeout_ms(self) -> int:
        return self._bounded("lock_timeout_ms")

    def clean_lock_attempts(self) -> int:
        return self._bounded("lock_attempts")

    def clean_lock_wait_seconds(self) -> int:
        return self._bounded("lock_wait_seconds")

    def clean_statement_timeout_seconds(self) -> int:
        return self._bounded("statement_timeout_seconds")

    def clean_revision_statement_timeouts(self) -> dict[str, Any]:
        value = self._kept(
            "revision_statement_timeouts", self.cleaned_data.get("revision_statement_timeouts")
        )
        return dict(value or {})

    def _check_revisions(self, data: dict[str, Any]) -> None:
        """Each overridden revision is one the scripts define (a typo would be ignored)."""
        overrides = data.get("revision_statement_timeouts") or {}
        if not overrides or "revision_statement_timeouts" not in self.changed_data:
            return
        if "script_location" not in data:
            return  # its own error is shown
        try:
            known = read_scripts(
                ManagedDatabase(script_location=data["script_location"]).script_path
            )
        except NotAnAlembicProject:
            return
        unknown = [rev for rev in overrides if rev not in known.revisions]
        if unknown:
            self.add_error(
                "revision_statement_timeouts",
                f"No revision file defines {', '.join(sorted(unknown))} in "
                f"{data['script_location']}: give the revision ids of the scripts.",
            )

    def clean_run_mode(self) -> str:
        return self.cleaned_data.get("run_mode") or self.instance.run_mode or RunMode.RUNWAY

    def clean_project_url_variable(self) -> str:
        name = (self.cleaned_data.get("project_url_variable") or "").strip()
        name = name or alembic_project.DEFAULT_URL_VARIABLE
        problem = alembic_project.variable_refusal(name)
        if problem:
            raise forms.ValidationError(problem)
        return name

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        chosen = {"run_mode", "project_python", "project_directory", "script_location"}
        if not self.instance.pk or chosen & set(self.changed_data):
            self._check_run_mode(data)
        self._check_revisions(data)
        if "critical_tables" in data:
            self._check_detection(data)
        return data

    def _check_run_mode(self, data: dict[str, Any]) -> None:
        if data.get("run_mode") != RunMode.PROJECT or "script_location" not in data:
            return
        python = data.get("project_python") or ""
        problem = run_modes.python_refusal(python, here=False)
        if problem:
            self.add_error("project_python", problem)
            return
        probe = ManagedDatabase(
            script_location=data["script_location"],
            run_mode=RunMode.PROJECT,
            project_python=python,
            project_directory=(data.get("project_directory") or "").strip(),
            project_url_variable=data.get("project_url_variable") or "DATABASE_URL",
        )
        problem = run_modes.refusal(probe, here=False)
        if problem:
            self.add_error("project_directory", problem)

    def _forget(self, name: str, shown: str = "") -> None:
        """Show ``shown`` instead of what was typed into ``name``: it may hold a password."""
        data = QueryDict(mutable=True)
        data.update(self.data)
        data[self.add_prefix(name)] = shown
        self.data = data

    def clean_dsn(self) -> str:
        dsn = self.cleaned_data["dsn"].strip()
        try:
            pg.parse_dsn(dsn)
        except pg.BadDsn as exc:
            self._forget("dsn", pg.echo(dsn))
            raise forms.ValidationError(str(exc)) from None
        refusal = credentials.host_refusal(dsn) or _own_database(dsn)
        if refusal:
            raise forms.ValidationError(refusal)
        return dsn

    def clean_password_ref(self) -> str:
        try:
            return credentials.check_reference(self.cleaned_data["password_ref"])
        except SecretError as exc:
            self._forget("password_ref")
            raise forms.ValidationError(str(exc)) from None

    def clean_script_location(self) -> str:
        location = self.cleaned_data["script_location"].strip()
        probe = ManagedDatabase(script_location=location)
        try:
            read_scripts(probe.script_path)
        except NotAnAlembicProject as exc:
            raise forms.ValidationError(str(exc)) from None
        return location


def _own_database(dsn: str) -> str:
    """A refusal when ``dsn`` is Runway's own database: no runbook may ever migrate it."""
    own = settings.DATABASES["default"]
    params = pg.parse_dsn(dsn)
    same_host = params.get("host", "") == (own.get("HOST") or "")
    same_port = (params.get("port") or "5432") == str(own.get("PORT") or "5432")
    if same_host and same_port and params["dbname"] == own.get("NAME"):
        return "That is Runway's own database: it cannot be managed by Runway."
    return ""
