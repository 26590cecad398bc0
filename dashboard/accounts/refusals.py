"""Runway's refusals: the 400, 403, 404, 500 and CSRF-failure answers, in the layout.

A refusal says why, in words a team lead reads at a glance, and keeps the navigation so that
the next click is one away. An ordinary refusal is not an error: it logs one line, never a
traceback. An htmx request (``HX-Request: true``) gets the small fragment ``_refusal.html`` with
the same status, never a whole page to swap into a panel (htmx swaps no 4xx/5xx answer unless
a page opts in with ``responseHandling``; then it shows the reason).

The handlers live beside the roles because the commonest refusal names the role an action needs
and the role the user holds; ``dashboard/urls.py`` points Django's ``handler400``...``handler500``
here and ``CSRF_FAILURE_VIEW`` at :func:`csrf_failure`.
"""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseServerError
from django.shortcuts import render
from django.template import loader
from django.urls import Resolver404
from django.utils.log import log_response

from dashboard.accounts.roles import Role, role_of

log = logging.getLogger("dashboard.refusals")

_ARTICLE = {Role.VIEWER: "a", Role.ENGINEER: "an", Role.LEAD: "a", Role.ADMIN: "an"}
_FALLBACK_500 = (
    "<!doctype html><title>Server error · Runway</title>"
    "<h1>Something went wrong on our side</h1>"
    "<p>Runway could not finish this request. Try again in a moment.</p>"
)


def is_htmx(request: HttpRequest) -> bool:
    """Read the header itself: a refusal may answer before django-htmx's middleware ran."""
    return request.headers.get("HX-Request") == "true"


def refuse(
    request: HttpRequest, status: int, title: str, reason: str, hint: str = ""
) -> HttpResponse:
    """The page ``<status>.html`` in the layout, or the fragment for htmx; nothing logged."""
    template = "_refusal.html" if is_htmx(request) else f"{status}.html"
    context = {"status": status, "title": title, "reason": reason, "hint": hint}
    return render(request, template, context, status=status)


def role_refusal(request: HttpRequest, needed: Role) -> HttpResponse:
    """The 403 of ``role_required``: which role is needed and which one the user holds."""
    held = role_of(request.user)
    if held is None:
        you = "you have no role yet; an admin gives roles"
    else:
        you = f"you are {_ARTICLE[held]} {held.label}"
    response = refuse(
        request,
        403,
        "Not allowed with your role",
        f"This needs the {needed.label} role; {you}.",
        hint=f"Nothing was changed. If your work needs it, ask an admin for the {needed.label} "
        "role.",
    )
    log_response(
        "Refused %s %s to %s: needs the %s role, holds %s",
        request.method,
        request.path,
        request.user.get_username(),
        needed.label,
        held.label if held else "none",
        response=response,
        request=request,
        logger=log,
        level="warning",
    )
    return response


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    reason = "Runway could not read this request. Check the address or the form and try again."
    return refuse(request, 400, "Bad request", reason)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler403: a PermissionDenied raised inside a view, with that view's own message."""
    message = str(exception) if isinstance(exception, PermissionDenied) else ""
    return refuse(request, 403, "Not allowed", message or "You may not do this.")


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler404. A view's own ``Http404("No revision ...")`` message is shown; the resolver's
    (the URL patterns it tried) never is."""
    reason = "There is nothing at this address. It may have been mistyped, or the thing is gone."
    if isinstance(exception, Http404) and not isinstance(exception, Resolver404):
        message = exception.args[0] if exception.args else ""
        if isinstance(message, str) and message and not message.endswith("the given query."):
            reason = message
    return refuse(request, 404, "Not found", reason)


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: rendered without the request or the database, which may be what failed."""
    try:
        body = loader.get_template("500.html").render()
    except Exception:  # the page of last resort must not fail in turn
        log.exception("The 500 page itself failed to render")
        body = _FALLBACK_500
    return HttpResponseServerError(body)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: in practice, a form left open past its session or a stale tab.
    Django's CSRF middleware logs the refusal (one line, with the reason) itself."""
    return refuse(
        request,
        403,
        "This form expired",
        "The page was open too long, or you logged in or out in another tab. "
        "Reload the page and submit the form again.",
    )
