from __future__ import annotations

from django.db import models


class AuditEvent(models.Model):
    """One act: who did what to which object, when. Append-only and chained by sha256.

    The actor is kept as an id and a name, not a foreign key: deleting a user must not touch
    (and so could not touch) the events that name them.
    """

    id = models.BigAutoField(primary_key=True)
    created_at = models.DateTimeField()
    actor_id = models.BigIntegerField(null=True, blank=True)
    actor_name = models.CharField(max_length=150)
    action = models.CharField(max_length=80, db_index=True)
    object_type = models.CharField(max_length=80, db_index=True)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=300, blank=True)
    details = models.JSONField(default=dict)
    # The details exactly as the hash covers them (``chain.canonical_details``: sorted keys, no
    # spaces, the numbers as jsonb gives them back), written once when the event is recorded.
    # The JSON export writes these bytes as they are; ``chain.verify`` checks they still match
    # ``details``.
    details_json = models.TextField(editable=False)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["object_type", "object_id"], name="audit_audit_object__idx"),
            # Period reports and the page's date filter.
            models.Index(fields=["created_at"], name="audit_created_at_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.actor_name} {self.action} {self.object_type}:{self.object_id}"
