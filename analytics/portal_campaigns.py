"""The partner portal's Campaigns section: a message to an RFM segment of the business's
customers or to those at risk of leaving, its reach and SMS cost before it goes, the send,
and what followed.

Owners and managers only (`portal_view(roles=MANAGING_ROLES)`); every campaign is looked up
scoped by `request.business`, so another business's campaign is 404. A new campaign is kept
as a draft and shown as a preview (who it reaches, by which channel, what the SMS cost); only
"Send" (a POST) sends it, once: `campaigns.send` claims the draft, so a second POST finds it
sent and does nothing. The page shows counts only, never who the customers are.
"""

from django import forms
from django.conf import settings
from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.portal import MANAGING_ROLES, PortalForm, paginate, portal_view
from analytics import campaigns
from analytics.models import Campaign
from analytics.warehouse import WarehouseError
from notifications.models import NotificationLog

WAREHOUSE_DOWN = _("The segments cannot be read right now (the analytics warehouse does not answer); try again later.")
# The notification service's reasons for skipping a message, as the partner reads them.
SKIP_REASONS = {
    "no marketing consent": _("no consent to promotions"),
    "the customer turned off promotions": _("promotions turned off"),
    "the customer turned off SMS": _("SMS turned off"),
    "the customer turned off email": _("email turned off"),
    "the daily SMS budget is spent": _("the circle's daily SMS budget was spent"),
}
STATUS_BADGES = {
    Campaign.Status.DRAFT: "",
    Campaign.Status.SENDING: "partially_refunded",
    Campaign.Status.SENT: "completed",
}
SEGMENT_HINTS = {
    "champions": _("bought recently and often"),
    "loyal": _("buy fairly recently and often"),
    "potential_loyalists": _("fairly recent, a few purchases"),
    "new": _("recent, one purchase"),
    "at_risk": _("bought often, not lately"),
    "cant_lose": _("bought often and much, not lately"),
    "hibernating": _("some time ago, few purchases"),
    "lost": _("long ago, few purchases"),
}


def _posted(request):
    return request.POST if request.method == "POST" else None


def _campaign_or_404(request, campaign_id) -> Campaign:
    return get_object_or_404(
        Campaign.objects.select_related("business", "created_by"), pk=campaign_id, business=request.business
    )


class CampaignForm(PortalForm):
    SEGMENT, RISK = "segment", "risk"

    audience = forms.ChoiceField(
        label=_("Who gets it"),
        choices=[(SEGMENT, _("A segment of your customers")), (RISK, _("Customers at risk of leaving"))],
        widget=forms.RadioSelect,
        initial=SEGMENT,
    )
    segment = forms.ChoiceField(
        label=_("Segment"),
        required=False,
        choices=[("", "—")]
        + [(value, f"{label} — {SEGMENT_HINTS[value]}") for value, label in Campaign.Segment.choices],
        help_text=_("By recency, frequency and money of their purchases here."),
    )
    min_risk = forms.IntegerField(
        label=_("Churn risk from, %"),
        required=False,
        min_value=1,
        max_value=100,
        help_text=_("Customers whose chance of not buying here again soon is at least this, by last night's scores."),
    )
    title = forms.CharField(
        label=_("Title"),
        max_length=Campaign.TITLE_MAX_LENGTH,
        help_text=_("The push title: up to 60 characters, as much as a phone shows."),
    )
    text = forms.CharField(
        label=_("Text"),
        max_length=Campaign.TEXT_MAX_LENGTH,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text=_(
            "The push text, and the SMS to those without the app: up to 300 characters. "
            "An SMS in Russian holds 70 characters, a longer one is paid as several SMS of 67."
        ),
    )

    def clean(self):
        data = super().clean()
        if data.get("audience") == self.SEGMENT:
            if not data.get("segment"):
                self.add_error("segment", gettext("Choose a segment."))
            data["min_risk"] = None
        elif data.get("audience") == self.RISK:
            if data.get("min_risk") is None:
                self.add_error("min_risk", gettext("Enter the churn risk, from 1 to 100 %."))
            data["segment"] = ""
        return data

    @classmethod
    def initial_for(cls, campaign: Campaign) -> dict:
        return {
            "audience": cls.SEGMENT if campaign.segment else cls.RISK,
            "segment": campaign.segment,
            "min_risk": round(campaign.min_risk * 100) if campaign.min_risk is not None else None,
            "title": campaign.title,
            "text": campaign.text,
        }

    def fill(self, campaign: Campaign) -> Campaign:
        data = self.cleaned_data
        campaign.segment = data["segment"] or ""
        campaign.min_risk = data["min_risk"] / 100 if data["min_risk"] is not None else None
        campaign.title, campaign.text = data["title"], data["text"]
        return campaign


# --- The list ----------------------------------------------------------------------------------


@never_cache
@require_GET
@portal_view(roles=MANAGING_ROLES)
def campaign_list(request):
    """The business's campaigns, newest first, with their delivery and the purchases that followed."""
    page = paginate(request, Campaign.objects.filter(business=request.business).select_related("created_by"), 20)
    for campaign in page:
        campaign.badge = STATUS_BADGES.get(campaign.status, "")
        campaign.results = campaigns.results(campaign) if campaign.status != Campaign.Status.DRAFT else None
    context = {"page": page, "attribution_days": settings.CAMPAIGN_ATTRIBUTION_DAYS}
    return render(request, "portal/analytics/campaigns.html", context)


# --- Writing ------------------------------------------------------------------------------------


@never_cache
@require_http_methods(["GET", "POST"])
@portal_view(roles=MANAGING_ROLES)
def campaign_new(request):
    """Step 1: the audience and the message. Saved as a draft; nothing is sent yet."""
    form = CampaignForm(_posted(request))
    if request.method == "POST" and form.is_valid():
        campaign = form.fill(Campaign(business=request.business, created_by=request.user))
        campaign.save()
        return redirect("portal:campaign", campaign_id=campaign.pk)
    status = 400 if request.method == "POST" else 200
    return render(request, "portal/analytics/campaign_form.html", _form_context(form, None), status=status)


@never_cache
@require_http_methods(["GET", "POST"])
@portal_view(roles=MANAGING_ROLES)
def campaign_edit(request, campaign_id):
    """Change a draft; a campaign sent is what it was."""
    campaign = _campaign_or_404(request, campaign_id)
    if campaign.status != Campaign.Status.DRAFT:
        messages.info(request, gettext("This campaign is sent and can no longer be changed."))
        return redirect("portal:campaign", campaign_id=campaign.pk)
    form = CampaignForm(_posted(request), initial=CampaignForm.initial_for(campaign))
    if request.method == "POST" and form.is_valid():
        form.fill(campaign)
        Campaign.objects.filter(pk=campaign.pk, status=Campaign.Status.DRAFT).update(
            segment=campaign.segment, min_risk=campaign.min_risk, title=campaign.title, text=campaign.text
        )
        return redirect("portal:campaign", campaign_id=campaign.pk)
    status = 400 if request.method == "POST" else 200
    return render(request, "portal/analytics/campaign_form.html", _form_context(form, campaign), status=status)


def _form_context(form: CampaignForm, campaign: Campaign | None) -> dict:
    return {
        "form": form,
        "campaign": campaign,
        "quiet_start": settings.NOTIFY_QUIET_HOURS_START,
        "quiet_end": settings.NOTIFY_QUIET_HOURS_END,
    }


# --- A campaign: its preview, or what became of it ---------------------------------------------------


@never_cache
@require_GET
@portal_view(roles=MANAGING_ROLES)
def campaign_detail(request, campaign_id):
    """A draft: step 2, the preview — reach by channel, who is excluded, the SMS and their
    cost, and the Send button. A campaign sent: its delivery and the purchases that followed."""
    campaign = _campaign_or_404(request, campaign_id)
    context = {"campaign": campaign, "badge": STATUS_BADGES.get(campaign.status, "")}
    if campaign.status == Campaign.Status.DRAFT:
        try:
            context["reach"] = campaigns.preview_campaign(campaign)
        except WarehouseError:
            context["preview_error"] = WAREHOUSE_DOWN
    else:
        context.update(_results_context(campaign))
    status = 503 if context.get("preview_error") else 200
    return render(request, "portal/analytics/campaign_detail.html", context, status=status)


def _results_context(campaign: Campaign) -> dict:
    outcome = campaigns.results(campaign)
    statuses = list(NotificationLog.Status)
    rows = [
        (NotificationLog.Channel(channel).label, [outcome.count(status, channel=channel) for status in statuses])
        for channel in NotificationLog.Channel.values
        if channel in outcome.delivery
    ]
    skipped = [(SKIP_REASONS.get(reason, reason), count) for reason, count in outcome.skipped_reasons.items()]
    return {
        "results": outcome,
        "statuses": [status.label for status in statuses],
        "delivery_rows": [(label, counts, sum(counts)) for label, counts in rows],
        "skipped": skipped,
    }


@require_POST
@portal_view(roles=MANAGING_ROLES)
def campaign_send(request, campaign_id):
    """Send a draft, once. A second POST (the form sent twice, a second tab) sends nothing."""
    campaign = _campaign_or_404(request, campaign_id)
    try:
        started = campaigns.send(campaign)
    except WarehouseError:
        messages.error(request, WAREHOUSE_DOWN)
        return redirect("portal:campaign", campaign_id=campaign.pk)
    if not started:
        messages.info(request, gettext("This campaign was already sent; nothing was sent again."))
    elif campaign.status == Campaign.Status.SENDING:
        messages.success(
            request,
            gettext("The campaign is being sent: the messages go out in the next minutes; this page counts them."),
        )
    else:
        messages.success(
            request,
            gettext(
                "The campaign is sent. Messages to customers for whom it is night wait for the morning "
                "in their time zone."
            ),
        )
    return redirect("portal:campaign", campaign_id=campaign.pk)
