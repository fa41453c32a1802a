"""Devices that receive pushes, what each customer wants to hear about, and what was sent."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class Device(models.Model):
    """A phone with the app installed: its FCM registration token."""

    class Platform(models.TextChoices):
        ANDROID = "android", "Android"
        IOS = "ios", "iOS"
        WEB = "web", "Web"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="devices")
    token = models.CharField(_("FCM registration token"), max_length=512, unique=True)
    platform = models.CharField(_("platform"), max_length=10, choices=Platform.choices)
    app_version = models.CharField(_("app version"), max_length=50, blank=True)
    is_active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(_("registered at"), auto_now_add=True)
    last_seen_at = models.DateTimeField(_("last seen at"))
    deactivated_reason = models.CharField(_("why deactivated"), max_length=200, blank=True)

    class Meta:
        verbose_name = _("device")
        verbose_name_plural = _("devices")
        ordering = ["-last_seen_at"]
        indexes = [models.Index(fields=["user"], condition=Q(is_active=True), name="device_active_by_user")]

    def __str__(self):
        return f"{self.user} {self.platform} …{self.token[-8:]}"


class NotificationPreferences(models.Model):
    """What a customer wants to hear about and how. Transactional messages (codes, bonuses,
    coupons, tickets) ignore the marketing switch; marketing needs `User.marketing_consent`."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_preferences"
    )
    push_enabled = models.BooleanField(_("push"), default=True)
    sms_enabled = models.BooleanField(_("SMS"), default=True)
    email_enabled = models.BooleanField(_("email"), default=True)
    bonus_updates = models.BooleanField(_("bonuses accrued, spent, expiring; tiers"), default=True)
    coupons = models.BooleanField(_("coupons"), default=True)
    events = models.BooleanField(_("event tickets and reminders"), default=True)
    promotions = models.BooleanField(_("promotions and campaigns"), default=True)
    quiet_hours_start = models.TimeField(_("quiet hours from"), null=True, blank=True)
    quiet_hours_end = models.TimeField(_("quiet hours until"), null=True, blank=True)
    time_zone = models.CharField(_("time zone"), max_length=64, default="Europe/Moscow")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("notification preferences")
        verbose_name_plural = _("notification preferences")

    def __str__(self):
        return f"{self.user}"


class NotificationLog(models.Model):
    """One message to one recipient on one channel, and what became of it."""

    class Channel(models.TextChoices):
        PUSH = "push", _("Push")
        SMS = "sms", _("SMS")
        EMAIL = "email", _("Email")

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        SENDING = "sending", _("Sending")
        SENT = "sent", _("Sent")
        DELIVERED = "delivered", _("Delivered")
        FAILED = "failed", _("Failed")
        SKIPPED = "skipped", _("Skipped")

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="notifications"
    )
    channel = models.CharField(_("channel"), max_length=10, choices=Channel.choices)
    recipient = models.CharField(_("recipient"), max_length=512, help_text=_("Phone, email or device token."))
    kind = models.CharField(_("kind"), max_length=50)
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.QUEUED)
    reason = models.CharField(_("why skipped or failed"), max_length=500, blank=True)
    provider_message_id = models.CharField(_("provider message id"), max_length=200, blank=True, db_index=True)
    # One message per event, kind and recipient: a second notify for the same event is a no-op.
    idempotency_key = models.CharField(max_length=300, unique=True)
    subject = models.CharField(_("subject"), max_length=300, blank=True)
    body = models.TextField(_("text"), blank=True)
    html = models.TextField(_("HTML (email)"), blank=True)
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    send_after = models.DateTimeField(_("send after"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)
    delivered_at = models.DateTimeField(_("delivered at"), null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("notification")
        verbose_name_plural = _("notification log")
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["user", "-created_at"], name="notification_user_time"),
            models.Index(fields=["channel", "status", "created_at"], name="notification_channel_status"),
        ]

    def __str__(self):
        return f"{self.channel} {self.kind} → {self.recipient}: {self.status}"


class PendingEvent(models.Model):
    """An event's messages, written in the transaction of the write that caused them and
    deleted by the one that decides them (notify): the outbox that makes a message survive a
    broker that lost its task. The task named at commit takes it at once; the sweeper takes
    what is left after NOTIFY_PENDING_GRACE_SECONDS."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    messages = models.JSONField(help_text=_("[kind, context] pairs."))
    event_key = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        verbose_name = _("pending event")
        verbose_name_plural = _("pending events")

    def __str__(self):
        return f"{self.event_key} → {self.user_id}"
