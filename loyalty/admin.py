"""The loyalty app in Django admin: staff see everything, and change bonuses only through services.

Programs are saved through `services.update_program` (so every change is in the history),
balances change only through the "Adjust balance…" action (`services.adjust_balance`), and
purchases, refunds, lots and ledger entries are read-only.
"""

import contextlib
import uuid

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.widgets import AutocompleteSelect
from django.template import engines
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from accounts.models import Business
from accounts.phones import InvalidPhone, normalize_phone
from loyalty import services
from loyalty.models import (
    BonusAccount,
    BonusLot,
    LedgerEntry,
    LoyaltyProgram,
    ProgramChange,
    Refund,
    StatusTier,
    Transaction,
)
from svoykrug.admin import ReadOnlyAdminMixin
from svoykrug.exceptions import DomainError

# --- Shared pieces ------------------------------------------------------------------------


class ReadOnlyInline(ReadOnlyAdminMixin, admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True


class PhoneSearchMixin:
    """Search also finds the phone as staff type it ("8 (999) 555-01-23"), not only as stored."""

    phone_lookup: str

    def get_search_results(self, request, queryset, search_term):
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        with contextlib.suppress(InvalidPhone):
            phone = normalize_phone(search_term)
            results = results | queryset.filter(**{self.phone_lookup: phone})
        return results, may_have_duplicates


# --- Programs and tiers -------------------------------------------------------------------


class ProgramChangeInline(ReadOnlyInline):
    model = ProgramChange
    fields = ["changed_at", "changed_by", "changes"]
    readonly_fields = fields
    show_change_link = False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("changed_by")


@admin.register(LoyaltyProgram)
class LoyaltyProgramAdmin(admin.ModelAdmin):
    list_display = [
        "business",
        "accrual_rate",
        "max_redeem_share",
        "bonus_lifetime_days",
        "hold_days",
        "welcome_bonus",
        "birthday_bonus",
        "is_active",
        "updated_at",
    ]
    list_filter = ["is_active", "business__category"]
    search_fields = ["business__name", "business__slug"]
    list_select_related = ["business"]
    autocomplete_fields = ["business"]
    fields = ["business", *services.PROGRAM_FIELDS, "updated_at"]
    inlines = [ProgramChangeInline]

    def get_readonly_fields(self, request, obj=None):
        # A program belongs to its business for good.
        return ["business", "updated_at"] if obj else ["updated_at"]

    def save_model(self, request, obj, form, change):
        """Through the service, so the change is recorded with who made it; on a change,
        only the fields this form changed, so a colleague's edit in between is not undone."""
        changed = {
            field: form.cleaned_data[field]
            for field in services.PROGRAM_FIELDS
            if field in form.cleaned_data and (not change or field in form.changed_data)
        }
        program = services.update_program(business=obj.business, changed_by=request.user, **changed)
        obj.pk = program.pk
        obj.updated_at = program.updated_at


@admin.register(StatusTier)
class StatusTierAdmin(admin.ModelAdmin):
    list_display = ["name", "threshold", "accrual_uplift", "extra_redeem_share"]
    search_fields = ["name"]
    ordering = ["threshold"]


# --- Purchases ----------------------------------------------------------------------------


class RefundInline(ReadOnlyInline):
    model = Refund
    fields = [
        "refund_id",
        "amount",
        "money_refunded",
        "accrual_reversed",
        "redeemed_returned",
        "unrecovered",
        "created_at",
    ]
    readonly_fields = fields


@admin.register(Transaction)
class TransactionAdmin(PhoneSearchMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "external_id",
        "business",
        "customer",
        "gross_amount",
        "bonuses_redeemed",
        "coupon_discount",
        "paid_amount",
        "bonuses_accrued",
        "refunded_amount",
        "status",
        "source",
        "occurred_at",
    ]
    list_filter = ["status", "source", "occurred_at", "business"]
    search_fields = ["external_id", "customer__phone"]
    phone_lookup = "customer__phone"
    search_help_text = _("External id or customer phone.")
    list_select_related = ["business", "customer"]
    date_hierarchy = "occurred_at"
    readonly_fields = ["id", "recorded_at"]
    inlines = [RefundInline]


@admin.register(Refund)
class RefundAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "refund_id",
        "transaction",
        "amount",
        "money_refunded",
        "accrual_reversed",
        "redeemed_returned",
        "unrecovered",
        "created_at",
    ]
    list_filter = ["created_at", "transaction__business"]
    search_fields = ["refund_id", "transaction__external_id", "transaction__customer__phone"]
    list_select_related = ["transaction__business"]


# --- The ledger ---------------------------------------------------------------------------


class BonusLotInline(ReadOnlyInline):
    model = BonusLot
    fields = ["business", "amount", "remaining", "spendable_from", "expires_at", "transaction", "tier", "created_at"]
    readonly_fields = fields
    ordering = ["-expires_at", "-id"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("business", "transaction__business", "tier")


class AdjustBalanceForm(forms.Form):
    amount = forms.DecimalField(
        label=_("Amount"),
        max_digits=12,
        decimal_places=2,
        help_text=_("Positive adds bonuses, negative takes them away (soonest-expiring first)."),
    )
    reason = forms.CharField(label=_("Reason"), max_length=500, widget=forms.Textarea(attrs={"rows": 3, "cols": 60}))
    business = forms.ModelChoiceField(
        label=_("Business"),
        queryset=Business.objects.all(),
        required=False,
        help_text=_("The partner that issues the bonuses added; empty for the circle itself."),
        widget=AutocompleteSelect(BonusLot._meta.get_field("business"), admin.site),
    )
    # One id per form shown: submitting the same form twice adjusts each account once.
    token = forms.UUIDField(widget=forms.HiddenInput)

    def clean_amount(self):
        amount = self.cleaned_data["amount"]
        if amount == 0:
            raise forms.ValidationError(_("Enter an amount other than zero."))
        return amount


ADJUST_BALANCE_TEMPLATE = engines["django"].from_string(
    """{% extends "admin/base_site.html" %}
{% load i18n admin_urls %}
{% block extrahead %}{{ block.super }}{{ media }}{% endblock %}
{% block bodyclass %}{{ block.super }} app-{{ opts.app_label }} model-{{ opts.model_name }}{% endblock %}
{% block breadcrumbs %}
<div class="breadcrumbs">
<a href="{% url 'admin:index' %}">{% translate 'Home' %}</a>
&rsaquo; <a href="{% url 'admin:app_list' app_label=opts.app_label %}">{{ opts.app_config.verbose_name }}</a>
&rsaquo; <a href="{% url opts|admin_urlname:'changelist' %}">{{ opts.verbose_name_plural|capfirst }}</a>
&rsaquo; {{ title }}
</div>
{% endblock %}
{% block content %}
<p>{{ intro }}</p>
<ul>{% for account in accounts %}<li>{{ account.user }} — {{ account.balance }}</li>{% endfor %}</ul>
<form method="post">{% csrf_token %}
<fieldset class="module aligned">
{{ form.non_field_errors }}
{% for field in form.hidden_fields %}{{ field }}{% endfor %}
{% for field in form.visible_fields %}
<div class="form-row">{{ field.errors }}<div class="flex-container">{{ field.label_tag }} {{ field }}</div>
{% if field.help_text %}<div class="help">{{ field.help_text }}</div>{% endif %}</div>
{% endfor %}
</fieldset>
{% for account in accounts %}
<input type="hidden" name="{{ action_checkbox_name }}" value="{{ account.pk }}">
{% endfor %}
<input type="hidden" name="action" value="adjust_balance">
<div class="submit-row">
<input type="submit" name="apply" value="{{ submit_label }}" class="default">
<a href="{% url opts|admin_urlname:'changelist' %}" class="button cancel-link">{% translate 'Cancel' %}</a>
</div>
</form>
{% endblock %}"""
)


@admin.register(BonusAccount)
class BonusAccountAdmin(PhoneSearchMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["user", "balance", "tier", "spend_365", "lifetime_earned", "clawback_due", "updated_at"]
    list_filter = ["tier"]
    search_fields = ["user__phone"]
    phone_lookup = "user__phone"
    list_select_related = ["user", "tier"]
    fields = [
        "user",
        "balance",
        "lifetime_earned",
        "clawback_due",
        "tier",
        "spend_365",
        "tier_updated_at",
        "created_at",
        "updated_at",
        "ledger",
    ]
    readonly_fields = fields
    inlines = [BonusLotInline]
    actions = ["adjust_balance"]

    @admin.display(description=_("ledger"))
    def ledger(self, account):
        url = reverse("admin:loyalty_ledgerentry_changelist") + f"?account__id__exact={account.pk}"
        return format_html('<a href="{}">{}</a>', url, _("All entries of this account"))

    def has_adjust_permission(self, request):
        # The admin itself never edits an account row; adjusting goes through the ledger.
        return request.user.has_perm("loyalty.change_bonusaccount")

    @admin.action(description=_("Adjust balance…"), permissions=["adjust"])
    def adjust_balance(self, request, queryset):
        accounts = list(queryset.select_related("user").order_by("pk"))
        if "apply" in request.POST:
            form = AdjustBalanceForm(request.POST)
            if form.is_valid():
                self._adjust(request, accounts, form.cleaned_data)
                return None  # back to the list, with the messages
        else:
            form = AdjustBalanceForm(initial={"token": uuid.uuid4()})
        context = {
            **self.admin_site.each_context(request),
            "title": _("Adjust balance"),
            "intro": _("The adjustment is written to the ledger of each of these accounts, with the reason."),
            "submit_label": _("Adjust"),
            "opts": self.opts,
            "form": form,
            "media": self.media + form.media,
            "accounts": accounts,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, ADJUST_BALANCE_TEMPLATE, context)

    def _adjust(self, request, accounts, data):
        adjusted = 0
        for account in accounts:
            try:
                services.adjust_balance(
                    user=account.user,
                    amount=data["amount"],
                    reason=data["reason"],
                    created_by=request.user,
                    business=data["business"],
                    idempotency_key=f"admin-adjust:{data['token']}:{account.pk}",
                )
            except DomainError as exc:
                self.message_user(
                    request,
                    _("%(account)s: not adjusted. %(error)s") % {"account": account.user, "error": exc.message},
                    messages.ERROR,
                )
            else:
                adjusted += 1
        if adjusted:
            self.message_user(
                request,
                ngettext("Adjusted %(count)d account.", "Adjusted %(count)d accounts.", adjusted) % {"count": adjusted},
                messages.SUCCESS,
            )


@admin.register(BonusLot)
class BonusLotAdmin(PhoneSearchMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "account", "business", "amount", "remaining", "spendable_from", "expires_at", "created_at"]
    list_filter = ["business", "expires_at"]
    search_fields = ["account__user__phone"]
    phone_lookup = "account__user__phone"
    list_select_related = ["account__user", "business"]


@admin.register(LedgerEntry)
class LedgerEntryAdmin(PhoneSearchMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "created_at",
        "customer",
        "kind",
        "amount",
        "business",
        "transaction__external_id",
        "reason",
        "created_by",
    ]
    list_filter = ["kind", "business", "created_at"]
    # Keys of one operation share a prefix ("txn:<id>:lot:7"): search by its start.
    search_fields = ["account__user__phone", "^idempotency_key"]
    search_help_text = _("Customer phone, or the start of an idempotency key.")
    phone_lookup = "account__user__phone"
    list_select_related = ["account__user", "business", "transaction", "created_by"]
    date_hierarchy = "created_at"

    @admin.display(description=_("customer"), ordering="account__user__phone")
    def customer(self, entry):
        return entry.account.user
