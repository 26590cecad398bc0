from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("dashboard.overview.urls")),
    path("accounts/", include("dashboard.accounts.urls")),
    path("databases/", include("dashboard.databases.urls")),
    path("databases/", include("dashboard.schema.urls")),
    path("databases/", include("dashboard.backups.urls")),
    path("", include("dashboard.notify.urls")),
    path("", include("dashboard.triggers.urls")),
    path("", include("runbooks.urls")),
    path("admin/", admin.site.urls),
]

# Refusals in the layout (dashboard/accounts/refusals.py); the 404 never lists URLs.
handler400 = "dashboard.accounts.refusals.bad_request"
handler403 = "dashboard.accounts.refusals.permission_denied"
handler404 = "dashboard.accounts.refusals.page_not_found"
handler500 = "dashboard.accounts.refusals.server_error"
