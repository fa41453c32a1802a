"""Recording a purchase once, whichever door it came in by."""

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.models import Business, User
from accounts.services import get_or_create_customer
from crosspromo import services as crosspromo
from crosspromo.models import Coupon, normalize_code
from loyalty.models import (
    BonusAccount,
    LedgerEntry,
    StatusTier,
    Transaction,
)
from loyalty.money import ZERO, percent_of, round_down
from loyalty.services.errors import IdempotencyConflict, InvalidPurchase
from loyalty.services.ledger import _credit, _lock_account, _redeem, accrual_rate, get_account, get_program
from loyalty.services.tiers import _set_tier
from notifications.services import batched as notifications_batched


@dataclass(frozen=True)
class PurchaseResult:
    transaction: Transaction
    created: bool
    balance: Decimal
    tier: StatusTier | None
    coupon_code: str | None = None  # the cross-promo coupon redeemed on it


def _digest(**fields) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()


def _validate_purchase(*, amount: Decimal, redeem: Decimal, coupon_discount: Decimal, occurred_at: datetime, now):
    if amount <= 0 or amount > settings.LOYALTY_MAX_CHECK_AMOUNT:
        raise InvalidPurchase(
            _("The check amount must be above zero and at most %(max)s.") % {"max": settings.LOYALTY_MAX_CHECK_AMOUNT},
            fields={"amount": [_("Out of range.")]},
        )
    if amount != round_down(amount) or redeem != round_down(redeem) or coupon_discount != round_down(coupon_discount):
        raise InvalidPurchase(_("Amounts have at most two decimal places."))
    if redeem < 0 or coupon_discount < 0 or redeem + coupon_discount > amount:
        raise InvalidPurchase(_("Bonuses and coupon discount cannot exceed the check."))
    if timezone.is_naive(occurred_at):
        raise InvalidPurchase(_("The purchase time needs a time zone."), fields={"occurred_at": [_("No time zone.")]})
    if occurred_at > now + timedelta(seconds=settings.LOYALTY_FUTURE_SKEW_SECONDS):
        raise InvalidPurchase(_("The purchase time is in the future."), fields={"occurred_at": [_("In the future.")]})
    if occurred_at < now - timedelta(days=settings.LOYALTY_MAX_BACKDATE_DAYS):
        raise InvalidPurchase(_("The purchase is too old to be recorded."), fields={"occurred_at": [_("Too old.")]})


def record_transaction(
    *,
    business: Business,
    external_id: str,
    amount: Decimal,
    customer: User | None = None,
    phone: str | None = None,
    redeem: Decimal = ZERO,
    coupon_discount: Decimal = ZERO,
    coupon: str | None = None,
    occurred_at: datetime | None = None,
    source: str = Transaction.Source.API,
    recorded_by: User | None = None,
) -> PurchaseResult:
    """Record a purchase once: spend the bonuses asked for, accrue on the money paid, grant
    the welcome bonus on the customer's first purchase in the circle, update the tier, and
    issue the coupons of the partner's cross-promo chains the purchase triggers.

    `coupon` is a cross-promo coupon's code to redeem: its discount enters the purchase as
    the coupon discount (no bonuses accrue on it), or its extra bonuses are credited; a
    coupon that cannot be used raises InvalidPurchase naming the field `coupon`. A caller's
    own `coupon_discount` (a partner's own promotion) cannot be combined with one.

    The same (business, external_id) again with the same data returns the first result
    (`created=False`); with other data it raises IdempotencyConflict. A phone new to the
    circle gets a customer account that its owner claims by logging in; a refused purchase
    leaves no such account behind, as everything here is one database transaction."""
    now = timezone.now()
    # The caller's own time goes into the retry digest; the default "now" does not.
    stated_time = occurred_at
    occurred_at = occurred_at or now
    amount, redeem, coupon_discount = Decimal(amount), Decimal(redeem), Decimal(coupon_discount)
    external_id = str(external_id).strip()
    if not external_id or len(external_id) > 100:
        raise InvalidPurchase(
            _("The purchase id must be 1 to 100 characters."), fields={"external_id": [_("Invalid.")]}
        )
    if customer is None and not phone:
        raise InvalidPurchase(_("A purchase needs the customer's phone."), fields={"phone": [_("Required.")]})
    if coupon and coupon_discount:
        raise InvalidPurchase(
            _("A coupon cannot be combined with another coupon discount."), fields={"coupon": [_("Invalid.")]}
        )
    digest = None
    try:
        # One transaction, and the notifications it causes in one task after it commits.
        with transaction.atomic(), notifications_batched():
            if customer is None:
                customer = get_or_create_customer(phone)[0]
            fields = {"customer": str(customer.pk), "amount": amount, "redeem": redeem, "coupon": coupon_discount}
            if coupon:
                fields["coupon_code"] = normalize_code(coupon)
            digest = _digest(**fields, occurred_at=stated_time)
            existing = Transaction.objects.filter(business=business, external_id=external_id).first()
            if existing is not None:
                return _replay_purchase(existing, digest)
            _validate_purchase(
                amount=amount, redeem=redeem, coupon_discount=coupon_discount, occurred_at=occurred_at, now=now
            )
            if not customer.is_active:
                raise InvalidPurchase(_("This customer's account is closed."))
            account = _lock_account(customer)
            program = get_program(business)
            tier = account.tier
            claim = _claim_coupon(coupon, business, customer, amount, redeem) if coupon else None
            if claim is not None:
                coupon_discount = claim.discount
            paid = amount - redeem - coupon_discount
            accrued = percent_of(paid, accrual_rate(program, tier))
            # A duplicate id fails this INSERT and rolls the whole block back (see below).
            purchase = Transaction.objects.create(
                business=business,
                customer=customer,
                external_id=external_id,
                source=source,
                gross_amount=amount,
                bonuses_redeemed=redeem,
                coupon_discount=coupon_discount,
                paid_amount=paid,
                bonuses_accrued=accrued,
                occurred_at=occurred_at,
                tier=tier,
                request_digest=digest,
                recorded_by=recorded_by,
            )
            if redeem > 0:
                _redeem(
                    account=account,
                    amount=redeem,
                    business=business,
                    program=program,
                    key=f"txn:{purchase.pk}",
                    transaction=purchase,
                    check_amount=amount,
                    coupon_discount=coupon_discount,
                    at=now,
                )
            if accrued > 0:
                # Bonuses live from the purchase, not from when a CRM got round to reporting it.
                expires_at = occurred_at + timedelta(days=program.bonus_lifetime_days)
                _credit(
                    account=account,
                    amount=accrued,
                    kind=LedgerEntry.Kind.ACCRUAL,
                    key=f"accrual:{purchase.pk}",
                    issuer=business,
                    business=business,
                    spendable_from=min(
                        occurred_at + timedelta(days=program.hold_days), expires_at - timedelta(seconds=1)
                    ),
                    expires_at=expires_at,
                    at=now,
                    transaction=purchase,
                    tier=tier,
                )
                account.lifetime_earned += accrued

            def grant(amount: Decimal, kind: str, key: str) -> None:
                """Bonuses of this business, spendable at once, for its program's lifetime."""
                _credit(
                    account=account,
                    amount=amount,
                    kind=kind,
                    key=key,
                    issuer=business,
                    business=business,
                    spendable_from=now,
                    expires_at=now + timedelta(days=program.bonus_lifetime_days),
                    at=now,
                    transaction=purchase,
                    tier=tier,
                )
                account.lifetime_earned += amount

            if claim is not None and claim.bonus > 0:
                grant(claim.bonus, LedgerEntry.Kind.ACCRUAL, f"coupon:{claim.coupon.pk}")
            if claim is not None:
                crosspromo.mark_redeemed(claim, purchase, now)
            crosspromo.evaluate_chain_triggers(purchase, now)
            crosspromo.note_referral_purchase(purchase)

            is_first = account.first_purchase_at is None
            if is_first:
                account.first_purchase_at = occurred_at
            if is_first and program.is_active and program.welcome_bonus > 0:
                grant(program.welcome_bonus, LedgerEntry.Kind.WELCOME, f"welcome:{customer.pk}")

            # The purchase adds its money to the year's spend; purchases that age out of
            # the 365 days are taken off by the nightly recompute_all_tiers.
            if occurred_at > now - timedelta(days=365):
                account.spend_365 += paid
            _set_tier(account, now)
            account.save()
            _tell_about_purchase(
                purchase,
                account,
                welcome=program.welcome_bonus if is_first and program.is_active else ZERO,
                tier_before=tier,
            )
    except IntegrityError:
        # A parallel request with the same id committed first, while we waited for the lock.
        existing = Transaction.objects.filter(business=business, external_id=external_id).first()
        if existing is None or digest is None:
            raise  # some other constraint: a bug, not a retry
        return _replay_purchase(existing, digest)
    return PurchaseResult(
        transaction=purchase,
        created=True,
        balance=account.balance,
        tier=account.tier,
        coupon_code=claim.coupon.code if claim is not None else None,
    )


def _claim_coupon(code: str, business: Business, customer: User, amount: Decimal, redeem: Decimal):
    """The coupon locked and checked for this purchase, or InvalidPurchase saying why not."""
    try:
        return crosspromo.claim_coupon(code, business=business, customer_id=customer.pk, amount=amount, redeem=redeem)
    except crosspromo.CouponError as exc:
        raise InvalidPurchase(exc.message, fields={"coupon": [exc.message]}) from exc


def _tell_about_purchase(purchase: Transaction, account: BonusAccount, *, welcome: Decimal, tier_before) -> None:
    """After commit, tell the customer what the purchase did (welcome, bonuses spent and
    earned, a new tier), in one task. Each message at most once per purchase."""
    from notifications.services import notify_after_commit

    base = {"business_name": purchase.business.name, "balance": str(account.balance)}
    messages = []
    if welcome > 0:
        messages.append(("welcome", {**base, "amount": str(welcome)}))
    if purchase.bonuses_redeemed > 0:
        messages.append(("bonus_spent", {**base, "amount": str(purchase.bonuses_redeemed)}))
    if purchase.bonuses_accrued > 0:
        messages.append(("bonus_accrued", {**base, "amount": str(purchase.bonuses_accrued)}))
    if account.tier is not None and account.tier_id != (tier_before.pk if tier_before else None):
        is_upgrade = tier_before is None or account.tier.threshold > tier_before.threshold
        messages.append(("tier_changed", {"tier_name": account.tier.name, "is_upgrade": is_upgrade}))
    if messages:
        notify_after_commit(user_id=account.user_id, messages=messages, event_key=f"txn:{purchase.pk}")


def _replay_purchase(existing: Transaction, digest: str) -> PurchaseResult:
    if existing.request_digest and existing.request_digest != digest:
        raise IdempotencyConflict(extra={"transaction_id": str(existing.pk)})
    account = get_account(existing.customer)
    code = Coupon.objects.filter(redeeming_transaction=existing).values_list("code", flat=True).first()
    return PurchaseResult(
        transaction=existing, created=False, balance=account.balance, tier=account.tier, coupon_code=code
    )
