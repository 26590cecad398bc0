from django.urls import path

from dashboard.notify import views

urlpatterns = [
    path("notifications/", views.preferences, name="notify-preferences"),
    path("notifications/channels/", views.global_channels, name="notify-global-channels"),
    path(
        "notifications/channels/<int:channel_id>/remove/",
        views.remove_channel,
        name="notify-channel-remove",
    ),
    path(
        "notifications/channels/<int:channel_id>/test/",
        views.try_channel,
        name="notify-channel-test",
    ),
    path(
        "databases/<slug:name>/notifications/",
        views.database_channels,
        name="notify-channels",
    ),
]
