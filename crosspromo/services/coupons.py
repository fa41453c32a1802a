"""Coupons: issued by a purchase at a chain's source, redeemed once at its target.

`evaluate_chain_triggers(transaction)` keeps the catalogue's name. It runs inside the
purchase's database transaction, after the customer's account is locked (loyalty's order):
the chains it issues from are locked next, in id order, so their limits and budgets hold
however many purchases race for the last coupons, and two purchases never lock two chains
in opposite orders. A purchase delivered again issues nothing new (one coupon per chain and
purchase, a unique constraint)."""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from crosspromo.models import Coupon, CrossPromoChain, normalize_code
from crosspromo.services.chains import describe_reward

logger = logging.getLogger(__name__)

Status = CrossPromoChain.Status
Reward = CrossPromoChain.Reward
KOPECK = Decimal("0.01")
ZERO = Decimal("0.00")


class CouponError(Exception):
    """A coupon that cannot be used for this purchase; the message says why."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _bought_before(transaction_, business_id) -> bool:
    from loyalty.models import Transaction

    return (
        Transaction.objects.filter(customer_id=transaction_.customer_id, business_id=business_id)
        .exclude(pk=transaction_.pk)
        .exclude(status=Transaction.Status.REFUNDED)
        .exists()
    )


def _triggered(chain: CrossPromoChain, purchase) -> bool:
    """Whether the purchase meets the chain's trigger (limits aside)."""
    if purchase.paid_amount < chain.min_purchase_amount or purchase.paid_amount <= 0:
        return False
    if chain.first_purchase_only and _bought_before(purchase, chain.source_id):
        return False
    return not (chain.new_to_target_only and _bought_before(purchase, chain.target_id))


def evaluate_chain_triggers(purchase, now: datetime | None = None) -> list[Coupon]:
    """Issue a coupon from every active chain of the purchase's partner whose trigger the
    purchase meets and whose limits allow one more: coupons per customer, coupons in all,
    the budget. Called by loyalty.record_transaction inside its transaction; the customer is
    told after commit. Returns the coupons issued now."""
    now = now or timezone.now()
    issued = []
    # No savepoint of its own: inside the purchase's transaction a failure here fails the purchase.
    with transaction.atomic(savepoint=False):
        # One query finds and locks them: PostgreSQL locks the rows as they leave the sort, so
        # in id order, and re-reads a row it had to wait for (the status is checked again below).
        chains = (
            CrossPromoChain.objects.select_for_update(of=("self",))
            .select_related("target")  # named in the customer's message, with the source (the purchase's business)
            .filter(source_id=purchase.business_id, status=Status.ACTIVE, starts_at__lte=now)
            .filter(Q(ends_at__isnull=True) | Q(ends_at__gt=now))
            .order_by("pk")
        )
        for chain in chains:
            chain.source = purchase.business
            if chain.status != Status.ACTIVE or not _triggered(chain, purchase):
                continue
            coupon = _issue(chain, purchase, now)
            if coupon is not None:
                issued.append(coupon)
    for coupon in issued:
        _tell_customer(coupon)
    return issued


def _issue(chain: CrossPromoChain, purchase, now: datetime) -> Coupon | None:
    """One coupon from the locked chain, if its limits allow. The purchase is new (only
    record_transaction calls this), so it has issued nothing yet; the unique constraint on
    (chain, purchase) is the guard if that ever changes."""
    if chain.total_limit is not None and chain.issued_count >= chain.total_limit:
        return None
    held = Coupon.objects.filter(chain=chain, customer_id=purchase.customer_id).exclude(status=Coupon.Status.VOID)
    if held.count() >= chain.per_customer_limit:
        return None
    reserve = chain.largest_reward() or ZERO
    if chain.budget is not None and chain.budget_reserved + chain.budget_spent + reserve > chain.budget:
        return None
    expires_at = now + timedelta(days=chain.coupon_lifetime_days)
    for _attempt in range(5):  # a new random code until it is unique
        try:
            with transaction.atomic():
                coupon = Coupon.objects.create(
                    chain=chain,
                    customer_id=purchase.customer_id,
                    issuing_transaction=purchase,
                    issued_at=now,
                    expires_at=expires_at,
                    reserved=reserve,
                )
            break
        except IntegrityError:
            if Coupon.objects.filter(chain=chain, issuing_transaction=purchase).exists():
                return None
    else:  # pragma: no cover - five collisions in 1.5e11 codes
        raise RuntimeError("Could not draw a unique coupon code")
    chain.issued_count += 1
    chain.budget_reserved += reserve
    chain.save(update_fields=["issued_count", "budget_reserved", "updated_at"])
    return coupon


def _tell_customer(coupon: Coupon) -> None:
    from notifications.services import notify_after_commit

    chain = coupon.chain
    notify_after_commit(
        user_id=coupon.customer_id,
        messages=[
            (
                "coupon_issued",
                {
                    "coupon_id": coupon.pk,
                    "code": coupon.code,
                    "source_name": chain.source.name,
                    "target_name": chain.target.name,
                    "reward": describe_reward(chain),
                    "expires_on": timezone.localdate(coupon.expires_at).isoformat(),
                },
            )
        ],
        event_key=f"coupon:{coupon.pk}",
    )


def _lock_chains(ids) -> dict[int, CrossPromoChain]:
    """Lock chains in id order (the one order every path uses)."""
    return {chain.pk: chain for chain in CrossPromoChain.objects.select_for_update().filter(pk__in=ids).order_by("pk")}


def _release(coupon: Coupon, status: str, reason: str = "") -> None:
    """Take an active coupon out of use and free its share of the budget (chain locked)."""
    chain = CrossPromoChain.objects.select_for_update().get(pk=coupon.chain_id)
    chain.budget_reserved = max(ZERO, chain.budget_reserved - coupon.reserved)
    chain.save(update_fields=["budget_reserved", "updated_at"])
    coupon.status, coupon.void_reason, coupon.reserved = status, reason[:200], ZERO
    coupon.save(update_fields=["status", "void_reason", "reserved", "updated_at"])


def void_coupons_for_refund(purchase) -> int:
    """After a refund of `purchase` (called by loyalty inside the refund's transaction): its
    coupons not yet used are void when the purchase is refunded in full or no longer meets
    its chain's minimum. Returns how many."""
    voided = 0
    active = Coupon.objects.select_related("chain").filter(issuing_transaction=purchase, status=Coupon.Status.ACTIVE)
    for coupon in active.order_by("chain_id"):
        kept = purchase.paid_amount - purchase.money_refunded
        if purchase.status != "refunded" and kept >= coupon.chain.min_purchase_amount and kept > 0:
            continue
        _release(coupon, Coupon.Status.VOID, _("The purchase that issued it was refunded."))
        voided += 1
    return voided


def expire_coupons(now: datetime | None = None) -> int:
    """Mark coupons past their time as expired and free their budget (Celery beat; safe to
    run twice). Returns how many."""
    now = now or timezone.now()
    count = 0
    due = Coupon.objects.filter(status=Coupon.Status.ACTIVE, expires_at__lte=now).values_list("pk", "chain_id")
    for pk, chain_id in due:
        with transaction.atomic():
            _lock_chains([chain_id])  # the chain before the coupon, as everywhere
            coupon = Coupon.objects.select_for_update().filter(pk=pk, status=Coupon.Status.ACTIVE).first()
            if coupon is not None:
                _release(coupon, Coupon.Status.EXPIRED)
                count += 1
    return count


# --- Redemption --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CouponClaim:
    """A coupon checked for a purchase: the discount it takes off the check, or the bonuses
    it adds; exactly one of them is more than zero."""

    coupon: Coupon
    discount: Decimal
    bonus: Decimal


def find_coupon(code: str) -> Coupon | None:
    code = normalize_code(code)
    if not code:
        return None
    return Coupon.objects.select_related("chain", "chain__target", "chain__source").filter(code=code).first()


def quote_coupon(coupon: Coupon, *, business, customer_id, amount: Decimal, redeem: Decimal = ZERO, now=None):
    """What the coupon gives on a check of `amount` at `business` (bonuses `redeem` paid),
    or CouponError saying why it cannot be used."""
    now = now or timezone.now()
    chain = coupon.chain
    if chain.target_id != business.pk:
        raise CouponError(_("This coupon is for %(partner)s.") % {"partner": chain.target.name})
    if coupon.status == Coupon.Status.REDEEMED:
        when = timezone.localtime(coupon.redeemed_at).strftime("%d.%m.%Y %H:%M")
        raise CouponError(_("This coupon was already used on %(when)s.") % {"when": when})
    if coupon.status == Coupon.Status.VOID:
        raise CouponError(_("This coupon was cancelled."))
    if coupon.status == Coupon.Status.EXPIRED or coupon.expires_at <= now:
        raise CouponError(_("This coupon has expired."))
    if customer_id is not None and coupon.customer_id != customer_id:
        raise CouponError(_("This coupon belongs to another customer."))
    if chain.status in (Status.PROPOSED, Status.DECLINED):
        raise CouponError(_("This coupon's chain is not running."))
    if amount < chain.min_target_purchase:
        raise CouponError(_("The coupon works on purchases from %(amount)s ₽.") % {"amount": chain.min_target_purchase})
    payable = amount - redeem  # a discount never makes the check negative
    if chain.reward_kind == Reward.BONUS:
        return CouponClaim(coupon, ZERO, chain.reward_value)
    if chain.reward_kind == Reward.FIXED:
        discount = min(chain.reward_value, payable)
    else:
        discount = (payable * chain.reward_value / 100).quantize(KOPECK, rounding=ROUND_HALF_UP)
        if chain.max_discount is not None:
            discount = min(discount, chain.max_discount)
    return CouponClaim(coupon, max(ZERO, discount), ZERO)


def claim_coupon(code: str, *, business, customer_id, amount: Decimal, redeem: Decimal = ZERO) -> CouponClaim:
    """Lock the coupon for a purchase being recorded (inside its transaction) and quote it.
    A second purchase with the same coupon waits for the first and is then refused.

    Locks are taken in one order everywhere, chains (by id) before coupons: here the
    coupon's chain together with the chains this purchase may issue from (which
    evaluate_chain_triggers then finds locked already). Otherwise two partners with chains
    both ways, redeeming each other's coupons at once, could each hold the chain the other
    needs."""
    coupon = find_coupon(code)
    if coupon is None:
        raise CouponError(_("There is no such coupon."))
    issuing = CrossPromoChain.objects.filter(source_id=business.pk, status=Status.ACTIVE).values_list("pk", flat=True)
    _lock_chains({coupon.chain_id, *issuing})
    # Only the coupon's row: its chain is locked above, and a lock on the joined partner row
    # would hold up every other purchase at that partner (their rows reference it).
    coupon = Coupon.objects.select_for_update(of=("self",)).select_related("chain", "chain__target").get(pk=coupon.pk)
    return quote_coupon(coupon, business=business, customer_id=customer_id, amount=amount, redeem=redeem)


def mark_redeemed(claim: CouponClaim, purchase, now: datetime | None = None) -> Coupon:
    """Record the coupon as used by `purchase` (same transaction as claim_coupon): its
    reservation of the budget becomes what it gave."""
    now = now or timezone.now()
    coupon = claim.coupon
    given = claim.discount + claim.bonus
    chain = CrossPromoChain.objects.select_for_update().get(pk=coupon.chain_id)
    chain.budget_reserved = max(ZERO, chain.budget_reserved - coupon.reserved)
    chain.budget_spent += given
    chain.redeemed_count += 1
    chain.save(update_fields=["budget_reserved", "budget_spent", "redeemed_count", "updated_at"])
    coupon.status, coupon.redeemed_at, coupon.redeeming_transaction = Coupon.Status.REDEEMED, now, purchase
    coupon.value_given, coupon.reserved = given, ZERO
    coupon.save(
        update_fields=["status", "redeemed_at", "redeeming_transaction", "value_given", "reserved", "updated_at"]
    )
    return coupon
