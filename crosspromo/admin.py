"""The cross-promo app in Django admin: staff see every chain, coupon and referral, and end
chains only through the service.

Chains are proposed and decided by the partners (`services.create_chain`, `accept_chain`),
and their counters and budget are kept under the chain's row lock by the coupon services,
so the admin changes no field: ending a chain is the "End the selected chains" action
(`services.end_chain`). Coupons, referrals and referral codes are read-only.
"""

import contextlib

from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from accounts.phones import InvalidPhone, normalize_phone
from crosspromo import services
from crosspromo.models import Coupon, CrossPromoChain, Referral, ReferralCode, normalize_code
from svoykrug.admin import ReadOnlyAdminMixin


class ExactSearchMixin:
    """Search also finds a phone as staff type it ("8 (916) 000-00-01") and a coupon code as
    scanned ("SVOYKRUG:COUPON:…") or dictated with dashes, not only as stored."""

    phone_lookup: str | None = None
    code_lookup: str | None = None

    def get_search_results(self, request, queryset, search_term):
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        if self.phone_lookup:
            with contextlib.suppress(InvalidPhone):
                results = results | queryset.filter(**{self.phone_lookup: normalize_phone(search_term)})
        if self.code_lookup and (code := normalize_code(search_term)):
            results = results | queryset.filter(**{self.code_lookup: code})
        return results, may_have_duplicates


# --- Chains ---------------------------------------------------------------------------------


@admin.register(CrossPromoChain)
class CrossPromoChainAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "__str__",
        "source",
        "target",
        "status",
        "reward",
        "issued_count",
        "redeemed_count",
        "budget",
        "budget_spent",
        "budget_reserved",
        "starts_at",
        "ends_at",
    ]
    list_filter = [
        "status",
        "reward_kind",
        ("source", admin.RelatedOnlyFieldListFilter),
        ("target", admin.RelatedOnlyFieldListFilter),
    ]
    search_fields = ["source__name", "target__name", "title"]
    search_help_text = _("Partner name or chain title.")
    list_select_related = ["source", "target"]
    date_hierarchy = "starts_at"
    fieldsets = [
        (None, {"fields": ["title", "source", "target", "status", "reward"]}),
        (
            _("Trigger"),
            {"fields": ["min_purchase_amount", "first_purchase_only", "new_to_target_only"]},
        ),
        (
            _("Reward"),
            {
                "fields": [
                    "reward_kind",
                    "reward_value",
                    "max_discount",
                    "min_target_purchase",
                    "coupon_lifetime_days",
                    "target_share_percent",
                ]
            },
        ),
        (_("Limits"), {"fields": ["per_customer_limit", "total_limit", "budget", "starts_at", "ends_at"]}),
        (_("Counters"), {"fields": ["issued_count", "redeemed_count", "budget_reserved", "budget_spent"]}),
        (_("History"), {"fields": ["proposed_by", "decided_by", "decided_at", "created_at", "updated_at"]}),
    ]
    readonly_fields = ["reward", "created_at", "updated_at"]
    actions = ["end_chains"]

    @admin.display(description=_("reward"))
    def reward(self, chain):
        return services.describe_reward(chain)

    def has_end_permission(self, request):
        # The admin never edits a chain row; ending goes through the service and its lock.
        return request.user.has_perm("crosspromo.change_crosspromochain")

    @admin.action(description=_("End the selected chains"), permissions=["end"])
    def end_chains(self, request, queryset):
        ended = 0
        for chain in queryset.select_related("source", "target").order_by("pk"):
            try:
                services.end_chain(chain, business=None, by=request.user)
            except services.ChainError as exc:
                self.message_user(
                    request,
                    _("%(chain)s: not ended. %(error)s") % {"chain": chain, "error": exc.message},
                    messages.ERROR,
                )
            else:
                ended += 1
        if ended:
            self.message_user(
                request,
                ngettext("Ended %(count)d chain.", "Ended %(count)d chains.", ended) % {"count": ended},
                messages.SUCCESS,
            )


# --- Coupons --------------------------------------------------------------------------------


@admin.register(Coupon)
class CouponAdmin(ExactSearchMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "code",
        "customer",
        "chain",
        "status",
        "issued_at",
        "expires_at",
        "redeemed_at",
        "value_given",
    ]
    list_filter = ["status", ("chain__target", admin.RelatedOnlyFieldListFilter), "issued_at"]
    search_fields = ["code", "customer__phone"]
    search_help_text = _("Coupon code or customer phone.")
    phone_lookup = "customer__phone"
    code_lookup = "code"
    list_select_related = ["customer", "chain__source", "chain__target"]
    date_hierarchy = "issued_at"


# --- Referrals ------------------------------------------------------------------------------


@admin.register(ReferralCode)
class ReferralCodeAdmin(ExactSearchMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["code", "user", "created_at"]
    search_fields = ["code", "user__phone"]
    search_help_text = _("Referral code or customer phone.")
    phone_lookup = "user__phone"
    list_select_related = ["user"]


@admin.register(Referral)
class ReferralAdmin(ExactSearchMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["inviter", "friend", "status", "created_at", "rewarded_at"]
    list_filter = ["status", "created_at"]
    search_fields = ["inviter__phone", "friend__phone"]
    search_help_text = _("Phone of the inviter or of the friend.")
    list_select_related = ["inviter", "friend"]
    date_hierarchy = "created_at"

    def get_search_results(self, request, queryset, search_term):
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        with contextlib.suppress(InvalidPhone):
            phone = normalize_phone(search_term)
            results = results | queryset.filter(inviter__phone=phone) | queryset.filter(friend__phone=phone)
        return results, may_have_duplicates
