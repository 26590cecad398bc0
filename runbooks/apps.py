from django.apps import AppConfig


class RunbooksConfig(AppConfig):
    name = "runbooks"
    label = "runbooks"
    verbose_name = "Runbooks"
