"""Rollback triggers (see rules.py and watch.py): each database's rules over signals, the watches
that follow a deployment from its execution through the post-deployment window, what each rule
measured and when it fired."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from dashboard.databases.models import ManagedDatabase
from dashboard.schema.models import DataSnapshot


class Signal(models.TextChoices):
    EXECUTION_TIME = "execution_time", "Execution time"
    REHEARSAL_RATIO = "rehearsal_ratio", "Execution time against the rehearsal"
    DATA_LOSS = "data_loss", "Data loss"
    HEALTH = "health", "Health-check failure rate"
    PERFORMANCE = "performance", "Database performance"
    CUSTOM_SQL = "custom_sql", "Custom SQL signal"
    CUSTOM_HTTP = "custom_http", "Custom HTTP signal"


class Action(models.TextChoices):
    ALERT = "alert", "Alert"
    ROLLBACK = "rollback", "Roll back"


class Rule(models.Model):
    """One rule: when ``signal`` goes over ``threshold`` (in the signal's unit) over ``window``
    seconds, do ``action``."""

    database = models.ForeignKey(
        ManagedDatabase, on_delete=models.CASCADE, related_name="trigger_rules"
    )
    signal = models.CharField(max_length=20, choices=Signal.choices)
    name = models.CharField(max_length=100)
    enabled = models.BooleanField(default=True)
    threshold = models.FloatField()
    window_seconds = models.PositiveIntegerField(default=60)
    action = models.CharField(max_length=10, choices=Action.choices, default=Action.ALERT)
    grace_seconds = models.PositiveIntegerField(default=0)
    # health/custom_http: {"url": ...}; performance: {"query": ...}; custom_sql: {"query": ...}
    config = models.JSONField(default=dict, blank=True)
    changed_at = models.DateTimeField(default=timezone.now)
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["database", "pk"]

    def __str__(self) -> str:
        return f"{self.database.name}: {self.name}"


class Watch(models.Model):
    """A deployment followed by the rules: from the start of its execution until ``until`` (the
    post-deployment window), or until it was rolled back."""

    class State(models.TextChoices):
        ACTIVE = "active", "Watching"
        ENDED = "ended", "Ended"

    database = models.ForeignKey(ManagedDatabase, on_delete=models.CASCADE, related_name="watches")
    run_id = models.PositiveIntegerField()  # runbooks.Run; a domain app names it by id only
    run_url = models.CharField(max_length=300, blank=True)
    revisions = models.JSONField(default=list, blank=True)
    snapshot = models.ForeignKey(
        DataSnapshot, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    rehearsed_seconds = models.FloatField(null=True, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    executed_at = models.DateTimeField(null=True, blank=True)  # execution ended
    until = models.DateTimeField(null=True, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.ACTIVE)
    ended_reason = models.CharField(max_length=300, blank=True)
    baseline = models.JSONField(default=dict, blank=True)  # per rule id: what "before" was
    looked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"watch of run #{self.run_id} on {self.database.name}"


class Sample(models.Model):
    rule = models.ForeignKey(Rule, on_delete=models.CASCADE, related_name="samples")
    watch = models.ForeignKey(Watch, on_delete=models.CASCADE, related_name="samples")
    at = models.DateTimeField(default=timezone.now)
    value = models.FloatField(null=True, blank=True)  # None: could not be measured
    note = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["at"]
        indexes = [models.Index(fields=["rule", "at"])]

    def __str__(self) -> str:
        return f"{self.rule.name} at {self.at:%H:%M:%S}: {self.value}"


class Firing(models.Model):
    rule = models.ForeignKey(Rule, on_delete=models.CASCADE, related_name="firings")
    watch = models.ForeignKey(Watch, on_delete=models.CASCADE, related_name="firings")
    at = models.DateTimeField(default=timezone.now)
    value = models.FloatField()
    threshold = models.FloatField()
    action = models.CharField(max_length=10, choices=Action.choices)
    evidence = models.JSONField(default=dict, blank=True)
    rollback_run_id = models.PositiveIntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-at"]
        constraints = [
            models.UniqueConstraint(fields=["rule", "watch"], name="one_firing_per_rule_and_watch")
        ]

    def __str__(self) -> str:
        return f"{self.rule.name} fired at {self.at:%Y-%m-%d %H:%M:%S}"
