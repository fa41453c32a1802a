import json

from django import forms
from django.contrib import admin, messages
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from integrations import services
from integrations.models import CRMIntegration, CrmRecord, ImportJob, WebhookDelivery


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class CRMIntegrationForm(forms.ModelForm):
    """Credentials are write-only here: the page shows them masked, and a JSON object typed
    into "new credentials" replaces them (keys left out are kept)."""

    new_credentials = forms.CharField(
        label=_("New credentials (JSON)"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "autocomplete": "off"}),
        help_text=_('For example {"api_key": "..."}; empty keeps the stored credentials.'),
    )

    class Meta:
        model = CRMIntegration
        fields = ["business", "provider", "config", "is_active"]

    def clean_new_credentials(self):
        text = self.cleaned_data["new_credentials"].strip()
        if not text:
            return None
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise forms.ValidationError(_("Not JSON: %(error)s") % {"error": exc}) from exc
        if not isinstance(value, dict) or not all(isinstance(v, str | int) for v in value.values()):
            raise forms.ValidationError(_("A JSON object of names to strings."))
        return {key: str(item) for key, item in value.items()}

    def save(self, commit=True):
        integration = super().save(commit=False)
        if self.cleaned_data.get("new_credentials"):
            integration.credentials = {**integration.credentials, **self.cleaned_data["new_credentials"]}
        if commit:
            integration.save()
        return integration


@admin.register(CRMIntegration)
class CRMIntegrationAdmin(admin.ModelAdmin):
    form = CRMIntegrationForm
    list_display = [
        "business",
        "provider",
        "is_active",
        "health",
        "consecutive_failures",
        "last_sync_at",
        "last_success_at",
        "short_error",
    ]
    list_filter = ["provider", "health", "is_active"]
    search_fields = ["business__name", "business__slug"]
    list_select_related = ["business"]
    autocomplete_fields = ["business"]
    readonly_fields = [
        "credentials_masked",
        "webhook_url",
        "health",
        "consecutive_failures",
        "watermark",
        "last_sync_at",
        "last_success_at",
        "last_error",
        "last_error_at",
        "created_at",
        "updated_at",
    ]
    actions = ["test_connection", "sync_now", "reset_health", "new_webhook_secret"]

    @admin.display(description=_("credentials"))
    def credentials_masked(self, obj):
        return ", ".join(f"{key}: {value}" for key, value in obj.masked_credentials().items()) or "—"

    @admin.display(description=_("webhook URL"))
    def webhook_url(self, obj):
        return obj.webhook_path() if obj.pk else "—"

    @admin.display(description=_("last error"))
    def short_error(self, obj):
        return (obj.last_error[:80] + "…") if len(obj.last_error) > 80 else obj.last_error

    @admin.action(description=_("Test the connection"))
    def test_connection(self, request, queryset):
        for integration in queryset.select_related("business"):
            ok, text = services.check_connection(integration)
            self.message_user(request, f"{integration}: {text}", messages.SUCCESS if ok else messages.ERROR)

    @admin.action(description=_("Sync now"))
    def sync_now(self, request, queryset):
        from integrations.tasks import sync_integration

        for integration in queryset.filter(is_active=True):
            sync_integration.delay(str(integration.pk))
        self.message_user(request, _("Syncs queued."))

    @admin.action(description=_("New webhook secret (the old URL stops working)"))
    def new_webhook_secret(self, request, queryset):
        from integrations.models import _new_webhook_secret

        for integration in queryset:
            integration.webhook_secret = _new_webhook_secret()
            integration.save(update_fields=["webhook_secret", "updated_at"])
        self.message_user(request, _("New webhook URLs made; give them to the partners' CRMs."), messages.WARNING)

    @admin.action(description=_("Reset health to OK (after fixing the cause)"))
    def reset_health(self, request, queryset):
        queryset.update(health=CRMIntegration.Health.OK, consecutive_failures=0)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "integration", "status", "attempts", "events", "short_error", "processed_at"]
    list_filter = ["status", "integration__provider", "received_at"]
    search_fields = ["integration__business__name", "body", "error"]
    list_select_related = ["integration__business"]
    date_hierarchy = "received_at"
    readonly_fields = [
        "integration",
        "received_at",
        "content_type",
        "status",
        "attempts",
        "processed_at",
        "error",
        "result_pretty",
        "body",
    ]
    exclude = ["result"]
    actions = ["reprocess"]

    @admin.display(description=_("events"))
    def events(self, obj):
        counts = (obj.result or {}).get("counts")
        if counts:
            return ", ".join(f"{name} {count}" for name, count in sorted(counts.items()))
        return (obj.result or {}).get("events", "—")

    @admin.display(description=_("error"))
    def short_error(self, obj):
        return obj.error[:80]

    @admin.display(description=_("result"))
    def result_pretty(self, obj):
        return format_html("<pre>{}</pre>", json.dumps(obj.result, ensure_ascii=False, indent=2))

    @admin.action(description=_("Reprocess (safe: purchases are recorded once)"))
    def reprocess(self, request, queryset):
        from integrations.tasks import process_webhook_delivery

        ids = list(queryset.values_list("pk", flat=True))
        queryset.update(status=WebhookDelivery.Status.RECEIVED, error="")
        for delivery_id in ids:
            process_webhook_delivery.delay(delivery_id)
        self.message_user(request, _("%(count)d webhooks queued for processing.") % {"count": len(ids)})


@admin.register(CrmRecord)
class CrmRecordAdmin(ReadOnlyAdmin):
    list_display = [
        "updated_at",
        "integration",
        "kind",
        "external_id",
        "status",
        "reason",
        "amount",
        "occurred_at",
        "via",
        "times_seen",
    ]
    list_filter = ["status", "kind", "via", "integration__provider"]
    search_fields = ["external_id", "phone", "customer_name", "integration__business__name"]
    list_select_related = ["integration__business"]
    raw_id_fields = ["transaction"]


@admin.register(ImportJob)
class ImportJobAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "business",
        "original_name",
        "status",
        "rows_done",
        "rows_total",
        "imported",
        "duplicates",
        "rejected",
    ]
    list_filter = ["status"]
    search_fields = ["business__name", "original_name"]
    list_select_related = ["business"]
