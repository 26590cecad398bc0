"""Log-ins and log-outs land in the audit trail too."""

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from dashboard.audit.chain import record


@receiver(user_logged_in)
def on_login(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    record(user, "user.logged_in", user)


@receiver(user_logged_out)
def on_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is not None:
        record(user, "user.logged_out", user)


@receiver(user_login_failed)
def on_login_failed(
    sender: Any, credentials: dict[str, Any], request: Any = None, **kw: Any
) -> None:
    # Only the user name: never the password that was tried.
    record(
        None,
        "user.login_failed",
        object_type="user",
        details={"username": str(credentials.get("username", ""))[:150]},
    )
