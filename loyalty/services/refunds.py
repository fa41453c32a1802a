"""Full and partial refunds of a purchase."""

import logging
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.models import Business
from crosspromo import services as crosspromo
from loyalty.models import (
    LedgerEntry,
    Refund,
    Transaction,
)
from loyalty.money import ZERO, round_down, share_of
from loyalty.services.errors import (
    IdempotencyConflict,
    InvalidPurchase,
    RefundIdRequired,
    RefundNotPossible,
    TransactionNotFound,
)
from loyalty.services.ledger import _consume_lots, _credit, _lock_account
from loyalty.services.purchases import _digest
from loyalty.services.tiers import _refresh_tier

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefundResult:
    refund: Refund
    created: bool
    balance: Decimal


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
    external_id = str(external_id)
    # No stored id holds a NUL byte, and PostgreSQL refuses to compare with one.
    purchase = (
        None
        if "\x00" in external_id
        else Transaction.objects.filter(business=business, external_id=external_id).first()
    )
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
        purchase.save(update_fields=["refunded_amount", "money_refunded", "status", "updated_at"])
        crosspromo.void_coupons_for_refund(purchase)
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
