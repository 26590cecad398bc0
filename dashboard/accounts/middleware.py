"""A safety net: 400 for any request whose path, query string or form fields hold a NUL.

PostgreSQL cannot store or compare a string that holds a NUL character; psycopg refuses to send
one (a DataError, so a 500). Django's form fields already refuse NUL and the views validate what
they read, but a view that reads ``request.GET`` directly and forgets to would fail, so this
answers first with the layout's 400 page (the htmx fragment for htmx). It is a net under the
views, not their validation: fix the view too.

It lives in ``accounts`` beside the other refusals (``lib`` imports no app, and the 400 page
needs the role-aware navigation). Place it last in MIDDLEWARE: the 400 page then has the session,
the user and ``request.htmx``.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, QueryDict

from dashboard.accounts.refusals import refuse

NUL = "\x00"
_FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


def _holds_nul(fields: QueryDict) -> bool:
    return any(NUL in key or any(NUL in v for v in values) for key, values in fields.lists())


def holds_nul(request: HttpRequest) -> bool:
    if NUL in request.path or _holds_nul(request.GET):
        return True
    return request.method == "POST" and request.content_type in _FORMS and _holds_nul(request.POST)


def refuse_nul_characters(
    get_response: Callable[[HttpRequest], HttpResponse],
) -> Callable[[HttpRequest], HttpResponse]:
    def middleware(request: HttpRequest) -> HttpResponse:
        if holds_nul(request):
            return refuse(
                request,
                400,
                "Bad request",
                "This address or form holds a NUL character (%00), which Runway never accepts.",
            )
        return get_response(request)

    return middleware
