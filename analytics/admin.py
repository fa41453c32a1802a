from django.conf import settings
from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from analytics.models import ExportState


@admin.register(ExportState)
class ExportStateAdmin(admin.ModelAdmin):
    """The warehouse export, stream by stream: how far it has come and how far behind it is."""

    list_display = ["name", "watermark", "lag", "last_run_at", "last_rows", "total_rows", "last_error"]
    readonly_fields = ["name", "watermark", "last_run_at", "last_rows", "total_rows", "last_error"]
    actions = ["export_now"]

    def has_add_permission(self, request):
        return False

    @admin.display(description=_("lag"))
    def lag(self, obj):
        seconds = obj.lag_seconds
        if seconds is None:
            return "—"
        behind = seconds > settings.WAREHOUSE_MAX_LAG_SECONDS
        return f"{int(seconds)} s" + (" ⚠ " + str(_("behind")) if behind else "")

    @admin.action(description=_("Export now"))
    def export_now(self, request, queryset):
        from analytics.tasks import aggregate_transactions_to_clickhouse

        aggregate_transactions_to_clickhouse.delay()
        self.message_user(request, _("The export is queued."))
