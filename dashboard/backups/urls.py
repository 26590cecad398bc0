from django.urls import path

from dashboard.backups import views

urlpatterns = [
    path("<slug:name>/backups/", views.status, name="backup-status"),
    path("<slug:name>/backups/run/", views.back_up, name="backup-run"),
    path("<slug:name>/backups/policy/", views.edit_policy, name="backup-policy"),
    path("<slug:name>/backups/<int:backup_id>/", views.detail, name="backup-detail"),
    path("<slug:name>/backups/<int:backup_id>/validate/", views.validate, name="backup-validate"),
]
