from django.apps import AppConfig


class NotifyConfig(AppConfig):
    name = "dashboard.notify"
    label = "notify"
    verbose_name = "Notifications"

    def ready(self) -> None:
        from dashboard.notify import delivery  # noqa: F401  (registers the notification job kind)
