"""The read-only pages over every app: the overview board and the audit trail with its exports.

The audit trail's page lives here, not in ``dashboard.audit``: every app writes to the audit
trail, so the audit app imports none of them, not even ``accounts`` for the role check a page
needs (an import-linter contract in pyproject.toml).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import (
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseBase,
    StreamingHttpResponse,
)
from django.shortcuts import render
from django.utils import timezone
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET

from dashboard.accounts.roles import Request, Role, role_required
from dashboard.audit import csv_export, json_export, reports
from dashboard.audit.forms import AuditFilterForm
from dashboard.overview.board import board

PAGE_SIZE = 50
_NAVIGATION = ("page", "before", "after")


@require_GET
@role_required(Role.VIEWER)
def overview(request: Request) -> HttpResponse:
    return render(request, "overview/overview.html", {"rows": board()})


@require_GET
@role_required(Role.VIEWER)
def audit_events(request: Request) -> HttpResponse:
    form = AuditFilterForm(request.GET or None)
    filters = form.cleaned_data if form.is_bound and form.is_valid() else {}
    page = reports.page_of(
        reports.filtered_events(filters),
        before=_cursor(request, "before"),
        after=_cursor(request, "after"),
        size=PAGE_SIZE,
    )
    query = request.GET.copy()
    for name in _NAVIGATION:
        query.pop(name, None)
    template = "audit/_events.html" if request.htmx else "audit/events.html"
    context = {"form": form, "page": page, "rows": reports.rows(page.events)}
    context["query"] = query.urlencode()
    return render(request, template, context | {"pdf_max": f"{settings.RUNWAY_PDF_MAX_EVENTS:,}"})


@require_GET
@role_required(Role.VIEWER)
def audit_export_csv(request: Request) -> HttpResponseBase:
    filters = _filters(request)
    if isinstance(filters, HttpResponse):
        return filters
    rows = csv_export.stream_csv(filters, reports.chain_head())
    response = StreamingHttpResponse(rows, content_type="text/csv; charset=utf-8")
    return _attachment(response, filters, "csv")


@require_GET
@role_required(Role.VIEWER)
def audit_export_json(request: Request) -> HttpResponseBase:
    filters = _filters(request)
    if isinstance(filters, HttpResponse):
        return filters
    head = reports.chain_head()
    meta = reports.export_meta(filters, generated_by=request.user.get_username(), head=head)
    body = json_export.stream_json(filters, head, meta=meta)
    response = StreamingHttpResponse(body, content_type="application/json")
    return _attachment(response, filters, "json")


@require_GET
@role_required(Role.VIEWER)
def audit_export_pdf(request: Request) -> HttpResponse:
    filters = _filters(request)
    if isinstance(filters, HttpResponse):
        return filters
    context = reports.period_report(filters, generated_by=request.user.get_username())
    pdf = reports.render_pdf("audit/report.html", context)
    return _attachment(HttpResponse(pdf, content_type="application/pdf"), filters, "pdf")


def _filters(request: Request) -> dict[str, Any] | HttpResponse:
    """The cleaned filters, or a 400 naming what is wrong (before anything is sent)."""
    form = AuditFilterForm(request.GET)
    if form.is_valid():
        return form.cleaned_data
    problems = [
        f"{'' if field == '__all__' else field + ': '}{message}"
        for field, messages in form.errors.items()
        for message in messages
    ]
    return HttpResponseBadRequest(
        "Bad audit filter. " + " ".join(problems) + "\n", content_type="text/plain; charset=utf-8"
    )


def _attachment[R: HttpResponseBase](response: R, filters: dict[str, Any], extension: str) -> R:
    period = reports.period_label(filters, timezone.localdate())
    response["Content-Disposition"] = content_disposition_header(
        True, f"runway-audit-{period}.{extension}"
    )
    return response


def _cursor(request: Request, name: str) -> int | None:
    """An event id, or None. ASCII digits only: "²" is a digit to ``str.isdigit`` but not to
    ``int``; under 19 of them, so it fits PostgreSQL's bigint."""
    raw = request.GET.get(name, "")
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 19 else None
