from django.apps import AppConfig


class SchemaConfig(AppConfig):
    name = "dashboard.schema"
    label = "schema"
