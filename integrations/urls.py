from django.urls import path

from integrations import webhooks

app_name = "integrations"

urlpatterns = [
    path(
        "integrations/<uuid:integration_id>/webhook/<str:secret>/",
        webhooks.crm_webhook,
        name="webhook",
    ),
]
