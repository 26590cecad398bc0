from django.urls import path

from dashboard.schema import views

urlpatterns = [path("<slug:name>/history/", views.history, name="schema-history")]
