"""Approval policies, edited by admins (Admin → Approval policies); every change audited, since
a change lowers or raises what a production deployment needs."""

from typing import Any

from django.contrib import admin
from django.db import transaction
from django.http import HttpRequest

from dashboard.audit.chain import record
from runbooks.models import ApprovalPolicy


def _details(policy: ApprovalPolicy) -> dict[str, Any]:
    return {
        "environment": policy.environment,
        "grade": policy.grade,
        "approvals": policy.approvals,
        "staging_first": policy.staging_first,
    }


@admin.register(ApprovalPolicy)
class ApprovalPolicyAdmin(admin.ModelAdmin):
    list_display = ["environment", "grade", "approvals", "staging_first"]
    list_filter = ["environment"]

    def save_model(
        self, request: HttpRequest, obj: ApprovalPolicy, form: Any, change: bool
    ) -> None:
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            action = "approval_policy.changed" if change else "approval_policy.created"
            record(request.user, action, obj, details=_details(obj))

    def delete_model(self, request: HttpRequest, obj: ApprovalPolicy) -> None:
        with transaction.atomic():
            record(request.user, "approval_policy.deleted", obj, details=_details(obj))
            super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for policy in queryset:
            self.delete_model(request, policy)
