from django.apps import AppConfig


class DatabasesConfig(AppConfig):
    name = "dashboard.databases"
    label = "databases"
