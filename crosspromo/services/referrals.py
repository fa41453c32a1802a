"""Referrals: a customer invites friends with a personal code; a friend who enters it at their
first login and then makes a first paid purchase in the circle earns both of them bonuses.

The flow, in three steps:
- `register_referral` at the friend's first app login (the OTP verify endpoint) links the
  friend to the inviter, unless the friend is the inviter, already bought in the circle, or
  was already referred (one referral per friend, a one-to-one constraint decides).
- `note_referral_purchase` runs inside loyalty's purchase transaction: the friend's first
  purchase with money paid becomes the referral's qualifying purchase. Nothing is paid there.
- `reward_referrals` (a Celery beat task, hourly) pays both bonuses once the qualifying
  purchase has stood REFERRAL_HOLD_DAYS without a refund. A refunded (also partly refunded)
  qualifying purchase is dropped, so the friend's next paid purchase can qualify.

The monthly cap: an inviter is paid for at most REFERRAL_MONTHLY_CAP referrals per calendar
month (Europe/Moscow, by `rewarded_at`). A referral beyond the cap is refused for both
sides: the cap bounds what one inviter's (possibly fake) friends can cost the circle.

Dependencies: loyalty calls in here from the purchase path; the one call the other way,
`loyalty.services.adjust_balance`, is made by `reward_referrals` only, a task that pays
later and outside any purchase, and it is imported lazily inside that function.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.models import User
from crosspromo.models import Referral, ReferralCode, new_coupon_code, normalize_code
from svoykrug.exceptions import DomainError

logger = logging.getLogger(__name__)

CODE_ATTEMPTS = 5
CAP_REASON = "The inviter's monthly referral cap was reached."


class UnknownReferralCode(DomainError):
    code = "referral_code_unknown"
    message = _("There is no such invitation code.")

    def __init__(self):
        super().__init__(fields={"referral_code": [str(_("Unknown code."))]})


@dataclass(frozen=True)
class ReferralSummary:
    code: str
    link: str
    inviter_bonus: Decimal
    friend_bonus: Decimal
    invited: int
    rewarded: int
    pending: int


# --- The inviter's code ------------------------------------------------------------------


def get_referral_code(user: User) -> ReferralCode:
    """The user's personal invitation code, made on first need (8 characters a cashier or a
    friend can type); a collision with another user's code is retried with a new one."""
    existing = ReferralCode.objects.filter(user=user).first()
    if existing is not None:
        return existing
    for _attempt in range(CODE_ATTEMPTS):
        try:
            with transaction.atomic():
                return ReferralCode.objects.create(user=user, code=new_coupon_code())
        except IntegrityError:
            # Either the code is taken, or a parallel first call made the user's code.
            existing = ReferralCode.objects.filter(user=user).first()
            if existing is not None:
                return existing
    raise RuntimeError("Could not find a free referral code.")


def referral_summary(user: User) -> ReferralSummary:
    """The user's code, link, the bonuses on offer and how their invitations stand."""
    referral_code = get_referral_code(user)
    counts = Referral.objects.filter(inviter=user).aggregate(
        invited=Count("pk"),
        rewarded=Count("pk", filter=Q(status=Referral.Status.REWARDED)),
        pending=Count("pk", filter=Q(status=Referral.Status.PENDING)),
    )
    return ReferralSummary(
        code=referral_code.code,
        link=settings.REFERRAL_LINK_BASE + referral_code.code,
        inviter_bonus=settings.REFERRAL_INVITER_BONUS,
        friend_bonus=settings.REFERRAL_FRIEND_BONUS,
        **counts,
    )


def find_referral_code(text: str) -> ReferralCode:
    """The code as typed, or the last part of an invitation link; UnknownReferralCode if the
    circle has no such code."""
    text = (text or "").strip().rstrip("/")
    code = normalize_code(text.rsplit("/", 1)[-1])
    referral_code = ReferralCode.objects.filter(code=code).first() if code else None
    if referral_code is None:
        raise UnknownReferralCode()
    return referral_code


# --- The friend --------------------------------------------------------------------------


def register_referral(*, friend: User, code: str) -> Referral | None:
    """Link a friend to the owner of `code`; to be called at the friend's first app login.

    Nothing is made (None) when the code is the friend's own, when the friend already has a
    purchase in the circle, or already came with a code. An unknown code raises
    UnknownReferralCode."""
    from loyalty.models import Transaction

    referral_code = find_referral_code(code)
    if referral_code.user_id == friend.pk:
        logger.info("Referral refused: user %s entered their own code", friend.pk)
        return None
    if Transaction.objects.filter(customer=friend).exists():
        return None
    try:
        with transaction.atomic():
            return Referral.objects.create(inviter_id=referral_code.user_id, friend=friend)
    except IntegrityError:
        return None  # already referred: the first code counts


def note_referral_purchase(purchase) -> bool:
    """Inside the purchase's transaction: a friend's purchase with money paid becomes their
    pending referral's qualifying purchase if it has none yet. Nothing is credited here.
    Returns whether it did."""
    if purchase.paid_amount <= 0:
        return False
    return (
        Referral.objects.filter(
            friend_id=purchase.customer_id, status=Referral.Status.PENDING, qualifying_transaction__isnull=True
        ).update(qualifying_transaction=purchase)
        == 1
    )


# --- Rewards -----------------------------------------------------------------------------


def _month_bounds(now: datetime) -> tuple[datetime, datetime]:
    local = timezone.localtime(now)
    start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    next_month = (start + timedelta(days=32)).replace(day=1)
    return start, next_month


def reward_referrals(now: datetime | None = None) -> int:
    """Pay the referrals whose qualifying purchase has stood REFERRAL_HOLD_DAYS unrefunded:
    REFERRAL_FRIEND_BONUS to the friend, REFERRAL_INVITER_BONUS to the inviter, once; beyond
    the inviter's monthly cap the referral is refused for both. Returns how many were paid."""
    from loyalty.models import Transaction

    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.REFERRAL_HOLD_DAYS)
    due = Referral.objects.filter(status=Referral.Status.PENDING, qualifying_transaction__isnull=False).filter(
        Q(qualifying_transaction__recorded_at__lte=cutoff)
        | ~Q(qualifying_transaction__status=Transaction.Status.COMPLETED)
    )
    rewarded = 0
    for referral_id, inviter_id in due.order_by("pk").values_list("pk", "inviter_id"):
        rewarded += _reward_referral(referral_id, inviter_id=inviter_id, now=now, cutoff=cutoff)
    return rewarded


def _reward_referral(referral_id: int, *, inviter_id, now: datetime, cutoff: datetime) -> bool:
    from loyalty.models import Transaction
    from loyalty.services import adjust_balance

    with transaction.atomic():
        # The inviter's code row serialises the cap check of one inviter's referrals.
        list(ReferralCode.objects.select_for_update().filter(user_id=inviter_id))
        referral = (
            Referral.objects.select_for_update(of=("self",))
            .select_related("qualifying_transaction", "inviter", "friend")
            .filter(pk=referral_id)
            .first()
        )
        if referral is None or referral.status != Referral.Status.PENDING:
            return False
        purchase = referral.qualifying_transaction
        if purchase is None:
            return False
        if purchase.status != Transaction.Status.COMPLETED:
            # Refunded: the friend's next paid purchase may qualify instead.
            referral.qualifying_transaction = None
            referral.save(update_fields=["qualifying_transaction"])
            return False
        if purchase.recorded_at > cutoff:
            return False
        month_start, next_month = _month_bounds(now)
        paid_this_month = Referral.objects.filter(
            inviter_id=inviter_id,
            status=Referral.Status.REWARDED,
            rewarded_at__gte=month_start,
            rewarded_at__lt=next_month,
        ).count()
        if paid_this_month >= settings.REFERRAL_MONTHLY_CAP:
            referral.status = Referral.Status.REFUSED
            referral.refused_reason = CAP_REASON
            referral.save(update_fields=["status", "refused_reason"])
            return False
        referral.status = Referral.Status.REWARDED
        referral.rewarded_at = now
        referral.save(update_fields=["status", "rewarded_at"])
        credits = [
            (referral.friend, settings.REFERRAL_FRIEND_BONUS, "friend"),
            (referral.inviter, settings.REFERRAL_INVITER_BONUS, "inviter"),
        ]
        # In the users' key order, so two runs never lock two accounts in opposite orders.
        for user, amount, side in sorted(credits, key=lambda credit: str(credit[0].pk)):
            if amount > 0:
                adjust_balance(
                    user=user,
                    amount=amount,
                    reason=f"Referral bonus ({side}), referral {referral.pk}",
                    created_by=None,
                    idempotency_key=f"referral:{referral.pk}:{side}",
                )
    return True
