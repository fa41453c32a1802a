"""The cash desk: record a purchase, with bonuses and a partner's cross-promo coupon, where
there is no POS integration."""

import uuid
from decimal import Decimal

from django import forms
from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_http_methods

from accounts.models import User
from accounts.portal import PortalForm, portal_view
from crosspromo import services as crosspromo
from crosspromo.models import Coupon
from loyalty import selectors, services
from loyalty.models import Transaction
from loyalty.money import ZERO
from loyalty.portal.common import MONEY_FIELD, PhoneField, add_domain_error, new_key
from loyalty.portal.purchases import _transaction_or_404
from svoykrug.exceptions import DomainError


class PurchaseForm(PortalForm):
    phone = PhoneField()
    amount = forms.DecimalField(label=_("Check amount"), min_value=Decimal("0.01"), **MONEY_FIELD)
    redeem = forms.DecimalField(
        label=_("Pay with bonuses"),
        required=False,
        min_value=Decimal("0"),
        help_text=_("Leave empty to pay nothing with bonuses."),
        **MONEY_FIELD,
    )
    coupon = forms.CharField(
        label=_("Coupon"),
        required=False,
        max_length=64,
        help_text=_("A partner's coupon: scan its QR code or type the code. Leave empty if there is none."),
        widget=forms.TextInput(attrs={"autocomplete": "off", "autocapitalize": "characters"}),
    )
    external_id = forms.RegexField(regex=r"^cashier-[0-9a-f]{32}$", widget=forms.HiddenInput)

    def clean(self):
        cleaned = super().clean()
        amount, redeem = cleaned.get("amount"), cleaned.get("redeem")
        if amount is not None and redeem is not None and redeem > amount:
            self.add_error("redeem", _("Bonuses cannot pay more than the check."))
        return cleaned


def _quote(business, phone: str, amount: Decimal) -> dict:
    """What the cashier sees before recording: the customer's bonuses and the most of this
    check they can pay."""
    customer = User.objects.filter(phone=phone, is_active=True).first()
    if customer is None:
        return {"phone": phone, "customer": None, "max_redeemable": ZERO}
    return {
        "phone": phone,
        "customer": customer,
        "summary": selectors.account_summary(customer),
        "max_redeemable": services.quote_redemption(business=business, phone=phone, amount=amount),
    }


def _quote_coupon(business, form: PurchaseForm) -> crosspromo.CouponClaim | None:
    """What the coupon typed would give on this check, or its refusal put at the field."""
    data = form.cleaned_data
    code = data.get("coupon")
    if not code or "amount" not in data:
        return None
    coupon = crosspromo.find_coupon(code)
    if coupon is None:
        form.add_error("coupon", gettext("There is no such coupon."))
        return None
    customer = User.objects.filter(phone=data["phone"], is_active=True).first()
    if customer is None:  # a phone new to the circle holds no coupons
        form.add_error("coupon", gettext("This coupon belongs to another customer."))
        return None
    try:
        return crosspromo.quote_coupon(
            coupon,
            business=business,
            customer_id=customer.pk,
            amount=data["amount"],
            redeem=data.get("redeem") or ZERO,
        )
    except crosspromo.CouponError as exc:
        form.add_error("coupon", exc.message)
        return None


def _receipt(request) -> dict | None:
    raw = request.GET.get("receipt")
    if not raw:
        return None
    try:
        transaction_id = uuid.UUID(raw)
    except ValueError:
        raise Http404 from None
    purchase = _transaction_or_404(request.business, transaction_id)
    return {
        "purchase": purchase,
        "summary": selectors.account_summary(purchase.customer),
        "coupon": Coupon.objects.filter(redeeming_transaction=purchase).select_related("chain__source").first(),
    }


def _record_purchase(request, form: PurchaseForm) -> tuple[HttpResponse | None, PurchaseForm]:
    """Record the cashier's purchase: a redirect to its receipt, or no response and the form
    with the refusal on it (a fresh form when the purchase id turned out to be used)."""
    data = form.cleaned_data
    try:
        result = services.record_transaction(
            business=request.business,
            external_id=data["external_id"],
            phone=data["phone"],
            amount=data["amount"],
            redeem=data["redeem"] or ZERO,
            coupon=data["coupon"] or None,
            source=Transaction.Source.CASHIER,
            recorded_by=request.user,
        )
    except services.IdempotencyConflict:
        # This form was sent before with other figures: give it a fresh id and ask again.
        data = request.POST.copy()
        data["external_id"] = f"cashier-{new_key()}"
        fresh = PurchaseForm(data)
        fresh.is_valid()
        fresh.add_error(None, _("This form already recorded another purchase. Check the figures and record again."))
        return None, fresh
    except DomainError as exc:
        add_domain_error(form, exc, field="redeem")
        return None, form
    if result.created:
        messages.success(request, gettext("The purchase is recorded."))
    else:
        messages.info(request, gettext("This purchase was already recorded."))
    return redirect(f"{request.path}?receipt={result.transaction.pk}"), form


@require_http_methods(["GET", "POST"])
@portal_view()
def cashier(request):
    """Record a purchase at the counter: phone and check amount; "check bonuses" shows the
    balance and the most of the check bonuses can pay, "record" records it."""
    if request.method == "GET":
        initial = {"external_id": f"cashier-{new_key()}", "phone": request.GET.get("phone", "")[:32]}
        context = {"form": PurchaseForm(initial=initial), "quote": None, "receipt": _receipt(request)}
        return render(request, "portal/loyalty/cashier.html", context)
    form = PurchaseForm(request.POST)
    if form.is_valid() and request.POST.get("action") == "record":
        done, form = _record_purchase(request, form)
        if done is not None:
            return done
    quote = None
    if "phone" in form.cleaned_data and "amount" in form.cleaned_data:  # valid, and not refused for them
        quote = _quote(request.business, form.cleaned_data["phone"], form.cleaned_data["amount"])
        if request.POST.get("action") != "record":
            quote["coupon"] = _quote_coupon(request.business, form)
    context = {"form": form, "quote": quote, "receipt": None}
    return render(request, "portal/loyalty/cashier.html", context, status=400 if form.errors else 200)
