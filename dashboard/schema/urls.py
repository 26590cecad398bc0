from django.urls import path

from dashboard.schema import views

urlpatterns = [
    path("<slug:name>/history/", views.history, name="schema-history"),
    path("<slug:name>/revisions/<str:rev>/", views.revision, name="schema-revision"),
    path("<slug:name>/revisions/<str:rev>/accept/", views.accept_finding, name="schema-accept"),
    path("<slug:name>/preflight/", views.preflight, name="schema-preflight"),
    path("<slug:name>/preflight/gates/", views.run_gates, name="schema-run-gates"),
    path("<slug:name>/preflight/gates/<int:run_id>/", views.gate_run, name="schema-gate-run"),
    path("<slug:name>/preflight/rehearse/", views.rehearse, name="schema-rehearse"),
    path(
        "<slug:name>/preflight/rehearsals/<int:rehearsal_id>/",
        views.rehearsal_detail,
        name="schema-rehearsal",
    ),
]
