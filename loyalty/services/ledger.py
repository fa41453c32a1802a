"""Accounts, programs and the ledger's primitives: the one lock helper, lots credited and consumed, redemption."""

from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.models import Business, User
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
from loyalty.money import ZERO, as_money, percent_of, round_down
from loyalty.services.errors import InsufficientBonuses, InvalidPurchase, RedemptionOverLimit
from svoykrug import answers


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
    every bonus write goes through, so writes to one account serialise. The customer's
    cached answers (svoykrug.answers) are renewed here, for every write at once."""
    answers.changed(f"loyalty:{user.pk}")
    locked = BonusAccount.objects.select_for_update(of=("self",)).select_related("tier")
    try:
        return locked.get(user=user)
    except BonusAccount.DoesNotExist:
        get_account(user)
        return locked.get(user=user)


def get_program(business: Business) -> LoyaltyProgram:
    """The business's program, created with the default terms on first need. Read through the
    cache (svoykrug.answers, scope `program:<business id>`, renewed by every save of the
    program), as every purchase needs it: a change is seen by the next purchase, as when it
    was read from the database."""
    scope = f"program:{business.pk}"
    return answers.cached_value(
        scope, scopes=[scope], compute=lambda: (LoyaltyProgram.objects.get_or_create(business=business)[0], None)
    )


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


def _tiers() -> list[StatusTier]:
    """The circle's tiers, highest first, through the cache (scope `tiers`, renewed by every
    save of a tier): every purchase looks its tier up."""
    return answers.cached_value(
        "tiers", scopes=["tiers"], compute=lambda: (list(StatusTier.objects.order_by("-threshold")), None)
    )


def _tier_for_spend(spend: Decimal) -> StatusTier | None:
    return next((tier for tier in _tiers() if tier.threshold <= spend), None)


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
    reason: str = "",
) -> bool:
    """Spend `amount` bonuses at `business`: only lots past their hold, soonest-expiring
    first, each lot consumed recorded (and so its issuing business). With `check_amount`,
    at most the business's share (+ the tier's extra) of the check. `reason` is what the
    customer's history shows for a spend outside a purchase (an event ticket). Returns True,
    or raises InsufficientBonuses / RedemptionOverLimit and changes nothing."""
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
            reason=reason,
        )
        account.save(update_fields=["balance", "updated_at"])
    return True


def return_bonus_redemption(user: User, *, idempotency_key: str, reason: str = "") -> Decimal:
    """Give back everything spent by `apply_bonus_redemption` under `idempotency_key`, each
    part as a new lot of the issuer it came from that expires no sooner than the original
    (and not within LOYALTY_REFUND_RETURN_MIN_DAYS). Returns what was given back now: zero
    when nothing was spent under the key or it was given back already."""
    with transaction.atomic():
        account = _lock_account(user)
        spent = list(
            LedgerEntry.objects.filter(
                account=account,
                kind=LedgerEntry.Kind.REDEMPTION,
                idempotency_key__startswith=f"redeem:{idempotency_key}:lot:",
            )
            .select_related("lot")
            .order_by("id")
        )
        now = timezone.now()
        min_expiry = now + timedelta(days=settings.LOYALTY_REFUND_RETURN_MIN_DAYS)
        given = ZERO
        for entry in spent:
            try:
                with transaction.atomic():
                    _credit(
                        account=account,
                        amount=-entry.amount,
                        kind=LedgerEntry.Kind.REFUND_RETURN,
                        key=f"return:{idempotency_key}:lot:{entry.lot_id}",
                        issuer=entry.lot.business,
                        business=entry.business,
                        spendable_from=now,
                        expires_at=max(entry.lot.expires_at, min_expiry),
                        at=now,
                        reason=reason,
                    )
            except IntegrityError:  # given back before: the key decides
                continue
            given += -entry.amount
        if given:
            account.save(update_fields=["balance", "clawback_due", "updated_at"])
    return given


def _redeem(
    *,
    account,
    amount,
    business,
    key,
    transaction,
    check_amount,
    at,
    coupon_discount=ZERO,
    program=None,
    reason="",
):
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
        reason=reason,
    )
