from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from django import forms

from dashboard.backups.models import BackupPolicy

# S3 bucket naming rules: 3-63 characters, lower-case letters, digits, dots and hyphens,
# starting and ending with a letter or digit.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
MAX_HOURS = 24 * 366


def check_storage_url(url: str) -> str:
    """``file:///absolute/path`` or ``s3://bucket[/prefix]``, with no credentials in it."""
    url = url.strip()
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:  # "s3://[bucket": an unclosed IPv6 address
        raise forms.ValidationError("This is not a URL Runway can read.") from None
    if parts.scheme not in ("file", "s3"):
        raise forms.ValidationError(
            "Use file:///absolute/path for a local folder or s3://bucket/prefix for S3 "
            "(or leave it empty for the server's default storage)."
        )
    if "@" in parts.netloc or parts.password:
        raise forms.ValidationError(
            "Do not put credentials in the storage URL: S3 keys come from the server's settings."
        )
    if parts.query or parts.fragment:
        raise forms.ValidationError("The storage URL takes no ?query or #fragment.")
    if parts.scheme == "file":
        if parts.netloc or not parts.path.startswith("/"):
            raise forms.ValidationError(
                "A local storage URL needs an absolute path after file:// "
                "(three slashes: file:///var/backups/runway)."
            )
        if "/../" in f"{parts.path}/":
            raise forms.ValidationError("The storage path may not contain '..'.")
    elif not _BUCKET.match(parts.netloc):
        raise forms.ValidationError(
            "Not a valid S3 bucket name: %(bucket)s (3-63 lower-case letters, digits, dots "
            "or hyphens).",
            params={"bucket": parts.netloc or "(none)"},
        )
    return url


class BackupPolicyForm(forms.ModelForm):
    retention_days = forms.IntegerField(
        min_value=1,
        max_value=3650,
        help_text="Delete backups older than this (the newest validated backup is always kept)",
        error_messages={"min_value": "Keep backups for at least 1 day."},
    )
    rpo_hours = forms.IntegerField(
        label="RPO (hours)",
        min_value=1,
        max_value=MAX_HOURS,
        help_text="The newest backup may be at most this old for the policy to be met",
        error_messages={"min_value": "The RPO must be at least 1 hour."},
    )
    backup_every_hours = forms.IntegerField(
        min_value=0,
        max_value=MAX_HOURS,
        help_text="Scheduled backups run this often; 0 turns them off",
        error_messages={"min_value": "Use 0 to turn scheduled backups off, not a negative."},
    )
    validate_every_hours = forms.IntegerField(
        min_value=0,
        max_value=MAX_HOURS,
        help_text="Scheduled validation of the newest backup runs this often; 0 turns it off",
        error_messages={"min_value": "Use 0 to turn scheduled validation off, not a negative."},
    )

    class Meta:
        model = BackupPolicy
        fields = [
            "retention_days",
            "rpo_hours",
            "backup_every_hours",
            "validate_every_hours",
            "storage_url",
        ]

    def clean_storage_url(self) -> str:
        return check_storage_url(self.cleaned_data["storage_url"])

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        every, rpo = data.get("backup_every_hours"), data.get("rpo_hours")
        if every and rpo and every > rpo:
            self.add_error(
                "backup_every_hours",
                f"Backing up every {every} hours cannot meet an RPO of {rpo} hours: "
                "back up at least as often as the RPO.",
            )
        return data
