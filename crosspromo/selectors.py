"""Read queries of the cross-promo app that other apps' pages need."""

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from django.db.models import Q, Sum

from accounts.models import Business
from crosspromo.models import Coupon

KOPECK = Decimal("0.01")


@dataclass(frozen=True)
class RewardShare:
    """What a chain's source owes its target for the coupons redeemed in a period: the
    source's share (100% less the target's) of the rewards given."""

    source_id: object
    source_name: str
    target_id: object
    target_name: str
    rewards_given: Decimal
    source_share_percent: int
    owed: Decimal


def reward_shares(*, since: datetime, until: datetime, business: Business) -> list[RewardShare]:
    """The chains of `business` (either side) whose source pays part of the rewards, by the
    coupons redeemed in [since, until). The target bears the rest; by default all of it."""
    rows = (
        Coupon.objects.filter(status=Coupon.Status.REDEEMED, redeemed_at__gte=since, redeemed_at__lt=until)
        .filter(Q(chain__source=business) | Q(chain__target=business))
        .filter(chain__target_share_percent__lt=100)
        .values(
            "chain__source_id",
            "chain__source__name",
            "chain__target_id",
            "chain__target__name",
            "chain__target_share_percent",
        )
        .annotate(given=Sum("value_given"))
        .order_by("chain__source__name", "chain__target__name", "chain__target_share_percent")
    )
    shares = []
    for row in rows:
        percent = 100 - row["chain__target_share_percent"]
        owed = (row["given"] * percent / 100).quantize(KOPECK, rounding=ROUND_HALF_UP)
        if owed:
            shares.append(
                RewardShare(
                    source_id=row["chain__source_id"],
                    source_name=row["chain__source__name"],
                    target_id=row["chain__target_id"],
                    target_name=row["chain__target__name"],
                    rewards_given=row["given"],
                    source_share_percent=percent,
                    owed=owed,
                )
            )
    return shares
