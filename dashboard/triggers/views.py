from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from dashboard.accounts.refusals import role_refusal
from dashboard.accounts.roles import Request, Role, role_required
from dashboard.databases.models import ManagedDatabase
from dashboard.triggers import page, rules
from dashboard.triggers.forms import RuleForm
from dashboard.triggers.models import Rule


@require_GET
@role_required(Role.VIEWER)
def triggers(request: Request, name: str) -> HttpResponse:
    db = get_object_or_404(ManagedDatabase, name=name)
    return render(request, "triggers/page.html", page.context(db, request.user))


@require_POST
@role_required(Role.VIEWER)
def edit_rule(request: Request, name: str, rule_id: int) -> HttpResponse:
    """Change one rule: an engineer on a staging database, a lead on production (the refusal
    names the role this database needs)."""
    db = get_object_or_404(ManagedDatabase, name=name)
    rule = get_object_or_404(Rule, pk=rule_id, database=db)
    if not rules.may_change(request.user, db):
        return role_refusal(request, rules.change_role(db))
    form = RuleForm(request.POST, rule=rule)
    if not form.is_valid():
        context = page.context(db, request.user, invalid=form)
        return render(request, "triggers/page.html", context, status=400)
    rules.update(request.user, rule, form.values())
    messages.success(request, f"Saved: {rule.name}.")
    return redirect("triggers", name=db.name)
