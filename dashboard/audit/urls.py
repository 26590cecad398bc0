from django.urls import path

from dashboard.audit import views

urlpatterns = [path("", views.events, name="audit-events")]
