"""Purchases with filters, one purchase, and refunds."""

from datetime import timedelta
from decimal import Decimal

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import Count, Sum
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_GET, require_POST

from accounts.portal import MANAGING_ROLES, PortalForm, money, paginate, portal_view
from loyalty import selectors, services
from loyalty.models import Transaction
from loyalty.money import ZERO
from loyalty.portal.common import MONEY_FIELD, PhoneSearchField, add_domain_error, local_midnight, new_key
from svoykrug.exceptions import DomainError


class TransactionFilterForm(PortalForm):
    date_from = forms.DateField(
        label=_("From"), required=False, widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")
    )
    date_to = forms.DateField(
        label=_("To"), required=False, widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d")
    )
    status = forms.ChoiceField(
        label=_("Status"), required=False, choices=[("", _("Any status")), *Transaction.Status.choices]
    )
    phone = PhoneSearchField(widget=forms.TextInput(attrs={"type": "search", "inputmode": "tel", "placeholder": "+7"}))

    def clean(self):
        cleaned = super().clean()
        since, until = cleaned.get("date_from"), cleaned.get("date_to")
        if since and until and since > until:
            raise ValidationError(_("The start date is after the end date."))
        return cleaned


@require_GET
@portal_view()
def transactions(request):
    """This business's purchases, newest first, by dates (in the business's time zone),
    status and phone, with the totals of what the filters select."""
    form = TransactionFilterForm(request.GET)
    filters = form.cleaned_data if form.is_valid() else {}
    since = local_midnight(filters["date_from"]) if filters.get("date_from") else None
    until = local_midnight(filters["date_to"] + timedelta(days=1)) if filters.get("date_to") else None
    purchases = selectors.business_transactions(
        business=request.business,
        since=since,
        until=until,
        status=filters.get("status") or None,
        phone=filters.get("phone") or None,
    )
    totals = purchases.aggregate(
        count=Count("pk"),
        gross=Sum("gross_amount"),
        redeemed=Sum("bonuses_redeemed"),
        accrued=Sum("bonuses_accrued"),
    )
    totals = {name: ZERO if value is None else value for name, value in totals.items()}
    context = {"form": form, "page": paginate(request, purchases), "totals": totals}
    return render(request, "portal/loyalty/transactions.html", context)


class RefundForm(PortalForm):
    amount = forms.DecimalField(
        label=_("Amount to refund"),
        required=False,
        min_value=Decimal("0.01"),
        help_text=_("Part of the check. Leave empty to refund all that is left."),
        **MONEY_FIELD,
    )
    refund_id = forms.RegexField(regex=r"^portal-[0-9a-f]{32}$", widget=forms.HiddenInput)


def _transaction_or_404(business, transaction_id) -> Transaction:
    return get_object_or_404(selectors.business_transactions(business=business), pk=transaction_id)


def _transaction_page(request, purchase: Transaction, refund_form: RefundForm | None = None, status: int = 200):
    if refund_form is None:
        refund_form = RefundForm(initial={"refund_id": f"portal-{new_key()}"})
    context = {
        "purchase": purchase,
        "refunds": purchase.refunds.order_by("-created_at"),
        "refundable": purchase.gross_amount - purchase.refunded_amount,
        "refund_form": refund_form,
    }
    return render(request, "portal/loyalty/transaction_detail.html", context, status=status)


@require_GET
@portal_view()
def transaction_detail(request, transaction_id):
    return _transaction_page(request, _transaction_or_404(request.business, transaction_id))


@require_POST
@portal_view(roles=MANAGING_ROLES)
def transaction_refund(request, transaction_id):
    """Refund a purchase in full or in part. The form's refund_id makes a second send of
    the same form the same refund."""
    purchase = _transaction_or_404(request.business, transaction_id)
    form = RefundForm(request.POST)
    if form.is_valid():
        try:
            result = services.refund_transaction(
                business=request.business,
                external_id=purchase.external_id,
                amount=form.cleaned_data["amount"],
                refund_id=form.cleaned_data["refund_id"],
            )
        except DomainError as exc:
            add_domain_error(form, exc, field="amount")
        else:
            refund = result.refund
            if not result.created:
                messages.info(request, gettext("This refund was already made; nothing new was refunded."))
            else:
                messages.success(
                    request,
                    gettext(
                        "Refunded %(amount)s of the check: %(money)s of money, %(taken)s bonuses taken back, "
                        "%(returned)s bonuses returned to the customer."
                    )
                    % {
                        "amount": money(refund.amount),
                        "money": money(refund.money_refunded),
                        "taken": money(refund.accrual_reversed),
                        "returned": money(refund.redeemed_returned),
                    },
                )
                if refund.unrecovered:
                    messages.warning(
                        request,
                        gettext(
                            "%(amount)s of bonuses could not be taken back: the customer has spent them. "
                            "They will be taken from the customer's next bonuses."
                        )
                        % {"amount": money(refund.unrecovered)},
                    )
            return redirect("portal:transaction", transaction_id=purchase.pk)
    return _transaction_page(request, purchase, refund_form=form, status=400)
