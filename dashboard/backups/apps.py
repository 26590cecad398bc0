from collections.abc import Iterable

from django.apps import AppConfig
from django.urls import reverse


class BackupsConfig(AppConfig):
    name = "dashboard.backups"
    label = "backups"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from dashboard.audit import links
        from dashboard.backups import pipeline, validation  # noqa: F401  (register their job kinds)
        from dashboard.databases.models import ManagedDatabase

        post_save.connect(_schedule_new_database, sender=ManagedDatabase, dispatch_uid="schedules")
        # The audit page links backup, validation and policy events to their pages.
        links.register("backup", _backup_links)
        links.register("validation", _validation_links)
        links.register("backuppolicy", _policy_links)


def _backup_links(ids: list[int]) -> Iterable[tuple[int, str]]:
    from dashboard.backups.models import Backup

    for pk, name in Backup.objects.filter(pk__in=ids).values_list("pk", "database__name"):
        yield pk, reverse("backup-detail", args=[name, pk])


def _validation_links(ids: list[int]) -> Iterable[tuple[int, str]]:
    """A validation is shown on its backup's page."""
    from dashboard.backups.models import Validation

    rows = Validation.objects.filter(pk__in=ids).values_list(
        "pk", "backup__database__name", "backup_id"
    )
    for pk, name, backup_id in rows:
        yield pk, reverse("backup-detail", args=[name, backup_id])


def _policy_links(ids: list[int]) -> Iterable[tuple[int, str]]:
    """A policy is shown on its database's backups page (its edit form is for leads only)."""
    from dashboard.backups.models import BackupPolicy

    for pk, name in BackupPolicy.objects.filter(pk__in=ids).values_list("pk", "database__name"):
        yield pk, reverse("backup-status", args=[name])


def _schedule_new_database(
    sender: object, instance: object, created: bool, **kwargs: object
) -> None:
    """A newly registered database gets its backup and validation schedules at once."""
    if created:
        from dashboard.backups import schedules
        from dashboard.backups.models import BackupPolicy

        # The default policy, unsaved: a policy row exists only once a lead changes it.
        schedules.sync(instance, BackupPolicy(database=instance))  # type: ignore[arg-type, misc]
