from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from notifications.webhooks import SendGridTrackingView
from svoykrug import health

admin.site.site_header = "Svoy Krug"
admin.site.site_title = "Svoy Krug admin"
admin.site.index_title = "Operations"

urlpatterns = [
    path("", RedirectView.as_view(url="/portal/", permanent=False)),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("portal/", include("svoykrug.portal_urls")),
    path("api/v1/", include("accounts.urls")),
    path("api/v1/", include("loyalty.urls")),
    path("api/v1/", include("crosspromo.urls")),
    path("api/v1/", include("notifications.urls")),
    path("api/v1/", include("integrations.urls")),
    path("api/v1/", include("events.urls")),
    # Email delivery events from the ESP: SendGrid posts to /anymail/sendgrid/tracking/ (anymail's
    # view, answering an unreadable body with 400 rather than 500).
    path("anymail/sendgrid/tracking/", SendGridTrackingView.as_view(), name="sendgrid-tracking"),
    path("anymail/", include("anymail.urls")),
    path("api/schema/", SpectacularAPIView.as_view(permission_classes=[]), name="api-schema"),
    path(
        "api/docs/",
        SpectacularSwaggerView.as_view(url_name="api-schema", permission_classes=[]),
        name="api-docs",
    ),
]

handler400 = "svoykrug.errors.handler400"
handler404 = "svoykrug.errors.handler404"
handler500 = "svoykrug.errors.handler500"
