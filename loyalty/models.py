"""The loyalty tables: programs, tiers, purchases, refunds and the bonus ledger.

The ledger is append-only. `BonusAccount.balance` is a cached sum that always equals
the sum of the account's `LedgerEntry.amount` and of its lots' `remaining`; every
entry that moves bonuses names the lot it moves them in or out of.
"""

import uuid
from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Round
from django.utils.translation import gettext_lazy as _

from accounts.models import Business

MONEY = {"max_digits": 12, "decimal_places": 2, "default": Decimal("0.00")}
PERCENT = {
    "max_digits": 5,
    "decimal_places": 2,
    "validators": [MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("100"))],
}


class LoyaltyProgram(models.Model):
    """A partner's terms: how much it grants and how much of a check it accepts in bonuses."""

    business = models.OneToOneField(Business, on_delete=models.CASCADE, related_name="loyalty_program")
    accrual_rate = models.DecimalField(_("accrual rate, %"), default=Decimal("5.00"), **PERCENT)
    max_redeem_share = models.DecimalField(
        _("max share of a check payable with bonuses, %"), default=Decimal("30.00"), **PERCENT
    )
    bonus_lifetime_days = models.PositiveIntegerField(
        _("bonus lifetime, days"), default=365, validators=[MinValueValidator(1), MaxValueValidator(3650)]
    )
    hold_days = models.PositiveIntegerField(
        _("hold before bonuses can be spent, days"), default=0, validators=[MaxValueValidator(90)]
    )
    welcome_bonus = models.DecimalField(
        _("welcome bonus"), validators=[MinValueValidator(Decimal("0"))], max_digits=12, decimal_places=2, default=0
    )
    birthday_bonus = models.DecimalField(
        _("birthday bonus"), validators=[MinValueValidator(Decimal("0"))], max_digits=12, decimal_places=2, default=0
    )
    is_active = models.BooleanField(_("active"), default=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("loyalty program")
        verbose_name_plural = _("loyalty programs")
        constraints = [
            models.CheckConstraint(condition=Q(accrual_rate__gte=0, accrual_rate__lte=100), name="program_rate_0_100"),
            models.CheckConstraint(
                condition=Q(max_redeem_share__gte=0, max_redeem_share__lte=100), name="program_share_0_100"
            ),
            models.CheckConstraint(condition=Q(bonus_lifetime_days__gte=1), name="program_lifetime_positive"),
            models.CheckConstraint(
                condition=Q(welcome_bonus__gte=0, birthday_bonus__gte=0), name="program_bonuses_non_negative"
            ),
        ]

    def __str__(self):
        return f"{self.business}: {self.accrual_rate}%"


class ProgramChange(models.Model):
    """One change of a program's terms: which fields, from what to what, by whom, when."""

    program = models.ForeignKey(LoyaltyProgram, on_delete=models.CASCADE, related_name="changes")
    changed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True)
    changed_at = models.DateTimeField(_("changed at"), auto_now_add=True)
    changes = models.JSONField(_("changes"), help_text=_('{"field": ["old", "new"]}'))

    class Meta:
        verbose_name = _("program change")
        verbose_name_plural = _("program changes")
        ordering = ["-changed_at", "-id"]

    def __str__(self):
        return f"{self.program.business} {self.changed_at:%Y-%m-%d %H:%M}: {', '.join(self.changes)}"


class StatusTier(models.Model):
    """A status of the whole circle, earned by spend over the last 365 days at any partner."""

    name = models.CharField(_("name"), max_length=50, unique=True)
    threshold = models.DecimalField(
        _("spend over 365 days from"), max_digits=12, decimal_places=2, unique=True, validators=[MinValueValidator(0)]
    )
    accrual_uplift = models.DecimalField(_("accrual uplift, percentage points"), default=Decimal("0.00"), **PERCENT)
    extra_redeem_share = models.DecimalField(
        _("extra share of a check payable with bonuses, percentage points"), default=Decimal("0.00"), **PERCENT
    )

    class Meta:
        verbose_name = _("status tier")
        verbose_name_plural = _("status tiers")
        ordering = ["threshold"]
        constraints = [
            models.CheckConstraint(condition=Q(threshold__gte=0), name="tier_threshold_non_negative"),
        ]

    def __str__(self):
        return self.name


class Transaction(models.Model):
    """A purchase at a partner, whichever door it came in by."""

    class Source(models.TextChoices):
        API = "api", _("Partner API")
        WEBHOOK = "webhook", _("CRM webhook")
        SYNC = "sync", _("CRM sync")
        IMPORT = "import", _("Import")
        CASHIER = "cashier", _("Cashier in the portal")

    class Status(models.TextChoices):
        COMPLETED = "completed", _("Completed")
        PARTIALLY_REFUNDED = "partially_refunded", _("Partially refunded")
        REFUNDED = "refunded", _("Refunded")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    business = models.ForeignKey(Business, on_delete=models.PROTECT, related_name="transactions")
    customer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="transactions")
    external_id = models.CharField(_("external id"), max_length=100)
    source = models.CharField(_("source"), max_length=10, choices=Source.choices)
    gross_amount = models.DecimalField(_("check amount"), **MONEY)
    bonuses_redeemed = models.DecimalField(_("paid with bonuses"), **MONEY)
    coupon_discount = models.DecimalField(_("coupon discount"), **MONEY)
    paid_amount = models.DecimalField(_("paid in money"), **MONEY)
    bonuses_accrued = models.DecimalField(_("bonuses accrued"), **MONEY)
    refunded_amount = models.DecimalField(_("refunded (of the check)"), **MONEY)
    money_refunded = models.DecimalField(_("money returned"), **MONEY)
    occurred_at = models.DateTimeField(_("occurred at"))
    recorded_at = models.DateTimeField(_("recorded at"), auto_now_add=True)
    # Moves with every change (a refund), so the warehouse export sees the purchase again.
    updated_at = models.DateTimeField(_("updated at"), auto_now=True, db_index=True)
    status = models.CharField(_("status"), max_length=20, choices=Status.choices, default=Status.COMPLETED)
    tier = models.ForeignKey(
        StatusTier, on_delete=models.PROTECT, null=True, blank=True, related_name="+", verbose_name=_("tier in force")
    )
    # A digest of what the caller sent, so a retry with other data is told apart from a retry.
    request_digest = models.CharField(max_length=64, blank=True, editable=False)
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        verbose_name = _("purchase")
        verbose_name_plural = _("purchases")
        ordering = ["-occurred_at", "-recorded_at"]
        constraints = [
            models.UniqueConstraint(fields=["business", "external_id"], name="transaction_unique_external_id"),
            models.CheckConstraint(
                condition=Q(
                    gross_amount__gt=0,
                    bonuses_redeemed__gte=0,
                    coupon_discount__gte=0,
                    paid_amount__gte=0,
                    bonuses_accrued__gte=0,
                    refunded_amount__gte=0,
                    money_refunded__gte=0,
                ),
                name="transaction_amounts_valid",
            ),
            models.CheckConstraint(
                # Rounded: SQLite does this arithmetic in floats (0.33 - 0.09 = 0.24000000000000002).
                condition=Q(paid_amount=Round(F("gross_amount") - F("bonuses_redeemed") - F("coupon_discount"), 2)),
                name="transaction_paid_is_the_rest",
            ),
            models.CheckConstraint(
                condition=Q(refunded_amount__lte=F("gross_amount"), money_refunded__lte=F("paid_amount")),
                name="transaction_refund_within_check",
            ),
        ]
        indexes = [
            models.Index(fields=["customer", "-occurred_at"], name="transaction_customer_time"),
            models.Index(fields=["business", "-occurred_at"], name="transaction_business_time"),
        ]

    def __str__(self):
        return f"{self.business} #{self.external_id}: {self.gross_amount}"


class Refund(models.Model):
    """A full or partial refund of a purchase and what it did to the ledger."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    transaction = models.ForeignKey(Transaction, on_delete=models.PROTECT, related_name="refunds")
    refund_id = models.CharField(_("refund id"), max_length=100)
    amount = models.DecimalField(_("refunded part of the check"), **MONEY)
    money_refunded = models.DecimalField(_("money returned"), **MONEY)
    accrual_reversed = models.DecimalField(_("bonuses taken back"), **MONEY)
    redeemed_returned = models.DecimalField(_("bonuses returned"), **MONEY)
    unrecovered = models.DecimalField(
        _("bonuses that could not be taken back"),
        help_text=_("Already spent by the customer; the issuing business carries them."),
        **MONEY,
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    request_digest = models.CharField(max_length=64, blank=True, editable=False)

    class Meta:
        verbose_name = _("refund")
        verbose_name_plural = _("refunds")
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["transaction", "refund_id"], name="refund_unique_per_transaction"),
            models.CheckConstraint(
                condition=Q(
                    amount__gt=0,
                    money_refunded__gte=0,
                    accrual_reversed__gte=0,
                    redeemed_returned__gte=0,
                    unrecovered__gte=0,
                ),
                name="refund_amounts_valid",
            ),
        ]

    def __str__(self):
        return f"{self.refund_id}: {self.amount}"


class BonusAccount(models.Model):
    """A customer's bonuses across the whole circle. `balance` is the cached sum of the ledger."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="bonus_account")
    balance = models.DecimalField(_("balance"), **MONEY)
    lifetime_earned = models.DecimalField(_("earned in all"), **MONEY)
    # Bonuses a refund should have taken back but found already spent: the next bonuses
    # credited to the account pay this first, so refunding in a clever order keeps nothing.
    clawback_due = models.DecimalField(_("still to take back"), **MONEY)
    tier = models.ForeignKey(StatusTier, on_delete=models.PROTECT, null=True, blank=True, related_name="accounts")
    spend_365 = models.DecimalField(_("spend over 365 days"), **MONEY)
    tier_updated_at = models.DateTimeField(null=True, blank=True)
    # Set by the first purchase in the circle: the one that earns a welcome bonus.
    first_purchase_at = models.DateTimeField(_("first purchase"), null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("bonus account")
        verbose_name_plural = _("bonus accounts")
        constraints = [
            models.CheckConstraint(condition=Q(balance__gte=0), name="account_balance_non_negative"),
            models.CheckConstraint(condition=Q(lifetime_earned__gte=0), name="account_earned_non_negative"),
            models.CheckConstraint(condition=Q(spend_365__gte=0), name="account_spend_non_negative"),
            models.CheckConstraint(condition=Q(clawback_due__gte=0), name="account_clawback_non_negative"),
        ]

    def __str__(self):
        return f"{self.user}: {self.balance}"


class BonusLot(models.Model):
    """One batch of bonuses: who issued it, how much is left, from when it can be spent, when it expires."""

    account = models.ForeignKey(BonusAccount, on_delete=models.PROTECT, related_name="lots")
    # The partner that issued (and pays for) these bonuses; empty for the platform's own.
    business = models.ForeignKey(Business, on_delete=models.PROTECT, null=True, blank=True, related_name="issued_lots")
    amount = models.DecimalField(_("amount"), **MONEY)
    remaining = models.DecimalField(_("remaining"), **MONEY)
    spendable_from = models.DateTimeField(_("spendable from"))
    expires_at = models.DateTimeField(_("expires at"))
    transaction = models.ForeignKey(Transaction, on_delete=models.PROTECT, null=True, blank=True, related_name="lots")
    tier = models.ForeignKey(
        StatusTier, on_delete=models.PROTECT, null=True, blank=True, related_name="+", verbose_name=_("tier in force")
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("bonus lot")
        verbose_name_plural = _("bonus lots")
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="lot_amount_positive"),
            models.CheckConstraint(
                condition=Q(remaining__gte=0, remaining__lte=F("amount")), name="lot_remaining_valid"
            ),
            models.CheckConstraint(condition=Q(expires_at__gt=F("spendable_from")), name="lot_expires_after_spendable"),
        ]
        indexes = [
            models.Index(
                fields=["account", "expires_at"], condition=Q(remaining__gt=0), name="lot_open_by_account_expiry"
            ),
            models.Index(fields=["expires_at"], condition=Q(remaining__gt=0), name="lot_open_by_expiry"),
        ]

    def __str__(self):
        return f"{self.remaining}/{self.amount} from {self.business}"


class LedgerEntry(models.Model):
    """One movement of bonuses, never changed or deleted. Positive credits a lot, negative debits one."""

    class Kind(models.TextChoices):
        ACCRUAL = "accrual", _("Accrual")
        WELCOME = "welcome", _("Welcome bonus")
        BIRTHDAY = "birthday", _("Birthday bonus")
        REDEMPTION = "redemption", _("Redemption")
        EXPIRY = "expiry", _("Expiry")
        REFUND_REVERSAL = "refund_reversal", _("Taken back on refund")
        REFUND_RETURN = "refund_return", _("Returned on refund")
        ADJUSTMENT = "adjustment", _("Adjustment")

    account = models.ForeignKey(BonusAccount, on_delete=models.PROTECT, related_name="entries")
    kind = models.CharField(_("kind"), max_length=20, choices=Kind.choices)
    amount = models.DecimalField(_("amount"), max_digits=12, decimal_places=2)
    business = models.ForeignKey(
        Business, on_delete=models.PROTECT, null=True, blank=True, related_name="ledger_entries"
    )
    transaction = models.ForeignKey(
        Transaction, on_delete=models.PROTECT, null=True, blank=True, related_name="ledger_entries"
    )
    refund = models.ForeignKey(Refund, on_delete=models.PROTECT, null=True, blank=True, related_name="ledger_entries")
    lot = models.ForeignKey(BonusLot, on_delete=models.PROTECT, related_name="entries")
    idempotency_key = models.CharField(max_length=200, unique=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reason = models.CharField(_("reason"), max_length=500, blank=True)
    created_at = models.DateTimeField(_("created at"))

    class Meta:
        verbose_name = _("ledger entry")
        verbose_name_plural = _("ledger entries")
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=~Q(amount=0), name="entry_amount_not_zero"),
            models.CheckConstraint(
                condition=Q(kind__in=["accrual", "welcome", "birthday", "refund_return"], amount__gt=0)
                | Q(kind__in=["redemption", "expiry", "refund_reversal"], amount__lt=0)
                | Q(kind="adjustment"),
                name="entry_sign_matches_kind",
            ),
            models.CheckConstraint(condition=~Q(kind="adjustment") | ~Q(reason=""), name="entry_adjustment_has_reason"),
        ]
        indexes = [models.Index(fields=["account", "-created_at"], name="entry_account_time")]

    def __str__(self):
        return f"{self.get_kind_display()} {self.amount}"
