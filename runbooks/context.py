"""The navigation's inbox count: how many runs wait for the person looking (runbooks.inbox).
Lazy: counted only when a page shows it."""

from collections.abc import Callable

from django.http import HttpRequest

from runbooks import inbox


def inbox_count(request: HttpRequest) -> dict[str, Callable[[], int]]:
    user = getattr(request, "user", None)

    def count() -> int:
        if user is None or not user.is_authenticated:
            return 0
        return len(inbox.waiting_for(user))

    return {"inbox_count": count}
