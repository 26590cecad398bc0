from django.urls import path

from dashboard.audit import views

urlpatterns = [
    path("", views.events, name="audit-events"),
    path("export.csv", views.export_csv, name="audit-export-csv"),
    path("export.json", views.export_json, name="audit-export-json"),
    path("export.pdf", views.export_pdf, name="audit-export-pdf"),
]
