from django.urls import path

from dashboard.databases import views

urlpatterns = [
    path("new/", views.register, name="database-register"),
    path("<slug:name>/", views.detail, name="database-detail"),
    path("<slug:name>/edit/", views.edit, name="database-edit"),
    path("<slug:name>/test-connection/", views.test_connection, name="database-test"),
    path("<slug:name>/confirm-secret/", views.confirm_secret, name="database-confirm-secret"),
    path("<slug:name>/checks/<int:check_id>/", views.check_status, name="database-check"),
]
