from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "dashboard.accounts"
    label = "accounts"

    def ready(self) -> None:
        from dashboard import checks  # noqa: F401  (registers the start-up security checks)
        from dashboard.accounts import signals  # noqa: F401
