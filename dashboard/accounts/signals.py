"""Log-ins and log-outs land in the audit trail too. Failed log-ins are audited by the throttling
handler (accounts/throttling.py): once per lockout window, never once per guess."""

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out
from django.dispatch import receiver

from dashboard.audit.chain import record


@receiver(user_logged_in)
def on_login(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    record(user, "user.logged_in", user)


@receiver(user_logged_out)
def on_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is not None:
        record(user, "user.logged_out", user)
