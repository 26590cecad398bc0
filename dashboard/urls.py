from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("dashboard.overview.urls")),
    path("accounts/", include("dashboard.accounts.urls")),
    path("databases/", include("dashboard.databases.urls")),
    path("databases/", include("dashboard.schema.urls")),
    path("databases/", include("dashboard.backups.urls")),
    path("audit/", include("dashboard.audit.urls")),
    path("", include("runbooks.urls")),
    path("admin/", admin.site.urls),
]
