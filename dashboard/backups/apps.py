from django.apps import AppConfig


class BackupsConfig(AppConfig):
    name = "dashboard.backups"
    label = "backups"

    def ready(self) -> None:
        from django.db.models.signals import post_save

        from dashboard.audit import links
        from dashboard.backups import pipeline, validation  # noqa: F401  (register their job kinds)
        from dashboard.backups.models import Backup, BackupPolicy, Validation
        from dashboard.databases.models import ManagedDatabase

        post_save.connect(_schedule_new_database, sender=ManagedDatabase, dispatch_uid="schedules")
        # The audit page links backup, validation and policy events to their pages.
        links.register_page("backup", Backup, "backup-detail", "database__name", "pk")
        # A validation is shown on its backup's page.
        links.register_page(
            "validation", Validation, "backup-detail", "backup__database__name", "backup_id"
        )
        # A policy on its database's backups page (its edit form is for leads only).
        links.register_page("backuppolicy", BackupPolicy, "backup-status", "database__name")


def _schedule_new_database(
    sender: object, instance: object, created: bool, **kwargs: object
) -> None:
    """A newly registered database gets its backup and validation schedules at once."""
    if created:
        from dashboard.backups import schedules
        from dashboard.backups.models import BackupPolicy

        # The default policy, unsaved: a policy row exists only once a lead changes it.
        schedules.sync(instance, BackupPolicy(database=instance))  # type: ignore[arg-type, misc]
