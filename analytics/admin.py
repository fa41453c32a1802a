from django import forms
from django.conf import settings
from django.contrib import admin
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.translation import gettext_lazy as _

from accounts.models import Business
from accounts.portal import money
from analytics import campaigns
from analytics.models import Campaign, ChurnModel, ExportState


class RebuildForm(forms.Form):
    business = forms.ModelChoiceField(label=_("Partner"), queryset=Business.objects.order_by("name"))


@admin.register(ExportState)
class ExportStateAdmin(admin.ModelAdmin):
    """The warehouse export, stream by stream: how far it has come and how far behind it is."""

    list_display = ["name", "watermark", "lag", "last_run_at", "last_rows", "total_rows", "last_error"]
    readonly_fields = ["name", "watermark", "last_run_at", "last_rows", "total_rows", "last_error"]
    actions = ["export_now"]
    change_list_template = "admin/analytics/exportstate/change_list.html"

    def get_urls(self):
        rebuild = self.admin_site.admin_view(self.rebuild_view)
        return [path("rebuild/", rebuild, name="analytics_exportstate_rebuild"), *super().get_urls()]

    def rebuild_view(self, request):
        """Export one partner's data to the warehouse again (queued as a task)."""
        if not self.has_change_permission(request):
            return redirect("admin:index")
        form = RebuildForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            from analytics.tasks import rebuild_business

            business = form.cleaned_data["business"]
            rebuild_business.delay(str(business.pk))
            self.message_user(request, _("Rebuilding the warehouse data of %(name)s.") % {"name": business.name})
            return redirect("admin:analytics_exportstate_changelist")
        context = {**self.admin_site.each_context(request), "form": form, "opts": self.model._meta}
        return TemplateResponse(request, "admin/analytics/exportstate/rebuild.html", context)

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


@admin.register(ChurnModel)
class ChurnModelAdmin(admin.ModelAdmin):
    """Every trained churn model with its holdout metrics beside the recency baseline's;
    the current one scores the customers."""

    list_display = [
        "created_at",
        "as_of",
        "horizon_days",
        "is_current",
        "beats_baseline",
        "roc_auc",
        "baseline_roc_auc",
        "pr_auc",
        "baseline_pr_auc",
        "brier",
        "baseline_brier",
    ]
    list_filter = ["is_current", "beats_baseline"]
    exclude = ["estimator", "baseline_estimator"]
    readonly_fields = [
        "as_of",
        "horizon_days",
        "created_at",
        "sklearn_version",
        "feature_names",
        "metrics",
        "baseline_metrics",
        "details",
        "beats_baseline",
        "is_current",
    ]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def _metric(self, obj, name, baseline=False):
        value = (obj.baseline_metrics if baseline else obj.metrics).get(name)
        return "—" if value is None else f"{value:.3f}"

    @admin.display(description="ROC AUC")
    def roc_auc(self, obj):
        return self._metric(obj, "roc_auc")

    @admin.display(description=_("baseline ROC AUC"))
    def baseline_roc_auc(self, obj):
        return self._metric(obj, "roc_auc", baseline=True)

    @admin.display(description="PR AUC")
    def pr_auc(self, obj):
        return self._metric(obj, "pr_auc")

    @admin.display(description=_("baseline PR AUC"))
    def baseline_pr_auc(self, obj):
        return self._metric(obj, "pr_auc", baseline=True)

    @admin.display(description="Brier")
    def brier(self, obj):
        return self._metric(obj, "brier")

    @admin.display(description=_("baseline Brier"))
    def baseline_brier(self, obj):
        return self._metric(obj, "brier", baseline=True)


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    """Partners' segment campaigns, read-only: the audience, the message, and what followed —
    messages sent, and the recipients' purchases within CAMPAIGN_ATTRIBUTION_DAYS."""

    list_display = ["title", "business", "audience", "status", "audience_size", "created_at", "sent_at", "results"]
    list_filter = ["status", "segment"]
    list_select_related = ["business"]
    search_fields = ["title", "business__name"]
    date_hierarchy = "created_at"
    readonly_fields = ["results"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description=_("audience"))
    def audience(self, obj):
        return obj.audience_label

    @admin.display(description=_("results"))
    def results(self, obj):
        if obj.status == Campaign.Status.DRAFT:
            return "—"
        outcome = campaigns.results(obj)
        summary = _(
            "%(sent)d sent, %(waiting)d waiting; %(purchases)d purchases by %(buyers)d customers for %(revenue)s"
        )
        return summary % {
            "sent": outcome.delivered,
            "waiting": outcome.waiting,
            "purchases": outcome.purchases,
            "buyers": outcome.buyers,
            "revenue": money(outcome.revenue),
        }
