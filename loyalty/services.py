"""The Loyalty service: purchases, the bonus ledger, tiers, redemption, refunds, expiry.

Every write locks the customer's `BonusAccount` row first (`_lock_account`), so all
changes to one customer's bonuses happen one after another; lots are then read and
changed under that lock. Retried writes are decided by unique keys: a purchase by
(business, external_id), a refund by (purchase, refund_id), a ledger entry by its
idempotency key.

The catalogue's functions keep their names: `calculate_bonus`, `update_status_tier`,
`apply_bonus_redemption`, `check_bonus_expiration`.
"""

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import DecimalField, F, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Coalesce, Round
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from rest_framework import status

from accounts.models import Business, User
from accounts.services import get_or_create_customer
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
from loyalty.money import ZERO, as_money, percent_of, round_down, share_of
from svoykrug.exceptions import DomainError

logger = logging.getLogger(__name__)

MONEY_FIELD = DecimalField(max_digits=12, decimal_places=2)


# --- Errors -----------------------------------------------------------------------------


class InsufficientBonuses(DomainError):
    code = "insufficient_bonuses"
    status_code = status.HTTP_409_CONFLICT
    message = _("Not enough bonuses to spend.")


class RedemptionOverLimit(DomainError):
    code = "redemption_over_limit"
    status_code = status.HTTP_409_CONFLICT
    message = _("This check cannot be paid with that many bonuses.")


class IdempotencyConflict(DomainError):
    code = "idempotency_conflict"
    status_code = status.HTTP_409_CONFLICT
    message = _("This id was already used for a request with different data.")


class InvalidPurchase(DomainError):
    code = "invalid_purchase"
    message = _("The purchase is not valid.")


class TransactionNotFound(DomainError):
    code = "transaction_not_found"
    status_code = status.HTTP_404_NOT_FOUND
    message = _("No purchase with this id at this business.")


class RefundNotPossible(DomainError):
    code = "refund_not_possible"
    status_code = status.HTTP_409_CONFLICT
    message = _("This refund is larger than what is left of the purchase.")


class RefundIdRequired(DomainError):
    code = "refund_id_required"
    message = _("A partial refund needs a refund_id, so that a retry cannot refund twice.")


# --- Results ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PurchaseResult:
    transaction: Transaction
    created: bool
    balance: Decimal
    tier: StatusTier | None


@dataclass(frozen=True)
class RefundResult:
    refund: Refund
    created: bool
    balance: Decimal


# --- Accounts and programs ----------------------------------------------------------------


def get_account(user: User) -> BonusAccount:
    """The customer's account, created empty on first need (safe under concurrency)."""
    try:
        return BonusAccount.objects.get(user=user)
    except BonusAccount.DoesNotExist:
        pass
    try:
        with transaction.atomic():
            return BonusAccount.objects.create(user=user, tier=_tier_for_spend(ZERO))
    except IntegrityError:
        return BonusAccount.objects.get(user=user)


def _lock_account(user: User) -> BonusAccount:
    """Lock the customer's account row for the rest of the transaction: the one lock helper
    every bonus write goes through, so writes to one account serialise."""
    locked = BonusAccount.objects.select_for_update(of=("self",)).select_related("tier")
    try:
        return locked.get(user=user)
    except BonusAccount.DoesNotExist:
        get_account(user)
        return locked.get(user=user)


def get_program(business: Business) -> LoyaltyProgram:
    """The business's program, created with the default terms on first need."""
    program, _created = LoyaltyProgram.objects.get_or_create(business=business)
    return program


PROGRAM_FIELDS = (
    "accrual_rate",
    "max_redeem_share",
    "bonus_lifetime_days",
    "hold_days",
    "welcome_bonus",
    "birthday_bonus",
    "is_active",
)


@transaction.atomic
def update_program(*, business: Business, changed_by: User | None, **changes) -> LoyaltyProgram:
    """Change a business's program terms; every change is recorded with who made it and when."""
    unknown = set(changes) - set(PROGRAM_FIELDS)
    if unknown:
        raise ValueError(f"Not program fields: {sorted(unknown)}")
    get_program(business)
    program = LoyaltyProgram.objects.select_for_update().get(business=business)
    diff = {}
    for field, value in changes.items():
        model_field = LoyaltyProgram._meta.get_field(field)
        if getattr(model_field, "decimal_places", None) is not None and value is not None:
            value = Decimal(value).quantize(Decimal(1).scaleb(-model_field.decimal_places))  # 7.5 → 7.50
        old = getattr(program, field)
        if old != value:
            diff[field] = [_jsonable(old), _jsonable(value)]
            setattr(program, field, value)
    if diff:
        program.full_clean()
        program.save()
        ProgramChange.objects.create(program=program, changed_by=changed_by, changes=diff)
    return program


def _jsonable(value):
    return str(value) if isinstance(value, Decimal) else value


# --- Rules --------------------------------------------------------------------------------


def _tier_for_spend(spend: Decimal) -> StatusTier | None:
    return StatusTier.objects.filter(threshold__lte=spend).order_by("-threshold").first()


def accrual_rate(program: LoyaltyProgram, tier: StatusTier | None) -> Decimal:
    """The business's rate plus the tier's uplift, at most 100%; nothing if the program is off."""
    if not program.is_active:
        return ZERO
    return min(program.accrual_rate + (tier.accrual_uplift if tier else ZERO), Decimal("100"))


def redeem_share(program: LoyaltyProgram, tier: StatusTier | None) -> Decimal:
    """The business's share of a check payable with bonuses plus the tier's extra, at most 100%."""
    if not program.is_active:
        return ZERO
    return min(program.max_redeem_share + (tier.extra_redeem_share if tier else ZERO), Decimal("100"))


def calculate_bonus(transaction: Transaction) -> Decimal:
    """Bonuses a purchase earns: the money paid (not the part paid with bonuses, not the
    coupon discount) times the business's rate plus the tier's uplift, rounded down."""
    program = get_program(transaction.business)
    return percent_of(transaction.paid_amount, accrual_rate(program, transaction.tier))


def spendable_balance(account: BonusAccount, at: datetime | None = None) -> Decimal:
    """Bonuses that can be spent now: lots past their hold and not yet expired."""
    at = at or timezone.now()
    total = account.lots.filter(remaining__gt=0, spendable_from__lte=at, expires_at__gt=at).aggregate(
        total=Sum("remaining")
    )["total"]
    return as_money(total)


def max_redeemable(
    *, account: BonusAccount, business: Business, check_amount: Decimal, coupon_discount: Decimal = ZERO, at=None
) -> Decimal:
    """The most bonuses that can pay for this check: the business's share (+ the tier's
    extra) of what the coupon leaves to pay, and no more than the spendable balance."""
    program = get_program(business)
    cap = percent_of(max(check_amount - coupon_discount, ZERO), redeem_share(program, account.tier))
    return min(cap, spendable_balance(account, at))


def quote_redemption(*, business: Business, phone: str, amount: Decimal) -> Decimal:
    """How much of a check of `amount` this phone's bonuses can pay at this business now."""
    from accounts.phones import normalize_phone

    account = BonusAccount.objects.filter(user__phone=normalize_phone(phone), user__is_active=True).first()
    if account is None:
        return ZERO
    return max_redeemable(account=account, business=business, check_amount=amount)


def _consume_lots(
    *,
    account: BonusAccount,
    amount: Decimal,
    kind: str,
    key: str,
    business: Business | None,
    transaction: Transaction | None = None,
    refund: Refund | None = None,
    at: datetime,
    spendable_only: bool,
    created_by: User | None = None,
    reason: str = "",
    first_lot: BonusLot | None = None,
    partial: bool = False,
) -> tuple[list[LedgerEntry], Decimal]:
    """Take `amount` out of the account's open lots, soonest-expiring first (after `first_lot`
    when given), one ledger entry per lot touched. The account must be locked.

    Returns the entries and how much was taken; with `partial`, takes what there is
    instead of refusing."""
    lots = account.lots.filter(remaining__gt=0, expires_at__gt=at)
    if spendable_only:
        lots = lots.filter(spendable_from__lte=at)
    ordered = list(lots.order_by("expires_at", "id"))
    if first_lot is not None:
        ordered.sort(key=lambda lot: lot.pk != first_lot.pk)
    available = sum((lot.remaining for lot in ordered), ZERO)
    if available < amount and not partial:
        raise InsufficientBonuses(extra={"available": str(available)})

    entries, taken = [], ZERO
    for lot in ordered:
        if taken >= amount:
            break
        part = min(lot.remaining, amount - taken)
        lot.remaining -= part
        taken += part
        entries.append(
            LedgerEntry(
                account=account,
                kind=kind,
                amount=-part,
                business=business,
                transaction=transaction,
                refund=refund,
                lot=lot,
                idempotency_key=f"{key}:lot:{lot.pk}",
                created_by=created_by,
                reason=reason,
                created_at=at,
            )
        )
    BonusLot.objects.bulk_update([entry.lot for entry in entries], ["remaining"])
    LedgerEntry.objects.bulk_create(entries)
    account.balance -= taken
    return entries, taken


def _credit(
    *,
    account: BonusAccount,
    amount: Decimal,
    kind: str,
    key: str,
    issuer: Business | None,
    business: Business | None,
    spendable_from: datetime,
    expires_at: datetime,
    at: datetime,
    transaction: Transaction | None = None,
    refund: Refund | None = None,
    tier: StatusTier | None = None,
    created_by: User | None = None,
    reason: str = "",
) -> LedgerEntry:
    """Add a new lot of bonuses and its ledger entry. The account must be locked."""
    lot = BonusLot.objects.create(
        account=account,
        business=issuer,
        amount=amount,
        remaining=amount,
        spendable_from=spendable_from,
        expires_at=expires_at,
        transaction=transaction,
        tier=tier,
    )
    entry = LedgerEntry.objects.create(
        account=account,
        kind=kind,
        amount=amount,
        business=business,
        transaction=transaction,
        refund=refund,
        lot=lot,
        idempotency_key=key,
        created_by=created_by,
        reason=reason,
        created_at=at,
    )
    account.balance += amount
    if account.clawback_due > 0:
        _settle_clawback(account, lot, key=key, at=at)
    return entry


def _settle_clawback(account: BonusAccount, lot: BonusLot, *, key: str, at: datetime) -> None:
    """Pay what earlier refunds could not take back out of a newly credited lot."""
    settled = min(account.clawback_due, lot.remaining)
    lot.remaining -= settled
    lot.save(update_fields=["remaining"])
    LedgerEntry.objects.create(
        account=account,
        kind=LedgerEntry.Kind.REFUND_REVERSAL,
        amount=-settled,
        business=lot.business,
        lot=lot,
        idempotency_key=f"{key}:settle",
        created_at=at,
    )
    account.balance -= settled
    account.clawback_due -= settled


def apply_bonus_redemption(
    user: User,
    amount: Decimal,
    *,
    business: Business,
    idempotency_key: str,
    transaction_: Transaction | None = None,
    check_amount: Decimal | None = None,
) -> bool:
    """Spend `amount` bonuses at `business`: only lots past their hold, soonest-expiring
    first, each lot consumed recorded (and so its issuing business). With `check_amount`,
    at most the business's share (+ the tier's extra) of the check. Returns True, or
    raises InsufficientBonuses / RedemptionOverLimit and changes nothing."""
    amount = round_down(amount)
    if amount <= 0:
        raise InvalidPurchase(_("The amount to spend must be positive."))
    with transaction.atomic():
        account = _lock_account(user)
        _redeem(
            account=account,
            amount=amount,
            business=business,
            key=idempotency_key,
            transaction=transaction_,
            check_amount=check_amount,
            at=timezone.now(),
        )
        account.save(update_fields=["balance", "updated_at"])
    return True


def _redeem(*, account, amount, business, key, transaction, check_amount, at, coupon_discount=ZERO, program=None):
    if check_amount is not None:
        program = program or get_program(business)
        cap = percent_of(max(check_amount - coupon_discount, ZERO), redeem_share(program, account.tier))
        if amount > cap:
            raise RedemptionOverLimit(extra={"max_redeemable": str(min(cap, spendable_balance(account, at)))})
    _consume_lots(
        account=account,
        amount=amount,
        kind=LedgerEntry.Kind.REDEMPTION,
        key=f"redeem:{key}",
        business=business,
        transaction=transaction,
        at=at,
        spendable_only=True,
    )


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
    occurred_at: datetime | None = None,
    source: str = Transaction.Source.API,
    recorded_by: User | None = None,
) -> PurchaseResult:
    """Record a purchase once: spend the bonuses asked for, accrue on the money paid, grant
    the welcome bonus on the customer's first purchase in the circle, update the tier.

    The same (business, external_id) again with the same data returns the first result
    (`created=False`); with other data it raises IdempotencyConflict. A phone new to the
    circle gets a customer account that its owner claims by logging in."""
    now = timezone.now()
    # The caller's own time goes into the retry digest; the default "now" does not.
    stated_time = occurred_at
    occurred_at = occurred_at or now
    amount, redeem, coupon_discount = Decimal(amount), Decimal(redeem), Decimal(coupon_discount)
    if customer is None:
        if not phone:
            raise InvalidPurchase(_("A purchase needs the customer's phone."), fields={"phone": [_("Required.")]})
        customer = get_or_create_customer(phone)[0]
    external_id = str(external_id).strip()
    if not external_id or len(external_id) > 100:
        raise InvalidPurchase(
            _("The purchase id must be 1 to 100 characters."), fields={"external_id": [_("Invalid.")]}
        )
    digest = _digest(
        customer=str(customer.pk), amount=amount, redeem=redeem, coupon=coupon_discount, occurred_at=stated_time
    )
    existing = Transaction.objects.filter(business=business, external_id=external_id).first()
    if existing is not None:
        return _replay_purchase(existing, digest)
    _validate_purchase(amount=amount, redeem=redeem, coupon_discount=coupon_discount, occurred_at=occurred_at, now=now)
    if not customer.is_active:
        raise InvalidPurchase(_("This customer's account is closed."))

    try:
        with transaction.atomic():
            account = _lock_account(customer)
            program = get_program(business)
            tier = account.tier
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

            is_first = account.first_purchase_at is None
            if is_first:
                account.first_purchase_at = occurred_at
            if is_first and program.is_active and program.welcome_bonus > 0:
                _credit(
                    account=account,
                    amount=program.welcome_bonus,
                    kind=LedgerEntry.Kind.WELCOME,
                    key=f"welcome:{customer.pk}",
                    issuer=business,
                    business=business,
                    spendable_from=now,
                    expires_at=now + timedelta(days=program.bonus_lifetime_days),
                    at=now,
                    transaction=purchase,
                    tier=tier,
                )
                account.lifetime_earned += program.welcome_bonus

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
        if existing is None:
            raise  # some other constraint: a bug, not a retry
        return _replay_purchase(existing, digest)
    return PurchaseResult(transaction=purchase, created=True, balance=account.balance, tier=account.tier)


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
    return PurchaseResult(transaction=existing, created=False, balance=account.balance, tier=account.tier)


# --- Refunds ------------------------------------------------------------------------------


def refund_transaction(
    *, business: Business, external_id: str, amount: Decimal | None = None, refund_id: str | None = None
) -> RefundResult:
    """Refund a purchase in full or in part (`amount` of the check).

    The accrual (and, on a full refund, the welcome bonus it earned) is taken back in
    proportion: from its own lot first, then from the customer's other bonuses, never
    below zero; what could not be taken back is recorded on the refund for the business
    and owed by the account, to be taken from the next bonuses credited to it.
    The bonuses spent on the purchase come back in proportion as new lots of their
    original issuers. Buy, earn, refund and keep does not work."""
    purchase = Transaction.objects.filter(business=business, external_id=str(external_id)).first()
    if purchase is None:
        raise TransactionNotFound()
    if amount is not None:
        amount = Decimal(amount)
        if amount <= 0 or amount != round_down(amount):
            raise InvalidPurchase(_("The refund amount must be positive, in roubles and kopecks."))
    if refund_id is None:
        if amount is not None and amount != purchase.gross_amount - purchase.refunded_amount:
            raise RefundIdRequired()
        refund_id = "full"
    refund_id = str(refund_id).strip()[:100]
    digest = _digest(amount=amount)

    with transaction.atomic():
        account = _lock_account(purchase.customer)
        purchase = Transaction.objects.select_for_update().get(pk=purchase.pk)
        existing = Refund.objects.filter(transaction=purchase, refund_id=refund_id).first()
        if existing is not None:
            if existing.request_digest != digest and amount is not None:
                raise IdempotencyConflict(extra={"refund_id": refund_id})
            return RefundResult(refund=existing, created=False, balance=account.balance)
        left = purchase.gross_amount - purchase.refunded_amount
        amount = left if amount is None else amount
        if left <= 0 or amount > left:
            raise RefundNotPossible(extra={"refundable": str(left)})
        now = timezone.now()
        before, after = purchase.refunded_amount, purchase.refunded_amount + amount
        gross = purchase.gross_amount

        def part(total):
            # Cumulative shares: the sum over all refunds of a purchase is exactly `total`.
            return share_of(total, after, gross) - share_of(total, before, gross)

        refund = Refund.objects.create(
            transaction=purchase,
            refund_id=refund_id,
            amount=amount,
            money_refunded=part(purchase.paid_amount),
            request_digest=digest,
        )
        returned = _return_redeemed(account, purchase, refund, part(purchase.bonuses_redeemed), now)
        to_take_back = part(purchase.bonuses_accrued)
        welcome = None
        if after == gross:
            welcome = LedgerEntry.objects.filter(
                transaction=purchase, kind=LedgerEntry.Kind.WELCOME, account=account
            ).first()
            if welcome is not None:
                to_take_back += welcome.amount
        taken = ZERO
        if to_take_back > 0:
            own_lot = purchase.lots.filter(entries__kind=LedgerEntry.Kind.ACCRUAL).first()
            _entries, taken = _consume_lots(
                account=account,
                amount=to_take_back,
                kind=LedgerEntry.Kind.REFUND_REVERSAL,
                key=f"refund:{refund.pk}",
                business=business,
                transaction=purchase,
                refund=refund,
                at=now,
                spendable_only=False,
                first_lot=own_lot,
                partial=True,
            )
            account.lifetime_earned = max(account.lifetime_earned - to_take_back, ZERO)
        refund.redeemed_returned = returned
        refund.accrual_reversed = taken
        refund.unrecovered = to_take_back - taken
        account.clawback_due += refund.unrecovered
        refund.save(update_fields=["redeemed_returned", "accrual_reversed", "unrecovered"])

        purchase.refunded_amount = after
        purchase.money_refunded += refund.money_refunded
        purchase.status = Transaction.Status.REFUNDED if after == gross else Transaction.Status.PARTIALLY_REFUNDED
        purchase.save(update_fields=["refunded_amount", "money_refunded", "status"])
        _refresh_tier(account, now)
        account.save()
        if refund.unrecovered:
            logger.info("Refund %s of %s left %s bonuses unrecovered", refund.pk, purchase.pk, refund.unrecovered)
    return RefundResult(refund=refund, created=True, balance=account.balance)


def _return_redeemed(account, purchase, refund, total, now) -> Decimal:
    """Give back `total` of the bonuses spent on `purchase`, split over the lots they came
    from, each as a new lot of the same issuer that expires no sooner than before."""
    if total <= 0:
        return ZERO
    spent = list(
        LedgerEntry.objects.filter(transaction=purchase, kind=LedgerEntry.Kind.REDEMPTION)
        .select_related("lot")
        .order_by("id")
    )
    spent_total = -sum((entry.amount for entry in spent), ZERO)
    given, running = ZERO, ZERO
    min_expiry = now + timedelta(days=settings.LOYALTY_REFUND_RETURN_MIN_DAYS)
    for entry in spent:
        running += -entry.amount
        share = share_of(total, running, spent_total) - given
        if share <= 0:
            continue
        given += share
        _credit(
            account=account,
            amount=share,
            kind=LedgerEntry.Kind.REFUND_RETURN,
            key=f"refund:{refund.pk}:return:{entry.lot_id}",
            issuer=entry.lot.business,
            business=purchase.business,
            spendable_from=now,
            expires_at=max(entry.lot.expires_at, min_expiry),
            at=now,
            transaction=purchase,
            refund=refund,
        )
    return given


# --- Adjustments --------------------------------------------------------------------------


def adjust_balance(
    *,
    user: User,
    amount: Decimal,
    reason: str,
    created_by: User | None,
    business: Business | None = None,
    idempotency_key: str | None = None,
) -> list[LedgerEntry]:
    """A manual correction by staff or a partner's manager, with the reason kept. A positive
    amount adds a lot (issued by `business`, or by the platform); a negative one takes
    bonuses out soonest-expiring first and is refused if the balance does not cover it."""
    amount = Decimal(amount)
    reason = (reason or "").strip()
    if not reason:
        raise InvalidPurchase(_("An adjustment needs a reason."), fields={"reason": [_("Required.")]})
    if amount == 0 or amount != round_down(amount) or abs(amount) > settings.LOYALTY_MAX_CHECK_AMOUNT:
        raise InvalidPurchase(_("The adjustment must be a non-zero amount in roubles and kopecks."))
    key = idempotency_key or f"adjust:{uuid.uuid4()}"
    with transaction.atomic():
        account = _lock_account(user)
        existing = list(LedgerEntry.objects.filter(Q(idempotency_key=key) | Q(idempotency_key__startswith=f"{key}:")))
        if existing:
            return existing
        now = timezone.now()
        if amount > 0:
            lifetime = (
                get_program(business).bonus_lifetime_days if business else settings.LOYALTY_ADJUSTMENT_LIFETIME_DAYS
            )
            entries = [
                _credit(
                    account=account,
                    amount=amount,
                    kind=LedgerEntry.Kind.ADJUSTMENT,
                    key=key,
                    issuer=business,
                    business=business,
                    spendable_from=now,
                    expires_at=now + timedelta(days=lifetime),
                    at=now,
                    created_by=created_by,
                    reason=reason,
                )
            ]
        else:
            entries, _taken = _consume_lots(
                account=account,
                amount=-amount,
                kind=LedgerEntry.Kind.ADJUSTMENT,
                key=key,
                business=business,
                at=now,
                spendable_only=False,
                created_by=created_by,
                reason=reason,
            )
        account.save(update_fields=["balance", "updated_at"])
    return entries


# --- Tiers --------------------------------------------------------------------------------


def spend_over_year(user: User | uuid.UUID, at: datetime | None = None) -> Decimal:
    """Money the customer paid at all partners over the last 365 days, net of refunds."""
    at = at or timezone.now()
    total = Transaction.objects.filter(customer=user, occurred_at__gt=at - timedelta(days=365)).aggregate(
        spend=Sum(F("paid_amount") - F("money_refunded"))
    )["spend"]
    return as_money(total)


def _refresh_tier(account: BonusAccount, at: datetime) -> None:
    account.spend_365 = spend_over_year(account.user_id, at)
    _set_tier(account, at)


def _set_tier(account: BonusAccount, at: datetime) -> None:
    tier = _tier_for_spend(account.spend_365)
    if tier != account.tier:
        account.tier = tier
        account.tier_updated_at = at


def update_status_tier(user: User) -> StatusTier | None:
    """Recompute the customer's tier from the spend of the last 365 days; a tier falls as
    well as rises. Returns the tier in force."""
    with transaction.atomic():
        account = _lock_account(user)
        _refresh_tier(account, timezone.now())
        account.save(update_fields=["spend_365", "tier", "tier_updated_at", "updated_at"])
    return account.tier


def recompute_all_tiers(at: datetime | None = None) -> int:
    """The nightly pass: every account's spend and tier from its purchases, in batches of
    LOYALTY_BATCH_ACCOUNTS locked accounts. Returns how many accounts changed tier."""
    at = at or timezone.now()
    tiers = list(StatusTier.objects.order_by("-threshold"))
    changed, last_id = 0, 0
    spend = (
        Transaction.objects.filter(customer=OuterRef("user_id"), occurred_at__gt=at - timedelta(days=365))
        .values("customer")
        .annotate(total=Sum(F("paid_amount") - F("money_refunded")))
        .values("total")
    )
    while True:
        with transaction.atomic():
            batch = list(
                BonusAccount.objects.select_for_update()
                .filter(pk__gt=last_id)
                .order_by("pk")
                .annotate(fresh_spend=Coalesce(Subquery(spend, output_field=MONEY_FIELD), Value(ZERO)))[
                    : settings.LOYALTY_BATCH_ACCOUNTS
                ]
            )
            if not batch:
                return changed
            updated = []
            for account in batch:
                tier = next((t for t in tiers if t.threshold <= account.fresh_spend), None)
                if account.spend_365 != account.fresh_spend or account.tier_id != (tier.pk if tier else None):
                    if account.tier_id != (tier.pk if tier else None):
                        changed += 1
                        account.tier_updated_at = at
                    account.spend_365 = account.fresh_spend
                    account.tier = tier
                    updated.append(account)
            BonusAccount.objects.bulk_update(updated, ["spend_365", "tier", "tier_updated_at"])
            last_id = batch[-1].pk


# --- Expiry -------------------------------------------------------------------------------


def check_bonus_expiration(now: datetime | None = None) -> list[uuid.UUID]:
    """Expire what remains of every lot past its date, in a few set-based statements per
    batch of locked accounts: one INSERT of expiry entries, one UPDATE of balances, one
    UPDATE of lots. Returns the ids of the customers affected; a second run finds nothing."""
    now = now or timezone.now()
    affected: list[uuid.UUID] = []
    last_id = 0
    entry_table = LedgerEntry._meta.db_table
    lot_table = BonusLot._meta.db_table
    while True:
        with transaction.atomic():
            account_ids = list(
                BonusLot.objects.filter(remaining__gt=0, expires_at__lte=now, account_id__gt=last_id)
                .order_by("account_id")
                .values_list("account_id", flat=True)
                .distinct()[: settings.LOYALTY_BATCH_ACCOUNTS]
            )
            if not account_ids:
                return affected
            # Lock in primary-key order, the order every other writer uses (one account each).
            locked = list(
                BonusAccount.objects.select_for_update()
                .filter(pk__in=account_ids)
                .order_by("pk")
                .values_list("pk", "user_id")
            )
            ids = [pk for pk, _user in locked]
            id_list = ",".join(str(int(pk)) for pk in ids)
            at = connection.ops.adapt_datetimefield_value(now)
            with connection.cursor() as cursor:
                cursor.execute(
                    f"""
                    INSERT INTO {entry_table}
                        (account_id, kind, amount, business_id, transaction_id, refund_id, lot_id,
                         idempotency_key, created_by_id, reason, created_at)
                    SELECT account_id, 'expiry', -remaining, business_id, NULL, NULL, id,
                           'expiry:' || CAST(id AS VARCHAR(20)), NULL, '', %s
                    FROM {lot_table}
                    WHERE account_id IN ({id_list}) AND remaining > 0 AND expires_at <= %s
                    RETURNING account_id
                    """,  # noqa: S608 - ids are integers from the database, never user input
                    [at, at],
                )
                # A parallel run may have expired these lots while this one waited for the locks.
                expired_accounts = {row[0] for row in cursor.fetchall()}
            expired = (
                BonusLot.objects.filter(account_id=OuterRef("pk"), remaining__gt=0, expires_at__lte=now)
                .values("account_id")
                .annotate(total=Sum("remaining"))
                .values("total")
            )
            # Rounded in SQL because SQLite does decimal arithmetic in floats.
            BonusAccount.objects.filter(pk__in=ids).update(
                balance=Round(
                    F("balance") - Coalesce(Subquery(expired, output_field=MONEY_FIELD), Value(ZERO)),
                    2,
                    output_field=MONEY_FIELD,
                )
            )
            BonusLot.objects.filter(account_id__in=ids, remaining__gt=0, expires_at__lte=now).update(remaining=ZERO)
            affected.extend(user_id for pk, user_id in locked if pk in expired_accounts)
            last_id = ids[-1]


def remind_expiring_bonuses(days: int, at: datetime | None = None) -> int:
    """Tell each customer, in one message, which of their bonuses expire `days` days from
    now (the lots expiring during that day, with amounts and dates). Safe to run twice a
    day: the message's key is the customer, the day and the horizon. Returns customers told."""
    from notifications.services import notify_after_commit

    at = at or timezone.now()
    day = timezone.localdate(at) + timedelta(days=days)
    start = timezone.make_aware(datetime.combine(day, datetime.min.time()))
    lots = (
        BonusLot.objects.filter(remaining__gt=0, expires_at__gte=start, expires_at__lt=start + timedelta(days=1))
        .select_related("account")
        .order_by("account_id", "expires_at")
    )
    batches: dict = {}
    for lot in lots:
        batches.setdefault(lot.account.user_id, []).append(
            {"amount": str(lot.remaining), "date": timezone.localtime(lot.expires_at).strftime("%d.%m.%Y")}
        )
    for user_id, items in batches.items():
        notify_after_commit(
            user_id=user_id,
            messages=[("bonus_expiring", {"days": days, "batches": items})],
            event_key=f"expiring:{day.isoformat()}:{days}",
        )
    return len(batches)


# --- Birthdays ----------------------------------------------------------------------------


def grant_birthday_bonuses(today: date | None = None) -> int:
    """Grant each active program's birthday bonus, once a year, to its customers (a purchase
    there within 365 days) whose birthday is today; 29 February counts on 28 February in
    other years. Returns how many bonuses were granted; a second run grants none."""
    today = today or timezone.localdate()
    now = timezone.now()
    days = [(today.month, today.day)]
    if (today.month, today.day) == (2, 28) and not _is_leap(today.year):
        days.append((2, 29))
    birthday = Q()
    for month, day in days:
        birthday |= Q(birth_date__month=month, birth_date__day=day)
    granted = 0
    programs = LoyaltyProgram.objects.filter(is_active=True, birthday_bonus__gt=0).select_related("business")
    for program in programs:
        customers = User.objects.filter(
            birthday,
            is_active=True,
            transactions__business=program.business,
            transactions__occurred_at__gt=now - timedelta(days=365),
        ).distinct()
        for customer in customers:
            key = f"birthday:{program.business_id}:{customer.pk}:{today.year}"
            with transaction.atomic():
                account = _lock_account(customer)
                if LedgerEntry.objects.filter(idempotency_key=key).exists():
                    continue
                _credit(
                    account=account,
                    amount=program.birthday_bonus,
                    kind=LedgerEntry.Kind.BIRTHDAY,
                    key=key,
                    issuer=program.business,
                    business=program.business,
                    spendable_from=now,
                    expires_at=now + timedelta(days=program.bonus_lifetime_days),
                    at=now,
                )
                account.lifetime_earned += program.birthday_bonus
                account.save(update_fields=["balance", "lifetime_earned", "updated_at"])
                granted += 1
    return granted


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
