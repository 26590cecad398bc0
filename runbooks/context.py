"""The navigation's inbox count: how many runs wait for the person looking (runbooks.inbox).
Lazy: counted only when a page shows it, once per request."""

from collections.abc import Callable

from django.http import HttpRequest

from runbooks import inbox


def inbox_count(request: HttpRequest) -> dict[str, Callable[[], int]]:
    return {"inbox_count": lambda: len(inbox.for_request(request))}
