from django.urls import path

from notifications import api, webhooks

urlpatterns = [
    path("me/devices/", api.DevicesView.as_view(), name="devices"),
    path("me/devices/<str:token>/", api.DeviceView.as_view(), name="device"),
    path("me/notification-preferences/", api.PreferencesView.as_view(), name="notification-preferences"),
    path("notifications/smsru/callback/", webhooks.smsru_callback, name="smsru-callback"),
]
