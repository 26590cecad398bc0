from django.urls import path

from dashboard.overview import views

urlpatterns = [
    path("", views.overview, name="overview"),
    path("audit/", views.audit_events, name="audit-events"),
    path("audit/export.csv", views.audit_export_csv, name="audit-export-csv"),
    path("audit/export.json", views.audit_export_json, name="audit-export-json"),
    path("audit/export.pdf", views.audit_export_pdf, name="audit-export-pdf"),
]
