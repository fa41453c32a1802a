"""The cross-promo tables: chains between partners, the coupons they issue, referrals.

A chain sends a source partner's customers to a target partner: a purchase at the source
that meets the trigger issues a coupon for a reward at the target. The chain row carries
the counters its limits are checked against (under its row lock, see
crosspromo.services.coupons), so a limit holds however many purchases race for it.
"""

from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _

from accounts.models import Business
from svoykrug import codes

MONEY = {"max_digits": 12, "decimal_places": 2}
ZERO = Decimal("0.00")

# Coupon codes are typed by cashiers: the alphabet has no look-alikes (svoykrug.codes).
CODE_LENGTH = 8  # 25^8 ≈ 1.5e11 codes
QR_PREFIX = "SVOYKRUG:COUPON:"


def new_coupon_code() -> str:
    return codes.random_code(CODE_LENGTH)


def normalize_code(text: str) -> str:
    """A code as typed or scanned: case, spaces, dashes and the QR prefix do not matter."""
    return codes.normalize_code(text, qr_prefix=QR_PREFIX)


class CrossPromoChain(models.Model):
    class Status(models.TextChoices):
        PROPOSED = "proposed", _("Proposed")
        ACCEPTED = "accepted", _("Accepted, not started yet")
        DECLINED = "declined", _("Declined")
        ACTIVE = "active", _("Active")
        PAUSED = "paused", _("Paused")
        ENDED = "ended", _("Ended")

    class Reward(models.TextChoices):
        PERCENT = "percent", _("Percentage discount")
        FIXED = "fixed", _("Fixed discount")
        BONUS = "bonus", _("Extra bonuses")

    source = models.ForeignKey(
        Business, on_delete=models.PROTECT, related_name="chains_out", verbose_name=_("source partner")
    )
    target = models.ForeignKey(
        Business, on_delete=models.PROTECT, related_name="chains_in", verbose_name=_("target partner")
    )
    title = models.CharField(_("title"), max_length=120, blank=True)
    status = models.CharField(_("status"), max_length=20, choices=Status.choices, default=Status.PROPOSED)

    # The trigger: a purchase at the source of at least this much money paid...
    min_purchase_amount = models.DecimalField(
        _("minimum purchase"), validators=[MinValueValidator(ZERO)], default=ZERO, **MONEY
    )
    # ...optionally only the customer's first purchase at the source, and only customers
    # who never bought at the target.
    first_purchase_only = models.BooleanField(_("only the first purchase at the source"), default=False)
    new_to_target_only = models.BooleanField(_("only customers new to the target"), default=False)

    # The reward at the target.
    reward_kind = models.CharField(_("reward"), max_length=10, choices=Reward.choices)
    reward_value = models.DecimalField(_("reward value"), validators=[MinValueValidator(Decimal("0.01"))], **MONEY)
    max_discount = models.DecimalField(
        _("largest discount"),
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("0.01"))],
        help_text=_("For a percentage discount: the most one coupon takes off."),
        **MONEY,
    )
    min_target_purchase = models.DecimalField(
        _("minimum purchase at the target"), validators=[MinValueValidator(ZERO)], default=ZERO, **MONEY
    )
    coupon_lifetime_days = models.PositiveIntegerField(
        _("coupon lifetime, days"), default=30, validators=[MinValueValidator(1), MaxValueValidator(365)]
    )

    # Limits. The budget counts what the rewards may cost: each active coupon reserves its
    # largest value, a redemption replaces that with what it gave, a lapsed coupon frees it.
    per_customer_limit = models.PositiveIntegerField(
        _("coupons per customer"), default=1, validators=[MinValueValidator(1)]
    )
    total_limit = models.PositiveIntegerField(_("coupons in all"), null=True, blank=True)
    budget = models.DecimalField(_("budget"), null=True, blank=True, validators=[MinValueValidator(ZERO)], **MONEY)
    starts_at = models.DateTimeField(_("starts at"))
    ends_at = models.DateTimeField(_("ends at"), null=True, blank=True)

    # Who pays for the rewards: the target by default; a split may be agreed.
    target_share_percent = models.PositiveIntegerField(
        _("target's share of the reward cost, %"), default=100, validators=[MaxValueValidator(100)]
    )

    issued_count = models.PositiveIntegerField(_("coupons issued"), default=0)
    redeemed_count = models.PositiveIntegerField(_("coupons redeemed"), default=0)
    budget_reserved = models.DecimalField(_("budget reserved"), default=ZERO, **MONEY)
    budget_spent = models.DecimalField(_("budget spent"), default=ZERO, **MONEY)

    proposed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(_("decided at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("cross-promo chain")
        verbose_name_plural = _("cross-promo chains")
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=~Q(source=F("target")), name="chain_two_partners"),
            models.CheckConstraint(condition=Q(reward_value__gt=0), name="chain_reward_positive"),
            models.CheckConstraint(
                condition=~Q(reward_kind="percent") | Q(reward_value__lte=100), name="chain_percent_at_most_100"
            ),
            models.CheckConstraint(condition=Q(target_share_percent__lte=100), name="chain_share_0_100"),
            models.CheckConstraint(
                condition=Q(ends_at__isnull=True) | Q(ends_at__gt=F("starts_at")), name="chain_ends_after_start"
            ),
            models.CheckConstraint(
                condition=Q(total_limit__isnull=True) | Q(issued_count__lte=F("total_limit")),
                name="chain_within_total_limit",
            ),
            models.CheckConstraint(
                condition=Q(budget__isnull=True) | Q(budget_reserved__lte=F("budget") - F("budget_spent")),
                name="chain_within_budget",
            ),
        ]
        indexes = [models.Index(fields=["source", "status"]), models.Index(fields=["target", "status"])]

    def __str__(self):
        return self.title or f"{self.source} → {self.target}"

    def largest_reward(self) -> Decimal | None:
        """The most one coupon can cost: what it reserves of the budget (None: no bound,
        a percentage without a largest discount)."""
        if self.reward_kind == self.Reward.PERCENT:
            return self.max_discount
        return self.reward_value


class Coupon(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", _("Active")
        REDEEMED = "redeemed", _("Redeemed")
        EXPIRED = "expired", _("Expired")
        VOID = "void", _("Void")

    code = models.CharField(_("code"), max_length=16, unique=True, default=new_coupon_code)
    chain = models.ForeignKey(CrossPromoChain, on_delete=models.PROTECT, related_name="coupons")
    customer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="coupons")
    issuing_transaction = models.ForeignKey(
        "loyalty.Transaction", on_delete=models.PROTECT, related_name="coupons_issued"
    )
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.ACTIVE)
    issued_at = models.DateTimeField(_("issued at"))
    expires_at = models.DateTimeField(_("expires at"))
    reserved = models.DecimalField(_("budget reserved"), default=ZERO, **MONEY)
    redeemed_at = models.DateTimeField(_("redeemed at"), null=True, blank=True)
    redeeming_transaction = models.OneToOneField(
        "loyalty.Transaction",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="coupon_redeemed",
    )
    value_given = models.DecimalField(_("discount or bonuses given"), default=ZERO, **MONEY)
    void_reason = models.CharField(_("why void"), max_length=200, blank=True)
    # Every change moves it: the warehouse export reads coupons by it.
    updated_at = models.DateTimeField(_("updated at"), auto_now=True, db_index=True)

    class Meta:
        verbose_name = _("coupon")
        verbose_name_plural = _("coupons")
        ordering = ["-issued_at"]
        constraints = [
            # A purchase delivered twice issues nothing new.
            models.UniqueConstraint(fields=["chain", "issuing_transaction"], name="coupon_once_per_purchase"),
            models.CheckConstraint(condition=Q(expires_at__gt=F("issued_at")), name="coupon_expires_after_issue"),
            models.CheckConstraint(
                condition=~Q(status="redeemed") | Q(redeemed_at__isnull=False, redeeming_transaction__isnull=False),
                name="coupon_redeemed_has_purchase",
            ),
        ]
        indexes = [
            models.Index(fields=["customer", "status", "expires_at"]),
            models.Index(fields=["status", "expires_at"]),
        ]

    def __str__(self):
        return self.code

    @property
    def qr_payload(self) -> str:
        return QR_PREFIX + self.code


class ReferralCode(models.Model):
    """A customer's personal invitation code."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="referral_code")
    code = models.CharField(_("code"), max_length=16, unique=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("referral code")
        verbose_name_plural = _("referral codes")

    def __str__(self):
        return self.code


class Referral(models.Model):
    """A friend who came with a customer's code: one per invited person (their phone)."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Waiting for a first purchase")
        REWARDED = "rewarded", _("Rewarded")
        REFUSED = "refused", _("Refused")

    inviter = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="referrals_made")
    friend = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="referred_by")
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.PENDING)
    refused_reason = models.CharField(_("why refused"), max_length=200, blank=True)
    qualifying_transaction = models.OneToOneField(
        "loyalty.Transaction", on_delete=models.PROTECT, null=True, blank=True, related_name="referral"
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    rewarded_at = models.DateTimeField(_("rewarded at"), null=True, blank=True)

    class Meta:
        verbose_name = _("referral")
        verbose_name_plural = _("referrals")
        constraints = [
            models.CheckConstraint(condition=~Q(inviter=F("friend")), name="referral_not_oneself"),
        ]
        indexes = [models.Index(fields=["inviter", "status", "rewarded_at"])]

    def __str__(self):
        return f"{self.inviter} → {self.friend}"
