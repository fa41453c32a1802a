from django.apps import AppConfig
from django.conf import settings
from django.core import checks


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        checks.register(check_sms_configured, checks.Tags.security, deploy=True)
        checks.register(check_email_webhook_secret, checks.Tags.security, deploy=True)

        # Anymail's webhook reports email delivery only through its signal: one tiny receiver
        # hands each event to notifications.delivery.record_email_event.
        from anymail.signals import tracking

        from notifications.delivery import on_anymail_tracking

        tracking.connect(on_anymail_tracking, dispatch_uid="notifications.email_tracking")


def check_sms_configured(app_configs, **kwargs):
    if settings.DEBUG or settings.SMSRU_API_ID:
        return []
    return [
        checks.Warning(
            "SMSRU_API_ID is not set: login codes are written to the log instead of being sent by SMS.",
            hint="Set SMSRU_API_ID in production.",
            id="notifications.W001",
        )
    ]


def check_email_webhook_secret(app_configs, **kwargs):
    if not settings.EMAIL_ESP_API_KEY or settings.ANYMAIL.get("WEBHOOK_SECRET"):
        return []
    return [
        checks.Warning(
            "Emails are sent but EMAIL_WEBHOOK_SECRET is not set: delivery reports cannot be accepted.",
            hint="Set EMAIL_WEBHOOK_SECRET to user:password and give the ESP's event webhook the same.",
            id="notifications.W002",
        )
    ]
