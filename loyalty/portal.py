"""The partner portal's loyalty pages: the dashboard, program terms and their history,
customers, purchases and refunds, the cashier's page, manual adjustments and the
settlement report.

Each view runs under `accounts.portal.portal_view`, reads through `loyalty.selectors`
scoped by `request.business` (another business's objects are 404) and writes through
`loyalty.services`. Domain errors become form errors or messages.

Forms that write carry a hidden key made when the form is shown (the purchase's
`external_id`, the refund's `refund_id`, the adjustment's idempotency key), so a form sent
twice records once.
"""

import calendar
import re
import uuid
from datetime import date, datetime, time, timedelta
from decimal import Decimal

from django import forms
from django.contrib import messages
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db.models import Count, Q, Sum
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import formats, timezone
from django.utils.text import capfirst
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.models import User
from accounts.phones import InvalidPhone, normalize_phone
from accounts.portal import MANAGING_ROLES, PortalForm, money, paginate, portal_view
from loyalty import selectors, services
from loyalty.models import LedgerEntry, LoyaltyProgram, ProgramChange, Transaction
from loyalty.money import ZERO
from svoykrug.exceptions import DomainError

MONEY_FIELD = {"max_digits": 12, "decimal_places": 2}
ISSUING_KINDS = [LedgerEntry.Kind.ACCRUAL, LedgerEntry.Kind.WELCOME, LedgerEntry.Kind.BIRTHDAY]


# --- Helpers --------------------------------------------------------------------------------


def new_key() -> str:
    return uuid.uuid4().hex


def local_midnight(day: date) -> datetime:
    """The start of `day` in the active time zone (the business's, under `portal_view`)."""
    return datetime.combine(day, time.min, tzinfo=timezone.get_current_timezone())


def add_domain_error(form: forms.Form, exc: DomainError, field: str | None = None) -> None:
    """Put a domain error on the form: on the fields it names, else on `field`, with the
    figures it carries (what is available, what is left to refund) spelled out."""
    message = str(exc.message)
    extra = exc.extra or {}
    if "available" in extra:
        message += " " + gettext("Available: %(amount)s.") % {"amount": money(extra["available"])}
    if "max_redeemable" in extra:
        message += " " + gettext("At most %(amount)s can be paid with bonuses.") % {
            "amount": money(extra["max_redeemable"])
        }
    if "refundable" in extra:
        message += " " + gettext("Left to refund: %(amount)s.") % {"amount": money(extra["refundable"])}
    named = [name for name in (exc.fields or {}) if name in form.fields]
    if named:
        for name in named:
            form.add_error(name, message)
    else:
        form.add_error(field if field in form.fields else None, message)


class PhoneSearchField(forms.CharField):
    """A whole phone (normalised to E.164) or a part of one (its digits)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("max_length", 32)
        kwargs.setdefault("label", _("Phone"))
        super().__init__(**kwargs)

    def clean(self, value):
        value = super().clean(value)
        if not value:
            return ""
        try:
            return normalize_phone(value)
        except InvalidPhone:
            digits = re.sub(r"\D", "", value)
            if not digits:
                raise ValidationError(_("Enter a phone number or a part of it.")) from None
            return digits


class PhoneField(forms.CharField):
    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 32)
        kwargs.setdefault("label", _("Customer's phone"))
        kwargs.setdefault(
            "widget", forms.TextInput(attrs={"inputmode": "tel", "autocomplete": "off", "placeholder": "+7"})
        )
        super().__init__(**kwargs)

    def clean(self, value):
        value = super().clean(value)
        try:
            return normalize_phone(value)
        except InvalidPhone as exc:
            raise ValidationError(exc.message) from exc


# --- Dashboard ------------------------------------------------------------------------------


@require_GET
@portal_view()
def dashboard(request):
    """Today's purchases, this month's purchases and bonuses, all-time customers."""
    business = request.business
    day_start = local_midnight(timezone.localdate())
    month_start = day_start.replace(day=1)
    purchases = Transaction.objects.filter(business=business).aggregate(
        today_count=Count("pk", filter=Q(occurred_at__gte=day_start)),
        today_total=Sum("gross_amount", filter=Q(occurred_at__gte=day_start)),
        month_count=Count("pk", filter=Q(occurred_at__gte=month_start)),
        month_total=Sum("gross_amount", filter=Q(occurred_at__gte=month_start)),
        customers=Count("customer", distinct=True),
    )
    bonuses = LedgerEntry.objects.filter(business=business, created_at__gte=month_start).aggregate(
        issued=Sum(
            "amount",
            filter=Q(kind__in=ISSUING_KINDS, lot__business=business)
            | Q(kind=LedgerEntry.Kind.ADJUSTMENT, amount__gt=0),
        ),
        spent=Sum("amount", filter=Q(kind=LedgerEntry.Kind.REDEMPTION)),
    )
    context = {
        "today_count": purchases["today_count"],
        "today_total": purchases["today_total"] or ZERO,
        "month_count": purchases["month_count"],
        "month_total": purchases["month_total"] or ZERO,
        "customers_count": purchases["customers"],
        "issued": bonuses["issued"] or ZERO,
        "spent": -(bonuses["spent"] or ZERO),
        "month_start": month_start,
        "recent": selectors.business_transactions(business=business)[:10],
    }
    return render(request, "portal/loyalty/dashboard.html", context)


# --- Program --------------------------------------------------------------------------------


class ProgramForm(forms.ModelForm):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)

    class Meta:
        model = LoyaltyProgram
        fields = services.PROGRAM_FIELDS
        labels = {"is_active": _("The program is on")}


def _program_page(request, form: ProgramForm, status: int = 200):
    history = paginate(
        request,
        ProgramChange.objects.filter(program__business=request.business).select_related("changed_by"),
        per_page=20,
    )
    for change in history:
        change.rows = [
            (_field_label(field), _shown(values[0]), _shown(values[1]))
            # In the form's order: a JSON column does not keep the keys' order on PostgreSQL.
            for field, values in sorted(change.changes.items(), key=lambda item: _field_order(item[0]))
            if isinstance(values, list | tuple) and len(values) == 2
        ]
    if not request.can_manage:
        for field in form.fields.values():
            field.disabled = True
    return render(request, "portal/loyalty/program.html", {"form": form, "history": history}, status=status)


def _field_order(field: str) -> int:
    fields = services.PROGRAM_FIELDS
    return fields.index(field) if field in fields else len(fields)


def _field_label(field: str) -> str:
    """A program field as the form labels it (a field since removed by its name)."""
    if field in ProgramForm.base_fields:
        return str(ProgramForm.base_fields[field].label)
    try:
        return capfirst(LoyaltyProgram._meta.get_field(field).verbose_name)
    except FieldDoesNotExist:
        return field


def _shown(value) -> str:
    """A value of the change history as the page shows it: yes/no, or a localised number."""
    if isinstance(value, bool):
        return gettext("yes") if value else gettext("no")
    if value is None:
        return "—"
    if isinstance(value, str) and re.fullmatch(r"-?\d+\.\d+", value):
        return formats.number_format(Decimal(value), 2)
    return str(value)


def _current_program(business) -> LoyaltyProgram:
    # Reading must not create the program: a missing one shows the default terms.
    return LoyaltyProgram.objects.filter(business=business).first() or LoyaltyProgram(business=business)


@require_GET
@portal_view()
def program(request):
    """The program's terms (a form for owners and managers, read-only for cashiers) and
    every change of them: who, when, what from what to what."""
    return _program_page(request, ProgramForm(instance=_current_program(request.business)))


@require_POST
@portal_view(roles=MANAGING_ROLES)
def program_update(request):
    form = ProgramForm(request.POST, instance=_current_program(request.business))
    if form.is_valid():
        changes = {field: form.cleaned_data[field] for field in services.PROGRAM_FIELDS}
        try:
            services.update_program(business=request.business, changed_by=request.user, **changes)
        except ValidationError as exc:
            form.add_error(None, exc)
        except DomainError as exc:
            add_domain_error(form, exc)
        else:
            if form.has_changed():
                messages.success(request, gettext("The program is saved."))
            else:
                messages.info(request, gettext("Nothing changed."))
            return redirect("portal:program")
    return _program_page(request, form, status=400)


# --- Customers ------------------------------------------------------------------------------


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


# --- Purchases ------------------------------------------------------------------------------


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


# --- Cashier --------------------------------------------------------------------------------


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


def _receipt(request) -> dict | None:
    raw = request.GET.get("receipt")
    if not raw:
        return None
    try:
        transaction_id = uuid.UUID(raw)
    except ValueError:
        raise Http404 from None
    purchase = _transaction_or_404(request.business, transaction_id)
    return {"purchase": purchase, "summary": selectors.account_summary(purchase.customer)}


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
    context = {"form": form, "quote": quote, "receipt": None}
    return render(request, "portal/loyalty/cashier.html", context, status=400 if form.errors else 200)


# --- Settlement -----------------------------------------------------------------------------


class MonthForm(PortalForm):
    month = forms.RegexField(
        label=_("Month"),
        regex=r"^\d{4}-(0[1-9]|1[0-2])$",
        required=False,
        error_messages={"invalid": _("Enter a month as YYYY-MM.")},
        widget=forms.TextInput(attrs={"type": "month"}),
    )


def _month_start(value: str | None) -> date:
    if value:
        year, month = (int(part) for part in value.split("-"))
        if year >= 2000:
            return date(year, month, 1)
    return timezone.localdate().replace(day=1)


def _next_month(first: date) -> date:
    return first + timedelta(days=calendar.monthrange(first.year, first.month)[1])


@require_GET
@portal_view(roles=MANAGING_ROLES)
def settlement(request):
    """The month's clearing: bonuses issued by one business and spent at another, from
    this business's side — what it owes for its bonuses spent elsewhere, and what others
    owe it for theirs spent here."""
    form = MonthForm(request.GET)
    first = _month_start(form.cleaned_data["month"] if form.is_valid() else None)
    following = _next_month(first)
    business_id = request.business.pk
    rows = selectors.clearing_matrix(
        since=local_midnight(first), until=local_midnight(following), business=request.business
    )
    own = owed_to_us = we_owe = ZERO
    for row in rows:
        if row.issuer_id == business_id and row.spender_id == business_id:
            own += row.amount  # its own bonuses spent at home: nobody owes anybody
        elif row.spender_id == business_id:
            owed_to_us += row.amount
        elif row.issuer_id == business_id:
            we_owe += row.amount
    previous = (first - timedelta(days=1)).replace(day=1)
    context = {
        "form": form,
        "rows": rows,
        "month": first,
        "month_label": formats.date_format(first, "F Y"),
        "previous": previous.strftime("%Y-%m"),
        "following": following.strftime("%Y-%m"),
        "owed_to_us": owed_to_us,
        "we_owe": we_owe,
        "own": own,
        "net": owed_to_us - we_owe,
    }
    return render(request, "portal/loyalty/settlement.html", context)
