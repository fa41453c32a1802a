"""Demo data of the loyalty app: the demo businesses' programs, about ten months of purchases
with redemptions, a few refunds and staff adjustments, expired bonuses, birthday bonuses,
and customers in every status tier.

Everything goes through `loyalty.services`, the path real purchases take, so the demo
ledger is as consistent as a real one. The plan is drawn from a seeded `random.Random`,
so the same sizes give the same purchases (external ids `demo-00001`, …) and the same
refund ids and adjustment keys. Seeding is one database transaction and is skipped as a
whole when the demo purchases already exist: running it again changes nothing.
"""

import random
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import ROUND_DOWN, Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Sum
from django.utils import timezone
from tqdm import tqdm

from accounts.models import Business, Membership, User
from loyalty import services
from loyalty.models import BonusAccount, StatusTier, Transaction
from loyalty.money import ZERO, round_down

PURCHASE_COUNT = 8000
HISTORY_DAYS = 364  # a year, just inside LOYALTY_MAX_BACKDATE_DAYS
SEED = 20261127
EXTERNAL_ID_PREFIX = "demo-"

# Each business's launch terms, set by the platform's admin.
PROGRAMS = {
    "zerno-coffee": {
        "accrual_rate": Decimal("5.00"),
        "max_redeem_share": Decimal("30.00"),
        "bonus_lifetime_days": 180,
        "hold_days": 0,
        "welcome_bonus": Decimal("100.00"),
        "birthday_bonus": Decimal("0.00"),
    },
    "len-salon": {
        "accrual_rate": Decimal("6.00"),
        "max_redeem_share": Decimal("25.00"),
        "bonus_lifetime_days": 365,
        "hold_days": 0,
        "welcome_bonus": Decimal("300.00"),
        "birthday_bonus": Decimal("500.00"),
    },
    "dental-plus": {
        "accrual_rate": Decimal("3.00"),
        "max_redeem_share": Decimal("20.00"),
        "bonus_lifetime_days": 365,
        "hold_days": 14,
        "welcome_bonus": Decimal("0.00"),
        "birthday_bonus": Decimal("0.00"),
    },
    "asana-yoga": {
        "accrual_rate": Decimal("7.00"),
        "max_redeem_share": Decimal("50.00"),
        "bonus_lifetime_days": 270,
        "hold_days": 3,
        "welcome_bonus": Decimal("200.00"),
        "birthday_bonus": Decimal("300.00"),
    },
    "pereplet-books": {
        "accrual_rate": Decimal("4.00"),
        "max_redeem_share": Decimal("40.00"),
        "bonus_lifetime_days": 365,
        "hold_days": 0,
        "welcome_bonus": Decimal("150.00"),
        "birthday_bonus": Decimal("0.00"),
    },
    "volga-bistro": {
        "accrual_rate": Decimal("5.00"),
        "max_redeem_share": Decimal("30.00"),
        "bonus_lifetime_days": 120,
        "hold_days": 0,
        "welcome_bonus": Decimal("0.00"),
        "birthday_bonus": Decimal("400.00"),
    },
    "kolos-bakery": {
        "accrual_rate": Decimal("5.00"),
        "max_redeem_share": Decimal("50.00"),
        "bonus_lifetime_days": 90,
        "hold_days": 0,
        "welcome_bonus": Decimal("50.00"),
        "birthday_bonus": Decimal("100.00"),
    },
    "britva-barber": {
        "accrual_rate": Decimal("8.00"),
        "max_redeem_share": Decimal("30.00"),
        "bonus_lifetime_days": 180,
        "hold_days": 0,
        "welcome_bonus": Decimal("200.00"),
        "birthday_bonus": Decimal("300.00"),
    },
    "umka-kids": {
        "accrual_rate": Decimal("3.00"),
        "max_redeem_share": Decimal("15.00"),
        "bonus_lifetime_days": 365,
        "hold_days": 7,
        "welcome_bonus": Decimal("300.00"),
        "birthday_bonus": Decimal("0.00"),
    },
    "romashka-flowers": {
        "accrual_rate": Decimal("6.00"),
        "max_redeem_share": Decimal("40.00"),
        "bonus_lifetime_days": 180,
        "hold_days": 0,
        "welcome_bonus": Decimal("100.00"),
        "birthday_bonus": Decimal("500.00"),
    },
    "energy-fitness": {
        "accrual_rate": Decimal("5.00"),
        "max_redeem_share": Decimal("20.00"),
        "bonus_lifetime_days": 365,
        "hold_days": 3,
        "welcome_bonus": Decimal("500.00"),
        "birthday_bonus": Decimal("0.00"),
    },
    "svezhest-cleaning": {
        "accrual_rate": Decimal("4.00"),
        "max_redeem_share": Decimal("50.00"),
        "bonus_lifetime_days": 120,
        "hold_days": 0,
        "welcome_bonus": Decimal("0.00"),
        "birthday_bonus": Decimal("0.00"),
    },
}
# Later changes by the business's owner, so the portal's history shows more than the launch.
PROGRAM_TWEAKS = {
    "zerno-coffee": {"birthday_bonus": Decimal("200.00")},
    "len-salon": {"accrual_rate": Decimal("7.00")},
    "volga-bistro": {"hold_days": 1, "max_redeem_share": Decimal("25.00")},
}


def _rounded(value: float, step: int) -> Decimal:
    return Decimal(int(value) // step * step)


@dataclass(frozen=True)
class Trade:
    """How a kind of business trades: how often people come, when, by which door, for how much."""

    visits: int  # relative frequency of a visit by a typical customer
    heavy_visits: int  # the same for the circle's biggest spenders
    hours: tuple[int, int]  # opening hours, local time
    source: str
    check: Callable[[random.Random], Decimal]


def _fitness_check(rng: random.Random) -> Decimal:
    if rng.random() < 0.6:
        return _rounded(rng.uniform(700, 1200), 50)  # a single class
    return _rounded(rng.uniform(3500, 8000), 100)  # a monthly pass


TRADES = {
    Business.Category.CAFE: Trade(35, 2, (8, 21), Transaction.Source.API, lambda r: _rounded(r.uniform(200, 900), 10)),
    Business.Category.RESTAURANT: Trade(
        18, 2, (12, 23), Transaction.Source.API, lambda r: _rounded(r.triangular(700, 4500, 1400), 10)
    ),
    Business.Category.BEAUTY: Trade(
        12, 3, (10, 20), Transaction.Source.WEBHOOK, lambda r: _rounded(r.uniform(1500, 6000), 100)
    ),
    Business.Category.CLINIC: Trade(
        6, 3, (9, 20), Transaction.Source.SYNC, lambda r: _rounded(r.triangular(2000, 15000, 4000), 100)
    ),
    Business.Category.FITNESS: Trade(12, 1, (7, 21), Transaction.Source.CASHIER, _fitness_check),
    Business.Category.SHOP: Trade(
        12, 1, (10, 21), Transaction.Source.SYNC, lambda r: _rounded(r.triangular(300, 3500, 700), 50) - 1
    ),
}
OTHER_TRADE = Trade(10, 1, (10, 20), Transaction.Source.API, lambda r: _rounded(r.uniform(300, 3000), 10))

# Customers planned into each tier above the lowest, from the lowest up (any further: the last).
TIER_SHARES = (0.08, 0.04, 0.015)
LIGHT_SHARE = 0.12  # customers planned into the lowest tier, with a few small purchases
LIGHT_CATEGORIES = {Business.Category.CAFE, Business.Category.SHOP}

ADJUSTMENTS = [
    # amount (negative: taken), by whom ("manager" of the business or the platform's "admin"), reason
    (Decimal("150.00"), "manager", "Компенсация: заказ задержали на 40 минут"),
    (Decimal("100.00"), "admin", "Бонус за отзыв о приложении"),
    (Decimal("-80.00"), "manager", "Исправление: бонусы начислены по чужому чеку"),
    (Decimal("300.00"), "manager", "Извинение за перенос записи"),
    (Decimal("50.00"), "admin", "Тест акции «Приведи друга»"),
]


def trade(business: Business) -> Trade:
    return TRADES.get(business.category, OTHER_TRADE)


@dataclass
class Planned:
    """One purchase to record."""

    day: int  # days before today
    minute: int  # minute of the day, the business's local time
    seq: int
    customer: User
    business: Business
    amount: Decimal
    redeem_share: float  # how much of what the customer may redeem they choose to; 0: pay in money
    refundable: bool  # a regular customer's, so a refund does not move a planned tier
    external_id: str = ""  # given once the plan is in order of time


@transaction.atomic
def seed_loyalty(
    *,
    admin: User,
    businesses: list[Business],
    customers: list[User],
    purchases: int = PURCHASE_COUNT,
    days: int = HISTORY_DAYS,
    seed: int = SEED,
) -> dict:
    """Give the demo businesses their programs and about `purchases` purchases by `customers`
    over the last `days` days, with redemptions, refunds, adjustments, expiries, birthday
    bonuses and customers in every tier. Does nothing when the demo purchases exist.

    Returns the summary of `demo_summary()` with `created` telling whether it seeded."""
    if Transaction.objects.filter(business__in=businesses, external_id__startswith=EXTERNAL_ID_PREFIX).exists():
        return {**demo_summary(), "created": False}
    tiers = list(StatusTier.objects.order_by("threshold"))
    if not tiers:
        raise RuntimeError("No status tiers: run `manage.py migrate` first (migration loyalty/0002 seeds them).")
    if not 30 <= days < settings.LOYALTY_MAX_BACKDATE_DAYS:
        raise ValueError(f"The demo's history spans 30 to {settings.LOYALTY_MAX_BACKDATE_DAYS - 1} days.")
    rng = random.Random(seed)

    _seed_programs(admin, businesses)
    customers = [customer for customer in customers if customer.is_active]
    plan = _plan(rng, customers=customers, businesses=businesses, purchases=purchases, days=days, tiers=tiers)
    _record(plan)
    _refund_some(rng, plan, purchases)
    _adjust_some(rng, plan, admin, purchases)
    today = timezone.localdate()
    for back in range(30, -1, -1):  # the daily birthday task over the last month
        services.grant_birthday_bonuses(today - timedelta(days=back))
    services.check_bonus_expiration()
    services.recompute_all_tiers()

    empty = [tier.name for tier in StatusTier.objects.annotate(n=Count("accounts")).filter(n=0)]
    if empty:
        raise RuntimeError(f"Demo seeding left tiers without customers: {', '.join(empty)}")
    return {**demo_summary(), "created": True}


def demo_summary() -> dict:
    """Purchases in the circle, bonuses in circulation, and customers per tier (lowest first)."""
    in_circulation = BonusAccount.objects.aggregate(total=Sum("balance"))["total"] or ZERO
    return {
        "purchases": Transaction.objects.count(),
        "in_circulation": round_down(in_circulation),
        "tiers": {tier.name: tier.n for tier in StatusTier.objects.annotate(n=Count("accounts")).order_by("threshold")},
    }


def _seed_programs(admin: User, businesses: list[Business]) -> None:
    owners = {
        membership.business_id: membership.user
        for membership in Membership.objects.filter(business__in=businesses, role=Membership.Role.OWNER)
    }
    for business in businesses:
        if business.slug in PROGRAMS:
            services.update_program(business=business, changed_by=admin, **PROGRAMS[business.slug])
        if business.slug in PROGRAM_TWEAKS:
            services.update_program(
                business=business, changed_by=owners.get(business.pk, admin), **PROGRAM_TWEAKS[business.slug]
            )


# --- The plan ---------------------------------------------------------------------------


def _tier_targets(tiers: list[StatusTier]) -> list[tuple[float, float, float]]:
    """For each tier, lowest first: (share of customers planned into it, lowest and highest
    planned spend). The lowest tier gets light customers with a few small purchases.

    Spend is planned well inside the tier, so bonuses paying part of the checks (a tenth
    at most) cannot move a customer down, nor anything move one up."""
    targets = []
    for index, tier in enumerate(tiers):
        low = float(tier.threshold)
        gap = float(tiers[index + 1].threshold) - low if index + 1 < len(tiers) else max(low * 0.8, 1000.0)
        if index == 0:
            targets.append((LIGHT_SHARE, low + 0.01 * gap, low + 0.3 * gap))
        else:
            share = TIER_SHARES[min(index - 1, len(TIER_SHARES) - 1)]
            targets.append((share, low + 0.25 * gap, low + 0.85 * gap))
    return targets


def _plan(rng, *, customers, businesses, purchases, days, tiers) -> list[Planned]:
    targets = _tier_targets(tiers)
    heads = [max(1, round(len(customers) * share)) for share, _low, _high in targets]
    if len(customers) < sum(heads):
        raise ValueError(f"The demo needs at least {sum(heads)} customers to have some in every tier.")
    order = list(customers)
    rng.shuffle(order)
    plan: list[Planned] = []

    def add(customer, business, amount, join_day, redeem_chance, refundable):
        hours = trade(business).hours
        plan.append(
            Planned(
                day=rng.randint(1, join_day),
                minute=rng.randint(hours[0] * 60, hours[1] * 60 - 1),
                seq=len(plan),
                customer=customer,
                business=business,
                amount=amount,
                redeem_share=rng.choice((1.0, 1.0, 0.5, 0.3)) if rng.random() < redeem_chance else 0.0,
                refundable=refundable,
            )
        )

    def fill(customer, pool, weights, low, high, join_day):
        """Purchases until the customer's spend reaches a target in [low, high], never above high."""
        target, total, misses = rng.uniform(low, high), 0.0, 0
        while total < target and misses < 50:
            business = rng.choices(pool, weights)[0]
            amount = trade(business).check(rng)
            if total + float(amount) > high:
                misses += 1
                continue
            total += float(amount)
            add(customer, business, amount, join_day, redeem_chance=0.2, refundable=False)

    # Customers planned into each tier. The light ones buy coffee and books now and then; the
    # big spenders came early and visit the pricier places.
    cheap = [business for business in businesses if business.category in LIGHT_CATEGORIES] or businesses
    cheap_weights = [trade(business).visits for business in cheap]
    heavy_weights = [trade(business).heavy_visits for business in businesses]
    taken = 0
    for index, ((_share, low, high), count) in enumerate(zip(targets, heads, strict=True)):
        for customer in order[taken : taken + count]:
            if index == 0:
                fill(customer, cheap, cheap_weights, low, high, join_day=rng.randint(7, days))
            else:
                fill(customer, businesses, heavy_weights, low, high, join_day=rng.randint(days * 2 // 3, days))
        taken += count

    # Everyone else: regulars of one to three favourite places, some far more often than others.
    regulars = order[taken:]
    remaining = purchases - len(plan)
    if regulars and remaining > 0:
        visit_weights = [trade(business).visits for business in businesses]
        profiles = []
        for _customer in regulars:
            favourites = rng.choices(businesses, visit_weights, k=rng.randint(1, 3))
            profiles.append((favourites, rng.randint(20, days)))
        cumulative, running = [], 0.0
        for _customer in regulars:
            running += rng.lognormvariate(0, 0.9)
            cumulative.append(running)
        for _ in range(remaining):
            index = rng.choices(range(len(regulars)), cum_weights=cumulative)[0]
            favourites, join_day = profiles[index]
            loyal = rng.random() < 0.75
            business = rng.choice(favourites) if loyal else rng.choices(businesses, visit_weights)[0]
            add(regulars[index], business, trade(business).check(rng), join_day, redeem_chance=0.3, refundable=True)

    plan.sort(key=lambda item: (-item.day, item.minute, item.seq))
    for number, item in enumerate(plan, start=1):
        item.external_id = f"{EXTERNAL_ID_PREFIX}{number:05d}"
    return plan


# --- Recording ----------------------------------------------------------------------------


def _record(plan: list[Planned]) -> None:
    """Record the plan in order of time through `record_transaction`, asking first how much
    each redeeming customer may spend, so every redemption succeeds."""
    cashiers = {
        membership.business_id: membership.user
        for membership in Membership.objects.filter(role=Membership.Role.CASHIER).select_related("user")
    }
    todays: dict[str, tuple[zoneinfo.ZoneInfo, date]] = {}
    bought: set = set()
    # A progress bar on a terminal (`make run`); silent when the output is not one (tests, CI).
    for item in tqdm(plan, desc="Purchases", unit=" purchases", disable=None, leave=False):
        business = item.business
        if business.time_zone not in todays:
            zone = zoneinfo.ZoneInfo(business.time_zone)
            todays[business.time_zone] = (zone, timezone.localdate(timezone=zone))
        zone, today = todays[business.time_zone]
        day = today - timedelta(days=item.day)
        occurred_at = datetime.combine(day, time(), tzinfo=zone) + timedelta(minutes=item.minute)
        redeem = ZERO
        if item.redeem_share and item.customer.pk in bought:
            redeem = _redeemable(item, occurred_at)
        source = trade(business).source
        services.record_transaction(
            business=business,
            customer=item.customer,
            external_id=item.external_id,
            amount=item.amount,
            redeem=redeem,
            occurred_at=occurred_at,
            source=source,
            recorded_by=cashiers.get(business.pk) if source == Transaction.Source.CASHIER else None,
        )
        bought.add(item.customer.pk)


def _redeemable(item: Planned, occurred_at: datetime) -> Decimal:
    """Whole roubles the customer chooses to pay with bonuses: a share of what could be spent
    both at the time of the purchase and now (when `record_transaction` spends them)."""
    account = services.get_account(item.customer)
    most = min(
        services.max_redeemable(account=account, business=item.business, check_amount=item.amount),
        services.spendable_balance(account, at=occurred_at),
    )
    return (most * Decimal(str(item.redeem_share))).to_integral_value(rounding=ROUND_DOWN).quantize(Decimal("0.01"))


def _refund_some(rng: random.Random, plan: list[Planned], purchases: int) -> None:
    """A handful of refunds of recent purchases: half in full, half in part (one of those then
    refunded in full as well)."""
    candidates = [item for item in plan if item.refundable and item.day <= 45 and item.amount >= 1000]
    count = min(len(candidates), 2 * max(2, purchases // 600))
    chosen = sorted(rng.sample(candidates, count), key=lambda item: item.external_id)
    for number, item in enumerate(chosen, start=1):
        if number % 2:
            services.refund_transaction(business=item.business, external_id=item.external_id)
            continue
        part = (item.amount * Decimal(str(rng.uniform(0.2, 0.6)))).to_integral_value(rounding=ROUND_DOWN)
        services.refund_transaction(
            business=item.business,
            external_id=item.external_id,
            amount=part.quantize(Decimal("0.01")),
            refund_id=f"demo-refund-{number}",
        )
        if number == 2:  # the rest of it came back later
            services.refund_transaction(business=item.business, external_id=item.external_id)


def _adjust_some(rng: random.Random, plan: list[Planned], admin: User, purchases: int) -> None:
    """A few manual corrections by managers and by the platform, each with its reason."""
    managers = {
        membership.business_id: membership.user
        for membership in Membership.objects.filter(role=Membership.Role.MANAGER).select_related("user")
    }
    regular = [item for item in plan if item.refundable]
    count = min(len(regular), max(3, purchases // 700))
    for number, item in enumerate(rng.sample(regular, count), start=1):
        amount, by, reason = ADJUSTMENTS[(number - 1) % len(ADJUSTMENTS)]
        if amount < 0:
            spendable = services.spendable_balance(services.get_account(item.customer))
            amount = -min(-amount, spendable.to_integral_value(rounding=ROUND_DOWN))
            if amount == 0:
                continue
        services.adjust_balance(
            user=item.customer,
            amount=amount.quantize(Decimal("0.01")),
            reason=reason,
            created_by=managers.get(item.business.pk, admin) if by == "manager" else admin,
            business=item.business if by == "manager" else None,
            idempotency_key=f"demo-adjust-{number}",
        )
