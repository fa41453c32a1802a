"""Customers of the business, one customer, and manual adjustments."""

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_GET, require_http_methods

from accounts.models import User
from accounts.portal import MANAGING_ROLES, PortalForm, money, paginate, portal_view
from loyalty import selectors, services
from loyalty.models import LedgerEntry
from loyalty.money import ZERO
from loyalty.portal.common import MONEY_FIELD, PhoneSearchField, add_domain_error, new_key
from svoykrug.exceptions import DomainError


class CustomerSearchForm(PortalForm):
    phone = PhoneSearchField(widget=forms.TextInput(attrs={"type": "search", "inputmode": "tel", "placeholder": "+7"}))


def _customer_or_404(business, user_id) -> User:
    """A customer of this business (a purchase here), with their figures here; else 404."""
    customer = selectors.business_customers(business=business).filter(pk=user_id).first()
    if customer is None:
        raise Http404
    return customer


@require_GET
@portal_view()
def customers(request):
    """People who bought here, newest visit first; search by a phone or part of one."""
    form = CustomerSearchForm(request.GET)
    phone = form.cleaned_data["phone"] if form.is_valid() else ""
    page = paginate(request, selectors.business_customers(business=request.business, phone=phone or None))
    return render(request, "portal/loyalty/customers.html", {"form": form, "page": page, "searched": phone})


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
