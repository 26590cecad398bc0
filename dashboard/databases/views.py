from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from dashboard.accounts.roles import Role, role_required
from dashboard.databases import checks, registry
from dashboard.databases.forms import ManagedDatabaseForm
from dashboard.databases.models import ManagedDatabase


@require_GET
@role_required(Role.VIEWER)
def detail(request: HttpRequest, name: str) -> HttpResponse:
    db = get_object_or_404(ManagedDatabase.objects.select_related("partner"), name=name)
    return render(request, "databases/detail.html", {"db": db, "check": db.latest_check()})


@require_http_methods(["GET", "POST"])
@role_required(Role.ENGINEER)
def register(request: HttpRequest) -> HttpResponse:
    form = ManagedDatabaseForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        db = registry.register(request.user, form.save(commit=False))
        checks.request_check(request.user, db)
        messages.success(request, f"Registered {db.name}; testing its connection now.")
        return redirect(db)
    return render(request, "databases/form.html", {"form": form, "db": None})


@require_http_methods(["GET", "POST"])
@role_required(Role.ENGINEER)
def edit(request: HttpRequest, name: str) -> HttpResponse:
    db = get_object_or_404(ManagedDatabase, name=name)
    form = ManagedDatabaseForm(request.POST or None, instance=db)
    if request.method == "POST" and form.is_valid():
        db = registry.update(request.user, form.save(commit=False))
        messages.success(request, f"Saved {db.name}.")
        return redirect(db)
    return render(request, "databases/form.html", {"form": form, "db": db})


@require_POST
@role_required(Role.ENGINEER)
def test_connection(request: HttpRequest, name: str) -> HttpResponse:
    db = get_object_or_404(ManagedDatabase, name=name)
    check = checks.request_check(request.user, db)
    if request.htmx:
        return render(request, "databases/_check.html", {"db": db, "check": check})
    return redirect(db)


@require_GET
@role_required(Role.VIEWER)
def check_status(request: HttpRequest, name: str, check_id: int) -> HttpResponse:
    db = get_object_or_404(ManagedDatabase, name=name)
    check = get_object_or_404(db.checks, pk=check_id)
    response = render(request, "databases/_check.html", {"db": db, "check": check})
    if check.is_done and request.htmx:
        response.status_code = HttpResponseStopPolling.status_code
    return response
