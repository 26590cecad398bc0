from django.apps import AppConfig


class BackupsConfig(AppConfig):
    name = "dashboard.backups"
    label = "backups"
