from django.urls import path

from dashboard.triggers import views

urlpatterns = [
    path("databases/<slug:name>/triggers/", views.triggers, name="triggers"),
    path("databases/<slug:name>/triggers/<int:rule_id>/", views.edit_rule, name="triggers-edit"),
]
