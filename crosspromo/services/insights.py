"""What the portal shows a partner about cross-promo: the win-win index of a pair of partners,
and which partners it should start a chain with.

Both read PostgreSQL with the ORM (not the warehouse: it has no chains or coupons yet), in a
few aggregate queries whose number does not grow with the data; purchases are loyalty's
`Transaction`. A purchase counts unless it was
refunded in full; what it brought is the money paid less the money returned
(`paid_amount - money_refunded`), so bonuses and coupon discounts are not revenue. A visit
counts whether or not a coupon brought it.
"""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from uuid import UUID

from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet, Sum
from django.utils import timezone
from django.utils.formats import number_format
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from accounts.models import Business
from crosspromo.models import Coupon, CrossPromoChain
from crosspromo.services.chains import OPEN_STATUSES
from loyalty.models import Transaction
from loyalty.money import as_money

Category = Business.Category

# --- The win-win index -------------------------------------------------------------------------

# A receiver's gain g (the share of its revenue that the other partner's customers brought)
# is saturated as g / (g + GAIN_HALF_SATURATION): a 5% gain scores 0.5, 15% scores 0.75,
# 45% scores 0.9. A few percent of new revenue is already worth a lot to a small business.
GAIN_HALF_SATURATION = 0.05

# What a purchase brought: the money paid, less the money returned by partial refunds.
NET_PAID = F("paid_amount") - F("money_refunded")


def counted_purchases() -> QuerySet[Transaction]:
    """Purchases that count for cross-promo: all but those refunded in full."""
    return Transaction.objects.exclude(status=Transaction.Status.REFUNDED)


@dataclass(frozen=True)
class PartnerFlow:
    """What one partner (the source) brought another (the target) in the period."""

    source_id: UUID
    target_id: UUID
    # Customers of the source whose first purchase ever at the target falls in the period,
    # and who had bought at the source before that purchase.
    customers_sent: int
    # What those customers paid at the target in the period.
    revenue_brought: Decimal
    # All the target's revenue in the period (revenue_brought included).
    target_revenue: Decimal
    # revenue_brought / target_revenue; 0 when the target had no revenue.
    gain: float
    # gain / (gain + GAIN_HALF_SATURATION), in [0, 1).
    saturated_gain: float
    # Coupons of chains from the source to the target redeemed in the period.
    coupons_redeemed: int


@dataclass(frozen=True)
class WinWinIndex:
    """How much two partners gain from each other, in [0, 1], with the parts it is made of."""

    value: float
    a_to_b: PartnerFlow
    b_to_a: PartnerFlow
    period_start: datetime  # excluded
    period_end: datetime  # included: the `as_of` asked for


def _business_id(business: Business | UUID | str) -> UUID | str:
    return business.pk if isinstance(business, Business) else business


def _customers_sent(*, source_id, target_id, start: datetime, end: datetime) -> QuerySet:
    """Customer ids (a subquery) whose first counted purchase at the target is in (start, end]
    and who made a counted purchase at the source before it."""
    earlier = counted_purchases().filter(customer_id=OuterRef("customer_id"), occurred_at__lt=OuterRef("occurred_at"))
    return (
        counted_purchases()
        .filter(business_id=target_id, occurred_at__gt=start, occurred_at__lte=end)
        .filter(~Exists(earlier.filter(business_id=target_id)), Exists(earlier.filter(business_id=source_id)))
        .order_by()
        .values("customer_id")
    )


def saturate(gain: float) -> float:
    """A gain mapped to [0, 1): g / (g + GAIN_HALF_SATURATION)."""
    return gain / (gain + GAIN_HALF_SATURATION) if gain > 0 else 0.0


def harmonic_mean(first: float, second: float) -> float:
    """2xy / (x + y): high only when both are high; 0 when either is 0."""
    if first <= 0 or second <= 0:
        return 0.0
    return 2 * first * second / (first + second)


def calculate_winwin_index(
    business_a: Business | UUID | str,
    business_b: Business | UUID | str,
    period: timedelta = timedelta(days=90),
    as_of: datetime | None = None,
) -> WinWinIndex:
    """How much two partners gain from each other over the `period` that ends at `as_of`
    (now by default): high when each brings the other a real share of its revenue, low when
    the flow goes one way only.

    For each direction X→Y: the customers X sent Y are X's customers whose first purchase
    ever at Y falls in the period, after a purchase at X (after a coupon or a plain visit,
    alike); they brought Y what they paid there in the period. Y's gain is

        g(X→Y) = revenue brought to Y / Y's own revenue in the period   (0 if Y had none)

    saturated as g' = g / (g + k) with k = GAIN_HALF_SATURATION = 0.05, and

        index = 2 · g'(A→B) · g'(B→A) / (g'(A→B) + g'(B→A))             (0 if either is 0)

    the harmonic mean, so a one-sided flow scores near 0 however large it is. Example: the
    café's customers brought the salon 36,000 ₽ of its 400,000 ₽ (g = 0.09, g' = 0.643) and
    the salon's brought the café 10,000 ₽ of its 250,000 ₽ (g = 0.04, g' = 0.444): the index
    is 2 · 0.643 · 0.444 / 1.087 = 0.526. Purchases refunded in full do not count, partial
    refunds are taken off. The period is (as_of - period, as_of]. Two queries."""
    a_id, b_id = _business_id(business_a), _business_id(business_b)
    if str(a_id) == str(b_id):
        raise ValueError("The win-win index needs two different partners.")
    end = as_of or timezone.now()
    start = end - period

    sent_ab = _customers_sent(source_id=a_id, target_id=b_id, start=start, end=end)
    sent_ba = _customers_sent(source_id=b_id, target_id=a_id, start=start, end=end)
    from_a_at_b = Q(business_id=b_id, customer_id__in=sent_ab)
    from_b_at_a = Q(business_id=a_id, customer_id__in=sent_ba)
    totals = (
        counted_purchases()
        .filter(business_id__in=[a_id, b_id], occurred_at__gt=start, occurred_at__lte=end)
        .aggregate(
            revenue_a=Sum(NET_PAID, filter=Q(business_id=a_id)),
            revenue_b=Sum(NET_PAID, filter=Q(business_id=b_id)),
            brought_ab=Sum(NET_PAID, filter=from_a_at_b),
            brought_ba=Sum(NET_PAID, filter=from_b_at_a),
            sent_ab=Count("customer_id", distinct=True, filter=from_a_at_b),
            sent_ba=Count("customer_id", distinct=True, filter=from_b_at_a),
        )
    )
    coupons = Coupon.objects.filter(
        status=Coupon.Status.REDEEMED,
        redeemed_at__gt=start,
        redeemed_at__lte=end,
        chain__source_id__in=[a_id, b_id],
        chain__target_id__in=[a_id, b_id],  # a chain never has source = target
    ).aggregate(ab=Count("id", filter=Q(chain__source_id=a_id)), ba=Count("id", filter=Q(chain__source_id=b_id)))

    a_to_b = _flow(
        source_id=a_id,
        target_id=b_id,
        sent=totals["sent_ab"],
        brought=as_money(totals["brought_ab"]),
        target_revenue=as_money(totals["revenue_b"]),
        coupons_redeemed=coupons["ab"],
    )
    b_to_a = _flow(
        source_id=b_id,
        target_id=a_id,
        sent=totals["sent_ba"],
        brought=as_money(totals["brought_ba"]),
        target_revenue=as_money(totals["revenue_a"]),
        coupons_redeemed=coupons["ba"],
    )
    return WinWinIndex(
        value=harmonic_mean(a_to_b.saturated_gain, b_to_a.saturated_gain),
        a_to_b=a_to_b,
        b_to_a=b_to_a,
        period_start=start,
        period_end=end,
    )


def _flow(*, source_id, target_id, sent: int, brought: Decimal, target_revenue: Decimal, coupons_redeemed: int):
    gain = float(brought / target_revenue) if target_revenue > 0 else 0.0
    return PartnerFlow(
        source_id=source_id,
        target_id=target_id,
        customers_sent=sent,
        revenue_brought=brought,
        target_revenue=target_revenue,
        gain=gain,
        saturated_gain=saturate(gain),
        coupons_redeemed=coupons_redeemed,
    )


# --- Chain recommendations ---------------------------------------------------------------------

# A business's customers: those with a counted purchase there in this window before `as_of`.
CUSTOMER_LOOKBACK = timedelta(days=365)

# How well two categories feed each other, 0..1; symmetric (looked up as an unordered pair).
# People go from a coffee to a haircut or a workout and back; two cafés compete for the same
# mornings. Pairs not listed get DEFAULT_COMPLEMENTARITY; a category with itself gets
# SAME_CATEGORY_COMPLEMENTARITY.
COMPLEMENTARITY = {
    frozenset({Category.CAFE, Category.BEAUTY}): 0.8,
    frozenset({Category.CAFE, Category.FITNESS}): 0.7,
    frozenset({Category.CAFE, Category.EDUCATION}): 0.7,
    frozenset({Category.CAFE, Category.SHOP}): 0.6,
    frozenset({Category.CAFE, Category.CLINIC}): 0.5,
    frozenset({Category.CAFE, Category.RESTAURANT}): 0.3,
    frozenset({Category.RESTAURANT, Category.BEAUTY}): 0.6,
    frozenset({Category.RESTAURANT, Category.SHOP}): 0.5,
    frozenset({Category.RESTAURANT, Category.EDUCATION}): 0.5,
    frozenset({Category.BEAUTY, Category.FITNESS}): 0.8,
    frozenset({Category.BEAUTY, Category.CLINIC}): 0.7,
    frozenset({Category.BEAUTY, Category.SHOP}): 0.7,
    frozenset({Category.FITNESS, Category.CLINIC}): 0.8,
    frozenset({Category.FITNESS, Category.SHOP}): 0.6,
    frozenset({Category.EDUCATION, Category.SHOP}): 0.5,
}
DEFAULT_COMPLEMENTARITY = 0.4
SAME_CATEGORY_COMPLEMENTARITY = 0.1
# From this complementarity up, the pair is named as a reason.
COMPLEMENTARY_REASON_FROM = 0.6

# Categories as they read in the plural, inside a sentence ("cafés and beauty salons").
CATEGORY_PLURAL = {
    Category.CAFE: gettext_lazy("cafés"),
    Category.RESTAURANT: gettext_lazy("restaurants"),
    Category.BEAUTY: gettext_lazy("beauty salons"),
    Category.CLINIC: gettext_lazy("clinics"),
    Category.FITNESS: gettext_lazy("fitness studios"),
    Category.EDUCATION: gettext_lazy("schools and courses"),
    Category.SHOP: gettext_lazy("shops"),
    Category.SERVICES: gettext_lazy("services"),
    Category.OTHER: gettext_lazy("other businesses"),
}

# The score is the weighted mean of the signals a partner has (each 0..1); a signal that
# cannot be computed (no customers yet, no coordinates, no chains of the pair yet) is left
# out and the others share its weight.
WEIGHT_AFFINITY = 0.35  # our customers already buy there: the pair fits
WEIGHT_REACH = 0.15  # our customers who never went there: whom a chain can send
WEIGHT_COMPLEMENTARITY = 0.25  # the categories feed each other
WEIGHT_DISTANCE = 0.15  # a short walk
WEIGHT_PAST_CHAINS = 0.10  # chains of the same pair of categories got their coupons used

# Affinity (the share of our customers who already buy there) counts in full from 25%.
AFFINITY_FULL = 0.25
# The distance signal is 1 / (1 + km / DISTANCE_HALF_KM): 0.5 at 1 km, 0.25 at 3 km.
DISTANCE_HALF_KM = 1.0
# Within this distance, it is named as a reason.
NEARBY_KM = 2.0
# A redemption rate (redeemed / issued) of 40% counts in full; below MIN_COUPONS_FOR_RATE
# coupons issued, the pair's chains have no rate yet.
REDEMPTION_RATE_FULL = 0.4
MIN_COUPONS_FOR_RATE = 20

EARTH_RADIUS_KM = 6371.0088


@dataclass(frozen=True)
class ChainSuggestion:
    """A partner worth starting a chain with, why, and the numbers behind it."""

    partner: Business
    score: float  # 0..1
    shared_customers: int  # our customers who already buy at the partner
    reachable_customers: int  # our customers who never bought there
    complementarity: float  # 0..1, from COMPLEMENTARITY
    distance_km: float | None  # None when either has no coordinates
    similar_chains_redemption_rate: float | None  # None when the pair's chains issued too few coupons
    reasons: list[str]  # sentences for the portal, in the active language


def complementarity(first: str, second: str) -> float:
    """How well two categories feed each other (COMPLEMENTARITY), whichever comes first."""
    if first == second:
        return SAME_CATEGORY_COMPLEMENTARITY
    return COMPLEMENTARITY.get(frozenset({first, second}), DEFAULT_COMPLEMENTARITY)


def distance_km(first: Business, second: Business) -> float | None:
    """The great-circle distance between two businesses, or None if either has no coordinates."""
    if first.latitude is None or second.latitude is None:
        return None
    lat1, lon1, lat2, lon2 = map(
        math.radians, map(float, (first.latitude, first.longitude, second.latitude, second.longitude))
    )
    haversine = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(haversine))


def generate_chain_recommendations(
    business: Business | UUID | str, limit: int = 5, as_of: datetime | None = None
) -> list[ChainSuggestion]:
    """The partners this business should start a chain with, best first, at most `limit`.

    Candidates are the active businesses other than this one with which it has no chain
    proposed, accepted, active or paused, in either direction. Each gets a score in [0, 1],
    the weighted mean of the signals it has:

    - affinity (0.35): min(1, shared / customers / AFFINITY_FULL), where customers are this
      business's customers (a counted purchase in the last CUSTOMER_LOOKBACK) and shared are
      those of them who ever bought at the partner;
    - reach (0.15): reachable / customers, the share who never bought there;
    - complementarity (0.25): of the two categories, from COMPLEMENTARITY;
    - distance (0.15): 1 / (1 + km / DISTANCE_HALF_KM), only if both have coordinates;
    - past chains (0.10): min(1, rate / REDEMPTION_RATE_FULL), where rate is redeemed / issued
      over all chains between the same two categories, only once they issued
      MIN_COUPONS_FOR_RATE coupons.

    Three queries (four when given an id), whatever the number of partners and purchases."""
    if not isinstance(business, Business):
        business = Business.objects.get(pk=business)
    as_of = as_of or timezone.now()

    # Per business, how many of our customers ever bought there; our own row counts them all.
    our_customers = (
        counted_purchases()
        .filter(business=business, occurred_at__gt=as_of - CUSTOMER_LOOKBACK, occurred_at__lte=as_of)
        .order_by()
        .values("customer_id")
    )
    shared_by_business = dict(
        counted_purchases()
        .filter(customer_id__in=our_customers, occurred_at__lte=as_of)
        .order_by()
        .values("business_id")
        .annotate(customers=Count("customer_id", distinct=True))
        .values_list("business_id", "customers")
    )
    customer_count = shared_by_business.pop(business.pk, 0)

    chains_going = CrossPromoChain.objects.filter(status__in=OPEN_STATUSES)
    candidates = (
        Business.objects.filter(is_active=True)
        .exclude(pk=business.pk)
        .exclude(pk__in=chains_going.filter(source=business).values("target_id"))
        .exclude(pk__in=chains_going.filter(target=business).values("source_id"))
    )
    rates = _redemption_rates(business.category)

    suggestions = [
        _suggest(
            business,
            partner,
            customer_count=customer_count,
            shared=shared_by_business.get(partner.pk, 0),
            redemption_rate=rates.get(partner.category),
        )
        for partner in candidates
    ]
    suggestions.sort(key=lambda s: (-s.score, -s.shared_customers, s.partner.name, str(s.partner.pk)))
    return suggestions[:limit]


def _redemption_rates(category: str) -> dict[str, float]:
    """redeemed / issued over all chains between `category` and each other category (either
    direction, any status), for the pairs that issued MIN_COUPONS_FOR_RATE coupons or more."""
    rows = (
        CrossPromoChain.objects.filter(Q(source__category=category) | Q(target__category=category))
        .order_by()
        .values("source__category", "target__category")
        .annotate(issued=Sum("issued_count"), redeemed=Sum("redeemed_count"))
    )
    totals: dict[str, list[int]] = {}
    for row in rows:
        pair = (row["source__category"], row["target__category"])
        other = pair[1] if pair[0] == category else pair[0]
        issued_redeemed = totals.setdefault(other, [0, 0])
        issued_redeemed[0] += row["issued"] or 0
        issued_redeemed[1] += row["redeemed"] or 0
    return {other: redeemed / issued for other, (issued, redeemed) in totals.items() if issued >= MIN_COUPONS_FOR_RATE}


def _suggest(
    business: Business, partner: Business, *, customer_count: int, shared: int, redemption_rate: float | None
) -> ChainSuggestion:
    reachable = customer_count - shared
    fit = complementarity(business.category, partner.category)
    km = distance_km(business, partner)

    signals = [(WEIGHT_COMPLEMENTARITY, fit)]
    if customer_count:
        signals.append((WEIGHT_AFFINITY, min(1.0, shared / customer_count / AFFINITY_FULL)))
        signals.append((WEIGHT_REACH, reachable / customer_count))
    if km is not None:
        signals.append((WEIGHT_DISTANCE, 1 / (1 + km / DISTANCE_HALF_KM)))
    if redemption_rate is not None:
        signals.append((WEIGHT_PAST_CHAINS, min(1.0, redemption_rate / REDEMPTION_RATE_FULL)))
    score = sum(weight * value for weight, value in signals) / sum(weight for weight, _value in signals)

    return ChainSuggestion(
        partner=partner,
        score=score,
        shared_customers=shared,
        reachable_customers=reachable,
        complementarity=fit,
        distance_km=km,
        similar_chains_redemption_rate=redemption_rate,
        reasons=_reasons(business, partner, shared=shared, reachable=reachable, fit=fit, km=km, rate=redemption_rate),
    )


def _reasons(business: Business, partner: Business, *, shared: int, reachable: int, fit, km, rate) -> list[str]:
    """The suggestion in words, strongest facts first, in the active language."""
    reasons = []
    if shared:
        reasons.append(
            ngettext(
                "%(count)s of your customers already buys there",
                "%(count)s of your customers already buy there",
                shared,
            )
            % {"count": number_format(shared, force_grouping=True)}
        )
    if reachable:
        reasons.append(
            ngettext(
                "%(count)s of your customers has never been there",
                "%(count)s of your customers have never been there",
                reachable,
            )
            % {"count": number_format(reachable, force_grouping=True)}
        )
    pair = {"first": CATEGORY_PLURAL[business.category], "second": CATEGORY_PLURAL[partner.category]}
    if business.category != partner.category and fit >= COMPLEMENTARY_REASON_FROM:
        reasons.append(_capitalized(_("%(first)s and %(second)s often send customers to each other") % pair))
    if km is not None and km <= NEARBY_KM:
        if km < 1:
            reasons.append(_("%(metres)s m away") % {"metres": number_format(round(km * 100) * 10)})
        else:
            reasons.append(_("%(km)s km away") % {"km": number_format(round(km, 1), decimal_pos=1)})
    if rate is not None:
        reasons.append(
            _("Chains between %(first)s and %(second)s had %(percent)s%% of coupons redeemed")
            % {**pair, "percent": number_format(round(rate * 100))}
        )
    return reasons


def _capitalized(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]
