from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from dashboard.accounts.roles import Role, role_required
from dashboard.audit.forms import AuditFilterForm
from dashboard.audit.models import AuditEvent

PAGE_SIZE = 50


@require_GET
@role_required(Role.VIEWER)
def events(request: HttpRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET or None)
    found = AuditEvent.objects.all()
    if form.is_bound and form.is_valid():
        found = form.filter(found)
    page = Paginator(found, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    template = "audit/_events.html" if request.htmx else "audit/events.html"
    return render(request, template, {"form": form, "page": page, "query": query.urlencode()})
