"""The partner portal's Cross-promo section: the business's chains both ways, a proposal to
another partner, a chain's terms, coupons and win-win index, the decisions on it, and the
partners worth proposing a chain to.

Owners and managers only (`portal_view(roles=MANAGING_ROLES)`). A chain is looked up among
those the business is a partner of (source or target), so anyone else's chain is 404; what a
partner may do with it is decided by `change_chain`, which refuses the source accepting its
own proposal. Decisions are POSTs (with CSRF); the services own every write.
"""

import uuid
from datetime import timedelta

from django import forms
from django.contrib import messages
from django.db.models import Q
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext, pgettext_lazy
from django.utils.translation import gettext_lazy as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.models import Business
from accounts.portal import MANAGING_ROLES, PortalForm, portal_view
from crosspromo import services
from crosspromo.models import CrossPromoChain
from crosspromo.services import ChainConfig, ChainError
from loyalty.portal.common import MONEY_FIELD, local_midnight

Status = CrossPromoChain.Status

# The order the list shows its groups in: what waits for a decision first.
STATUS_ORDER = [Status.PROPOSED, Status.ACTIVE, Status.ACCEPTED, Status.PAUSED, Status.ENDED, Status.DECLINED]
STATUS_BADGES = {
    Status.PROPOSED: "partially_refunded",
    Status.ACCEPTED: "",
    Status.ACTIVE: "completed",
    Status.PAUSED: "partially_refunded",
    Status.ENDED: "",
    Status.DECLINED: "refunded",
}
ACTION_LABELS = {
    "accept": _("Accept"),
    "decline": _("Decline"),
    "pause": _("Pause"),
    "resume": _("Resume"),
    "end": pgettext_lazy("cross-promo chain action", "End"),
    "withdraw": _("Withdraw the proposal"),
}
ACTION_DONE = {
    "accept": _("The chain is accepted."),
    "decline": _("The proposal is declined."),
    "pause": _("The chain is paused: it issues no coupons until resumed."),
    "resume": _("The chain is running again."),
    "end": _("The chain is ended."),
}
LATEST_COUPONS = 50
VISIBLE_CODE_CHARS = 3


def _posted(request):
    return request.POST if request.method == "POST" else None


def _chains_of(business: Business):
    return CrossPromoChain.objects.filter(Q(source=business) | Q(target=business)).select_related("source", "target")


def _chain_or_404(request, chain_id) -> CrossPromoChain:
    return get_object_or_404(_chains_of(request.business), pk=chain_id)


def actions_for(chain: CrossPromoChain, business: Business) -> list[tuple[str, str]]:
    """(POSTed action, button label) the business can take on the chain now; the service
    checks again under the chain's lock."""
    if chain.status == Status.PROPOSED:
        if chain.target_id == business.pk:
            return [("accept", ACTION_LABELS["accept"]), ("decline", ACTION_LABELS["decline"])]
        return [("end", ACTION_LABELS["withdraw"])]
    if chain.status in (Status.ACTIVE, Status.ACCEPTED):
        return [("pause", ACTION_LABELS["pause"]), ("end", ACTION_LABELS["end"])]
    if chain.status == Status.PAUSED:
        return [("resume", ACTION_LABELS["resume"]), ("end", ACTION_LABELS["end"])]
    return []


def _decorate(chain: CrossPromoChain, business: Business) -> CrossPromoChain:
    """What the pages show of a chain from this business's side."""
    chain.is_outgoing = chain.source_id == business.pk
    chain.partner = chain.target if chain.is_outgoing else chain.source
    chain.reward_text = services.describe_reward(chain)
    chain.budget_used = chain.budget_spent + chain.budget_reserved
    chain.badge = STATUS_BADGES.get(chain.status, "")
    chain.actions = actions_for(chain, business)
    return chain


def mask_code(code: str) -> str:
    """A coupon code as the portal shows it: all but its last characters hidden."""
    return "•" * max(0, len(code) - VISIBLE_CODE_CHARS) + code[-VISIBLE_CODE_CHARS:]


# --- The list ----------------------------------------------------------------------------------


@never_cache
@require_GET
@portal_view(roles=MANAGING_ROLES)
def chain_list(request):
    """The business's chains, both ways, grouped by status: proposals first."""
    chains = [_decorate(chain, request.business) for chain in _chains_of(request.business)]
    groups = []
    for status in STATUS_ORDER:
        members = [chain for chain in chains if chain.status == status]
        if members:
            groups.append({"status": status, "label": Status(status).label, "chains": members})
    return render(request, "portal/crosspromo/chains.html", {"groups": groups, "has_chains": bool(chains)})


# --- A proposal ---------------------------------------------------------------------------------


class ChainForm(PortalForm):
    target = forms.ModelChoiceField(
        label=_("Partner"),
        queryset=Business.objects.none(),
        empty_label="—",
        help_text=_("Your customers get a coupon for this partner."),
    )
    title = forms.CharField(label=_("Title"), max_length=120, required=False)
    min_purchase_amount = forms.DecimalField(
        label=_("Purchase here from, ₽"),
        min_value=0,
        initial=0,
        help_text=_("A purchase of at least this much money paid here issues the coupon."),
        **MONEY_FIELD,
    )
    first_purchase_only = forms.BooleanField(label=_("Only the customer's first purchase here"), required=False)
    new_to_target_only = forms.BooleanField(label=_("Only customers who never bought at the partner"), required=False)
    reward_kind = forms.ChoiceField(label=_("Reward at the partner"), choices=CrossPromoChain.Reward.choices)
    reward_value = forms.DecimalField(
        label=_("Reward value"),
        help_text=_("Percent for a percentage discount, roubles for a fixed one, bonuses for extra bonuses."),
        **MONEY_FIELD,
    )
    max_discount = forms.DecimalField(
        label=_("Largest discount, ₽"),
        required=False,
        help_text=_("For a percentage discount: the most one coupon takes off."),
        **MONEY_FIELD,
    )
    min_target_purchase = forms.DecimalField(
        label=_("Purchase at the partner from, ₽"), min_value=0, initial=0, **MONEY_FIELD
    )
    coupon_lifetime_days = forms.IntegerField(label=_("Coupon lifetime, days"), initial=30)
    per_customer_limit = forms.IntegerField(label=_("Coupons per customer"), initial=1)
    total_limit = forms.IntegerField(label=_("Coupons in all"), required=False, help_text=_("Empty: no limit."))
    budget = forms.DecimalField(
        label=_("Budget, ₽"),
        required=False,
        help_text=_("The most the rewards may cost in all. Empty: no limit."),
        **MONEY_FIELD,
    )
    starts_on = forms.DateField(
        label=_("Starts on"),
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text=_("Empty: as soon as the partner accepts."),
    )
    ends_on = forms.DateField(
        label=_("Last day"),
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text=_("Empty: until one of you ends it."),
    )
    target_share_percent = forms.IntegerField(
        label=_("Partner's share of the reward cost, %"),
        initial=100,
        help_text=_("100: the partner pays for the rewards it gives; less: you pay the rest."),
    )

    # The service's names for the inputs it finds at fault, where they differ from the form's.
    SERVICE_FIELDS = {"starts_at": "starts_on", "ends_at": "ends_on", "source": None}

    def __init__(self, *args, business: Business, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["target"].queryset = (
            Business.objects.filter(is_active=True).exclude(pk=business.pk).order_by("name")
        )
        self.business = business

    def config(self, *, by) -> ChainConfig:
        data = self.cleaned_data
        today = timezone.localdate()
        starts_on, ends_on = data["starts_on"], data["ends_on"]
        return ChainConfig(
            source=self.business,
            target=data["target"],
            title=data["title"],
            reward_kind=data["reward_kind"],
            reward_value=data["reward_value"],
            max_discount=data["max_discount"],
            min_purchase_amount=data["min_purchase_amount"],
            first_purchase_only=data["first_purchase_only"],
            new_to_target_only=data["new_to_target_only"],
            min_target_purchase=data["min_target_purchase"],
            coupon_lifetime_days=data["coupon_lifetime_days"],
            per_customer_limit=data["per_customer_limit"],
            total_limit=data["total_limit"],
            budget=data["budget"],
            # A start today is a start now; a later one, that day's midnight in the business's zone.
            starts_at=local_midnight(starts_on) if starts_on and starts_on > today else None,
            # The last day runs to its end.
            ends_at=local_midnight(ends_on + timedelta(days=1)) if ends_on else None,
            target_share_percent=data["target_share_percent"],
            proposed_by=by,
        )

    def add_chain_error(self, exc: ChainError) -> None:
        self.add_service_error(exc.message, exc.fields)


def _preselected(request) -> dict:
    """`?target=<id>` (from a recommendation) chooses the partner, if it is one to choose."""
    try:
        target_id = uuid.UUID(request.GET.get("target", ""))
    except ValueError:
        return {}
    target = Business.objects.filter(pk=target_id, is_active=True).exclude(pk=request.business.pk).first()
    return {"target": target} if target else {}


@never_cache
@require_http_methods(["GET", "POST"])
@portal_view(roles=MANAGING_ROLES)
def chain_new(request):
    """Propose a chain to another active partner; its owners accept or decline it."""
    form = ChainForm(_posted(request), initial=_preselected(request), business=request.business)
    if request.method == "POST" and form.is_valid():
        try:
            chain = services.create_chain(form.config(by=request.user))
        except ChainError as exc:
            form.add_chain_error(exc)
        else:
            messages.success(request, gettext("The chain is proposed: the partner's owners are told and decide on it."))
            return redirect("portal:crosspromo-chain", chain_id=chain.pk)
    status = 400 if request.method == "POST" else 200
    return render(request, "portal/crosspromo/chain_form.html", {"form": form}, status=status)


# --- A chain ------------------------------------------------------------------------------------


def _flow_context(flow, *, source: Business, target: Business) -> dict:
    return {
        "source": source,
        "target": target,
        "customers_sent": flow.customers_sent,
        "revenue_brought": flow.revenue_brought,
        "target_revenue": flow.target_revenue,
        "gain_percent": round(flow.gain * 100, 1),
        "saturated_gain": round(flow.saturated_gain, 3),
        "coupons_redeemed": flow.coupons_redeemed,
    }


@never_cache
@require_GET
@portal_view(roles=MANAGING_ROLES)
def chain_detail(request, chain_id):
    """A chain of this business: its terms and counters, the latest coupons (codes masked),
    what each partner brought the other, and the win-win index of the pair."""
    chain = _decorate(_chain_or_404(request, chain_id), request.business)
    coupons = list(chain.coupons.order_by("-issued_at", "-pk")[:LATEST_COUPONS])
    for coupon in coupons:
        coupon.masked_code = mask_code(coupon.code)
    index = services.calculate_winwin_index(chain.source, chain.target)
    context = {
        "chain": chain,
        "coupons": coupons,
        "latest_coupons": LATEST_COUPONS,
        "index": index,
        "index_percent": round(index.value * 100),
        "flows": [
            _flow_context(index.a_to_b, source=chain.source, target=chain.target),
            _flow_context(index.b_to_a, source=chain.target, target=chain.source),
        ],
        "period_days": (index.period_end - index.period_start).days,
    }
    return render(request, "portal/crosspromo/chain_detail.html", context)


@require_POST
@portal_view(roles=MANAGING_ROLES)
def chain_change(request, chain_id):
    """Accept, decline, pause, resume or end a chain (the `action` posted); the page it was
    pressed on comes back with what happened."""
    chain = _chain_or_404(request, chain_id)
    action = request.POST.get("action", "")
    try:
        services.change_chain(chain, action, business=request.business, by=request.user)
    except ChainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, ACTION_DONE[action])
    if request.POST.get("back") == "list":
        return redirect("portal:crosspromo")
    return redirect("portal:crosspromo-chain", chain_id=chain.pk)


# --- Recommendations ----------------------------------------------------------------------------


@never_cache
@require_GET
@portal_view(roles=MANAGING_ROLES)
def recommendations(request):
    """The partners worth proposing a chain to, best first, and why."""
    suggestions = [
        {"suggestion": suggestion, "score_percent": round(suggestion.score * 100)}
        for suggestion in services.generate_chain_recommendations(request.business)
    ]
    return render(request, "portal/crosspromo/recommendations.html", {"suggestions": suggestions})
