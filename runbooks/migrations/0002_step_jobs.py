"""An action step's work becomes a job row per attempt (StepJob, the run_step kind of the one
job lifecycle); the step keeps its place in the run (locked, open, waiting, started, done,
failed).

Forwards, each action step that ran (or was queued) gets one job: its log, verdict, summary and
evidence move there. A step that was running is started with a running job (the reaper ends it
if its worker is gone); one that was queued can never be taken (its message named a task that is
gone), so its job is interrupted and the step failed, to be retried. Backwards, each step takes
back its newest job's fields."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models

BAD = ("failed", "interrupted", "cancelled")


def to_jobs(apps, schema_editor):
    StepRun = apps.get_model("runbooks", "StepRun")
    StepJob = apps.get_model("runbooks", "StepJob")
    now = django.utils.timezone.now()
    for step in StepRun.objects.filter(kind="action").select_related("run").iterator():
        ran = step.state in ("queued", "running", "done", "failed")
        if not (ran or step.output or step.verdict or step.attempts):
            continue
        job = StepJob(
            step=step,
            attempt=max(step.attempts, 1),
            created_at=step.started_at or step.run.started_at,
            verdict=step.verdict,
            summary=step.summary,
            output=step.output,
            evidence=step.evidence,
            started_at=step.started_at,
            heartbeat_at=step.heartbeat_at,
            finished_at=step.finished_at,
            attempts=1 if step.started_at else 0,
        )
        if step.state == "running":
            job.state = "running"
            step.state = "started"
        elif step.state == "queued":
            job.state, job.finished_at = "interrupted", now
            job.error = "Interrupted: queued when step jobs were introduced; retry it."
            job.created_at = now
            step.state, step.finished_at = "failed", now
            step.summary = "Queued before an upgrade, never taken: retry it."
        elif step.summary.startswith("The worker died mid-step"):
            job.state, job.error = "interrupted", step.summary
        elif step.summary.startswith("The action crashed"):
            job.state, job.error = "failed", step.summary
        else:
            job.state = "succeeded"  # the action ran and said what it found (pass, warn, fail)
        job.save()
        step.save(update_fields=["state", "summary", "finished_at"])


def to_steps(apps, schema_editor):
    StepRun = apps.get_model("runbooks", "StepRun")
    StepJob = apps.get_model("runbooks", "StepJob")
    for step in StepRun.objects.filter(kind="action").iterator():
        job = StepJob.objects.filter(step=step).order_by("-attempt").first()
        if job is None:
            continue
        step.verdict = job.verdict or ("fail" if job.state in BAD else "")
        step.summary = step.summary or job.summary or job.error
        step.output, step.evidence = job.output, job.evidence
        step.heartbeat_at, step.attempts = job.heartbeat_at, job.attempt
        if step.state == "started":
            step.state = job.state if job.state in ("queued", "running") else "failed"
        step.save()


class Migration(migrations.Migration):
    dependencies = [
        ("runbooks", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="StepJob",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "state",
                    models.CharField(
                        choices=[
                            ("queued", "Queued"),
                            ("running", "Running"),
                            ("succeeded", "Succeeded"),
                            ("failed", "Failed"),
                            ("interrupted", "Interrupted"),
                            ("cancelled", "Cancelled"),
                        ],
                        default="queued",
                        max_length=12,
                    ),
                ),
                ("started_at", models.DateTimeField(blank=True, null=True)),
                ("heartbeat_at", models.DateTimeField(blank=True, null=True)),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
                ("attempts", models.PositiveIntegerField(default=0)),
                ("error", models.TextField(blank=True)),
                (
                    "worker",
                    models.CharField(blank=True, help_text="host:pid that ran it", max_length=200),
                ),
                ("cancel_requested_at", models.DateTimeField(blank=True, null=True)),
                (
                    "attempt",
                    models.PositiveIntegerField(
                        help_text="1 for the step's first job, 2 after a retry"
                    ),
                ),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("verdict", models.CharField(blank=True, max_length=4)),
                ("summary", models.TextField(blank=True, help_text="The action's own summary")),
                ("output", models.TextField(blank=True, help_text="The action's live log")),
                ("evidence", models.JSONField(blank=True, default=dict)),
                (
                    "step",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="jobs",
                        to="runbooks.steprun",
                    ),
                ),
            ],
            options={
                "ordering": ["step", "attempt"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("step", "attempt"), name="one_job_per_step_attempt"
                    ),
                    models.UniqueConstraint(
                        condition=models.Q(("state__in", ["queued", "running"])),
                        fields=("step",),
                        name="one_active_job_per_step",
                    ),
                ],
            },
        ),
        migrations.AlterField(
            model_name="steprun",
            name="state",
            field=models.CharField(
                choices=[
                    ("locked", "Locked"),
                    ("open", "Open"),
                    ("waiting", "Waiting"),
                    ("started", "Started"),
                    ("done", "Done"),
                    ("failed", "Failed"),
                ],
                default="locked",
                max_length=10,
            ),
        ),
        migrations.AlterField(
            model_name="steprun",
            name="summary",
            field=models.TextField(blank=True, help_text="The step's last word: result or reason"),
        ),
        migrations.RunPython(to_jobs, to_steps),
        migrations.RemoveField(model_name="steprun", name="attempts"),
        migrations.RemoveField(model_name="steprun", name="evidence"),
        migrations.RemoveField(model_name="steprun", name="heartbeat_at"),
        migrations.RemoveField(model_name="steprun", name="output"),
        migrations.RemoveField(model_name="steprun", name="verdict"),
    ]
