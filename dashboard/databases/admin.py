from django.contrib import admin

from dashboard.databases import registry
from dashboard.databases.forms import ManagedDatabaseForm
from dashboard.databases.models import ConnectionCheck, ManagedDatabase


class AdminDatabaseForm(ManagedDatabaseForm):
    """What engineers edit, plus the disk probe: a command the workers run, so admins only."""

    class Meta(ManagedDatabaseForm.Meta):
        fields = [*ManagedDatabaseForm.Meta.fields, "disk_probe"]


@admin.register(ManagedDatabase)
class ManagedDatabaseAdmin(admin.ModelAdmin):
    form = AdminDatabaseForm
    list_display = ["name", "environment", "dsn", "script_location"]
    list_filter = ["environment"]
    search_fields = ["name", "dsn"]

    def save_model(self, request, obj, form, change):  # type: ignore[no-untyped-def]
        (registry.update if change else registry.register)(request.user, obj)

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False


@admin.register(ConnectionCheck)
class ConnectionCheckAdmin(admin.ModelAdmin):
    list_display = ["database", "state", "problem", "requested_at", "finished_at"]
    list_filter = ["state", "problem"]
    readonly_fields = [f.name for f in ConnectionCheck._meta.fields]

    def has_add_permission(self, request):  # type: ignore[no-untyped-def]
        return False
