from django.contrib import admin

from notifications.models import Device, NotificationLog, NotificationPreferences, PendingEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = ["user", "platform", "app_version", "is_active", "last_seen_at"]
    list_filter = ["platform", "is_active"]
    search_fields = ["user__phone", "token"]
    list_select_related = ["user"]
    autocomplete_fields = ["user"]
    readonly_fields = ["created_at", "deactivated_reason"]


@admin.register(NotificationPreferences)
class PreferencesAdmin(admin.ModelAdmin):
    list_display = ["user", "push_enabled", "sms_enabled", "email_enabled", "promotions", "updated_at"]
    list_filter = ["push_enabled", "sms_enabled", "email_enabled", "promotions"]
    search_fields = ["user__phone"]
    list_select_related = ["user"]
    autocomplete_fields = ["user"]


@admin.register(NotificationLog)
class NotificationLogAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "channel", "kind", "recipient", "status", "reason", "attempts", "sent_at"]
    list_filter = ["channel", "status", "kind", "created_at"]
    search_fields = ["recipient", "user__phone", "provider_message_id", "idempotency_key"]
    list_select_related = ["user"]
    date_hierarchy = "created_at"


@admin.register(PendingEvent)
class PendingEventAdmin(ReadOnlyAdmin):
    """Events whose messages are not decided yet: normally gone within a second; rows older
    than a minute mean the notifications queue has no worker (send_due_notifications decides
    them once beat and a worker run)."""

    list_display = ["created_at", "event_key", "user"]
    search_fields = ["event_key", "user__phone"]
    list_select_related = ["user"]
    date_hierarchy = "created_at"
