"""Customers of the business, one customer, and manual adjustments."""

import logging
from datetime import datetime, time, timedelta

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import F, OuterRef, Subquery
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_GET, require_http_methods

from accounts.models import User
from accounts.portal import MANAGING_ROLES, PortalForm, money, paginate, portal_view
from analytics.models import ChurnScore
from analytics.portal import SEGMENT_CHOICES, SEGMENT_LABELS
from analytics.services import calculate_rfm_segments
from analytics.warehouse import WarehouseError
from loyalty import selectors, services
from loyalty.models import LedgerEntry
from loyalty.money import ZERO
from loyalty.portal.common import MONEY_FIELD, PhoneSearchField, add_domain_error, new_key
from svoykrug.exceptions import DomainError

logger = logging.getLogger(__name__)

RISK_CHOICES = [("", _("Any")), ("30", "≥ 30 %"), ("50", "≥ 50 %"), ("70", "≥ 70 %"), ("90", "≥ 90 %")]
SORT_CHOICES = [("", _("Last visit")), ("risk", _("Churn risk"))]
SEGMENTS_DOWN = _("Segments are unavailable right now: the analytics warehouse does not answer.")


class CustomerSearchForm(PortalForm):
    phone = PhoneSearchField(widget=forms.TextInput(attrs={"type": "search", "inputmode": "tel", "placeholder": "+7"}))
    segment = forms.ChoiceField(label=_("Segment"), required=False, choices=[("", _("Any")), *SEGMENT_CHOICES])
    risk = forms.TypedChoiceField(
        label=_("Churn risk"), required=False, choices=RISK_CHOICES, coerce=int, empty_value=None
    )
    sort = forms.ChoiceField(label=_("Sort by"), required=False, choices=SORT_CHOICES)


def _customer_or_404(business, user_id) -> User:
    """A customer of this business (a purchase here), with their figures here; else 404."""
    customer = selectors.business_customers(business=business).filter(pk=user_id).first()
    if customer is None:
        raise Http404
    return customer


def _segments_moment() -> datetime:
    """The end of today on the business's clock: the moment the dashboard's segments are of,
    so that a segment's count there is the length of the list filtered by it here."""
    return datetime.combine(timezone.localdate() + timedelta(days=1), time.min, tzinfo=timezone.get_current_timezone())


@require_GET
@portal_view()
def customers(request):
    """People who bought here, newest visit first (or most at risk first); search by a phone
    or part of one, filter by RFM segment and by churn risk.

    The segment of the customers shown is one warehouse query per page: of the page's
    customers, or, filtering by a segment, of all the business's customers (whose ids in
    that segment then filter the list). The churn risk is this business's latest score."""
    form = CustomerSearchForm(request.GET)
    form.is_valid()
    cleaned = getattr(form, "cleaned_data", {})
    phone, segment, risk = cleaned.get("phone") or "", cleaned.get("segment") or "", cleaned.get("risk")
    business = request.business
    listed = selectors.business_customers(business=business, phone=phone or None).annotate(
        churn_risk=Subquery(ChurnScore.objects.filter(user=OuterRef("pk"), business=business).values("risk")[:1])
    )
    if risk is not None:
        listed = listed.filter(churn_risk__gte=risk / 100)
    if cleaned.get("sort") == "risk":
        listed = listed.order_by(F("churn_risk").desc(nulls_last=True), "-last_visit")
    segments, segments_down = None, False
    if segment:
        try:
            segments = {row.user_id: row.segment for row in _segments(business, None)}
        except WarehouseError:
            segments_down = True
            form.add_error("segment", SEGMENTS_DOWN)
        else:
            listed = listed.filter(pk__in=[user for user, name in segments.items() if name == segment])
    page = paginate(request, listed)
    if segments is None and not segments_down:
        try:
            segments = {row.user_id: row.segment for row in _segments(business, [c.pk for c in page])}
        except WarehouseError:
            segments_down = True
    for customer in page:
        customer.segment = segments.get(customer.pk) if segments else None
        customer.segment_label = SEGMENT_LABELS.get(customer.segment, "")
    context = {
        "form": form,
        "page": page,
        "searched": phone,
        "filtered": bool(phone or segment or risk is not None),
        "segments_down": SEGMENTS_DOWN if segments_down else "",
    }
    return render(request, "portal/loyalty/customers.html", context)


def _segments(business, user_ids):
    try:
        return calculate_rfm_segments(user_ids=user_ids, business_id=business.pk, as_of=_segments_moment())
    except WarehouseError:
        logger.warning("The customers list of %s could not read the segments", business.pk, exc_info=True)
        raise


@require_GET
@portal_view()
def customer_detail(request, user_id):
    """One customer of this business: their bonus account across the circle and their
    purchases here (not elsewhere), and this business's adjustments of their balance."""
    customer = _customer_or_404(request.business, user_id)
    purchases = paginate(
        request, selectors.business_transactions(business=request.business).filter(customer=customer), per_page=20
    )
    adjustments = (
        LedgerEntry.objects.filter(account__user=customer, kind=LedgerEntry.Kind.ADJUSTMENT, business=request.business)
        .select_related("created_by")
        .order_by("-created_at", "-id")[:20]
    )
    context = {
        "customer": customer,
        "summary": selectors.account_summary(customer),
        "purchases": purchases,
        "adjustments": adjustments,
    }
    return render(request, "portal/loyalty/customer_detail.html", context)


class AdjustmentForm(PortalForm):
    amount = forms.DecimalField(
        label=_("Amount, bonuses"),
        help_text=_("A positive amount adds bonuses (issued by your business); a negative one takes them away."),
        **MONEY_FIELD,
    )
    reason = forms.CharField(label=_("Reason"), max_length=500, widget=forms.Textarea(attrs={"rows": 3}), strip=True)
    key = forms.RegexField(regex=r"^[0-9a-f]{32}$", widget=forms.HiddenInput)

    def clean_amount(self):
        amount = self.cleaned_data["amount"]
        if amount == 0:
            raise ValidationError(_("Enter an amount other than zero."))
        return amount


@require_http_methods(["GET", "POST"])
@portal_view(roles=MANAGING_ROLES)
def adjust(request, user_id):
    """A manual correction of a customer's balance, with the reason kept in the ledger."""
    customer = _customer_or_404(request.business, user_id)
    form = AdjustmentForm(request.POST if request.method == "POST" else None, initial={"key": new_key()})
    if request.method == "POST" and form.is_valid():
        started = timezone.now()
        try:
            entries = services.adjust_balance(
                user=customer,
                amount=form.cleaned_data["amount"],
                reason=form.cleaned_data["reason"],
                created_by=request.user,
                business=request.business,
                idempotency_key=f"portal-adjust:{form.cleaned_data['key']}",
            )
        except DomainError as exc:
            add_domain_error(form, exc, field="amount")
        else:
            if entries and entries[0].created_at < started:
                messages.info(request, gettext("This adjustment was already recorded; nothing new was added."))
            else:
                total = sum((entry.amount for entry in entries), ZERO)
                messages.success(
                    request,
                    gettext("The balance is adjusted by %(amount)s.") % {"amount": money(total)},
                )
            return redirect("portal:customer", user_id=customer.pk)
    context = {"customer": customer, "summary": selectors.account_summary(customer), "form": form}
    return render(request, "portal/loyalty/adjust.html", context, status=400 if form.errors else 200)
