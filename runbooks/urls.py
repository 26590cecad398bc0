from django.urls import path

from runbooks import reports, views

urlpatterns = [
    path("runs/", views.runs, name="runs"),
    path("runs/new/", views.start, name="run-start"),
    path("databases/<slug:name>/runs/<int:run_id>/", views.detail, name="run-detail"),
    path("databases/<slug:name>/runs/<int:run_id>/abort/", views.abort, name="run-abort"),
    path("databases/<slug:name>/runs/<int:run_id>/review/", views.review_page, name="run-review"),
    path("databases/<slug:name>/runs/<int:run_id>/deploy/", views.deploy, name="run-deploy"),
    path("databases/<slug:name>/runs/<int:run_id>/amend/", views.amend, name="run-amend"),
    path(
        "databases/<slug:name>/runs/<int:run_id>/request-review/",
        views.request_review,
        name="run-request-review",
    ),
    path("databases/<slug:name>/runs/<int:run_id>/comment/", views.comment, name="run-comment"),
    path(
        "databases/<slug:name>/runs/<int:run_id>/cancel-rollback/",
        views.cancel_rollback,
        name="run-cancel-rollback",
    ),
    path(
        "databases/<slug:name>/runs/<int:run_id>/steps/<slug:step_id>/tick/",
        views.tick,
        name="run-tick",
    ),
    path(
        "databases/<slug:name>/runs/<int:run_id>/steps/<slug:step_id>/retry/",
        views.retry,
        name="run-retry",
    ),
    path(
        "databases/<slug:name>/runs/<int:run_id>/steps/<slug:step_id>/abort/",
        views.abort_step,
        name="run-step-abort",
    ),
    path(
        "databases/<slug:name>/runs/<int:run_id>/steps/<slug:step_id>/decide/",
        views.decide,
        name="run-decide",
    ),
    path(
        "databases/<slug:name>/runs/<int:run_id>/report.<str:fmt>",
        reports.run_report,
        name="run-report",
    ),
]
