"""Demo data of the loyalty app: the demo businesses' programs, about ten months of purchases
with redemptions, a few refunds and staff adjustments, expired bonuses, birthday bonuses,
and customers in every status tier.

Everything goes through `loyalty.services`, the path real purchases take, so the demo
ledger is as consistent as a real one. The history is lived in order of time on a demo
clock (`clock_at`): each purchase, refund, adjustment, change of terms and nightly task runs
at its own moment, so every row it writes (ledger entries, lots with their hold and expiry,
tier changes) carries that moment, and the charts show the year as it went. The plan is
drawn from a seeded `random.Random`, so the same sizes give the same purchases (external ids
`demo-00001`, …) and the same refund ids and adjustment keys. Seeding is one database
transaction and is skipped as a whole when the demo purchases already exist: running it
again changes nothing.
"""

import random
import zoneinfo
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import ROUND_DOWN, Decimal
from functools import partial
from operator import attrgetter
from typing import NamedTuple

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
BIRTHDAY_DAYS = 30  # the daily birthday task runs over the last month of the history
# When the beat schedule (svoykrug/settings.py, in UTC) runs the daily tasks, in local time.
EXPIRY_TIME = time(0, 10)
BIRTHDAY_TIME = time(9, 0)
PROGRAM_TWEAK_TIME = time(10, 0)

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
# At most about this share of the purchases goes to the customers planned into the tiers (the
# big spenders buy a lot); the rest are the regulars', so that most customers buy something.
TIER_PURCHASE_SHARE = 0.45
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
    occurred_at: datetime | None = None  # likewise


class Step(NamedTuple):
    """One thing that happens in the demo's history, and when."""

    at: datetime
    run: Callable[[], object]


@contextmanager
def clock_at(moment: datetime) -> Iterator[None]:
    """Demo-only: within the block `django.utils.timezone.now()` is `moment` for every caller
    (the services, `auto_now` fields, `timezone.localdate()`), so history written through the
    real services carries its own time instead of the time of seeding.

    It replaces the module's attribute for the whole process: fine for `seed_demo`, never for
    code that serves requests. Defaults bound at import (`default=timezone.now`, as in
    `User.date_joined`) keep the real time."""
    if timezone.is_naive(moment):
        raise ValueError("The demo clock needs an aware time.")
    real_now = timezone.now

    def simulated_now() -> datetime:
        return moment

    timezone.now = simulated_now
    try:
        yield
    finally:
        timezone.now = real_now


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
    bonuses and customers in every tier, each at its moment. Does nothing when the demo
    purchases exist.

    Returns the summary of `demo_summary()` with `created` telling whether it seeded."""
    if Transaction.objects.filter(business__in=businesses, external_id__startswith=EXTERNAL_ID_PREFIX).exists():
        return {**demo_summary(), "created": False}
    tiers = list(StatusTier.objects.order_by("threshold"))
    if not tiers:
        raise RuntimeError("No status tiers: run `manage.py migrate` first (migration loyalty/0002 seeds them).")
    if not 30 <= days < settings.LOYALTY_MAX_BACKDATE_DAYS:
        raise ValueError(f"The demo's history spans 30 to {settings.LOYALTY_MAX_BACKDATE_DAYS - 1} days.")
    rng = random.Random(seed)
    now, today = timezone.now(), timezone.localdate()
    launch_day = today - timedelta(days=days)

    # The programs start the day the history does, before its first purchase.
    with clock_at(_local(launch_day, time())):
        _launch_programs(admin, businesses)
    customers = [customer for customer in customers if customer.is_active]
    plan = _plan(rng, customers=customers, businesses=businesses, purchases=purchases, days=days, tiers=tiers)
    history = [
        *_program_tweaks(admin, businesses, at=_local(today - timedelta(days=days // 3), PROGRAM_TWEAK_TIME)),
        *_purchases(plan),
        *_refunds(rng, plan, purchases),
        *_adjustments(rng, plan, admin, purchases),
        *_daily_tasks(launch_day, today, until=now),
    ]
    live_through(history)
    _joined(rng, customers, plan, since=_local(launch_day, time()), until=now)
    # Today's run of the nightly tasks, at the real time.
    services.check_bonus_expiration()
    services.recompute_all_tiers()

    empty = [tier.name for tier in StatusTier.objects.annotate(n=Count("accounts")).filter(n=0)]
    if empty:
        raise RuntimeError(f"Demo seeding left tiers without customers: {', '.join(empty)}")
    return {**demo_summary(), "created": True}


def _joined(rng: random.Random, customers: list[User], plan: list[Planned], *, since: datetime, until) -> None:
    """Each customer joined the circle before their first purchase (half an hour to two weeks
    before, not before the launch); those yet to buy joined on any day of the year."""
    first: dict = {}
    for item in plan:
        first[item.customer.pk] = min(first.get(item.customer.pk, item.occurred_at), item.occurred_at)
    for customer in customers:
        bought = first.get(customer.pk)
        if bought is None:
            customer.date_joined = since + (until - since) * rng.random()
        else:
            customer.date_joined = max(since, bought - timedelta(hours=rng.uniform(0.5, 24 * 14)))
    User.objects.bulk_update(customers, ["date_joined"], batch_size=500)


def demo_summary() -> dict:
    """Purchases in the circle, bonuses in circulation, and customers per tier (lowest first)."""
    in_circulation = BonusAccount.objects.aggregate(total=Sum("balance"))["total"] or ZERO
    return {
        "purchases": Transaction.objects.count(),
        "in_circulation": round_down(in_circulation),
        "tiers": {tier.name: tier.n for tier in StatusTier.objects.annotate(n=Count("accounts")).order_by("threshold")},
    }


def _local(day: date, moment: time) -> datetime:
    """A moment of a day in the circle's own time zone (TIME_ZONE)."""
    return datetime.combine(day, moment, tzinfo=timezone.get_current_timezone())


def _launch_programs(admin: User, businesses: list[Business]) -> None:
    for business in businesses:
        if business.slug in PROGRAMS:
            services.update_program(business=business, changed_by=admin, **PROGRAMS[business.slug])


def _program_tweaks(admin: User, businesses: list[Business], *, at: datetime) -> list[Step]:
    """The owners' later changes of terms, so the purchases after them earn by the new ones."""
    owners = {
        membership.business_id: membership.user
        for membership in Membership.objects.filter(business__in=businesses, role=Membership.Role.OWNER)
    }
    return [
        Step(
            at,
            partial(
                services.update_program,
                business=business,
                changed_by=owners.get(business.pk, admin),
                **PROGRAM_TWEAKS[business.slug],
            ),
        )
        for business in businesses
        if business.slug in PROGRAM_TWEAKS
    ]


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
    # big spenders came early and visit the pricier places. The tiers are filled alike (the
    # next customer goes to the tier furthest from its share, every tier getting one first)
    # until they have their share of the customers or TIER_PURCHASE_SHARE of the purchases:
    # the rest are the regulars', whose purchases are the ones refunded and corrected.
    cheap = [business for business in businesses if business.category in LIGHT_CATEGORIES] or businesses
    cheap_weights = [trade(business).visits for business in cheap]
    heavy_weights = [trade(business).heavy_visits for business in businesses]
    budget = purchases * TIER_PURCHASE_SHARE
    placed = [0] * len(targets)
    for customer in order:
        open_tiers = [index for index in range(len(targets)) if placed[index] < heads[index]]
        if not open_tiers or (len(plan) >= budget and min(placed) > 0):
            break
        index = min(open_tiers, key=lambda index: placed[index] / heads[index])
        _share, low, high = targets[index]
        if index == 0:
            fill(customer, cheap, cheap_weights, low, high, join_day=rng.randint(7, days))
        else:
            fill(customer, businesses, heavy_weights, low, high, join_day=rng.randint(days * 2 // 3, days))
        placed[index] += 1
    taken = sum(placed)

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
    todays: dict[str, tuple[zoneinfo.ZoneInfo, date]] = {}
    for number, item in enumerate(plan, start=1):
        item.external_id = f"{EXTERNAL_ID_PREFIX}{number:05d}"
        zone_name = item.business.time_zone
        if zone_name not in todays:
            zone = zoneinfo.ZoneInfo(zone_name)
            todays[zone_name] = (zone, timezone.localdate(timezone=zone))
        zone, today = todays[zone_name]
        day = today - timedelta(days=item.day)
        item.occurred_at = datetime.combine(day, time(), tzinfo=zone) + timedelta(minutes=item.minute)
    return plan


# --- The history -------------------------------------------------------------------------


def live_through(history: list[Step], desc: str = "History") -> None:
    """Run the history in order of time, each step with the clock at its moment."""
    # A progress bar on a terminal (`make run`); silent when the output is not one (tests, CI).
    ordered = sorted(history, key=attrgetter("at"))  # stable: a tie keeps the order given
    for step in tqdm(ordered, desc=desc, unit=" steps", disable=None, leave=False):
        with clock_at(step.at):
            step.run()


def _purchases(plan: list[Planned]) -> list[Step]:
    """Each purchase through `record_transaction` at its time, asking first how much each
    redeeming customer may spend, so every redemption succeeds."""
    cashiers = {
        membership.business_id: membership.user
        for membership in Membership.objects.filter(role=Membership.Role.CASHIER).select_related("user")
    }
    bought: set = set()

    def record(item: Planned) -> None:
        redeem = _redeemable(item) if item.redeem_share and item.customer.pk in bought else ZERO
        source = trade(item.business).source
        services.record_transaction(
            business=item.business,
            customer=item.customer,
            external_id=item.external_id,
            amount=item.amount,
            redeem=redeem,
            occurred_at=item.occurred_at,
            source=source,
            recorded_by=cashiers.get(item.business.pk) if source == Transaction.Source.CASHIER else None,
        )
        bought.add(item.customer.pk)

    return [Step(item.occurred_at, partial(record, item)) for item in plan]


def _redeemable(item: Planned) -> Decimal:
    """Whole roubles the customer chooses to pay with bonuses: a share of what they may
    spend on this check now (the clock is at the purchase)."""
    account = services.get_account(item.customer)
    most = services.max_redeemable(account=account, business=item.business, check_amount=item.amount)
    return (most * Decimal(str(item.redeem_share))).to_integral_value(rounding=ROUND_DOWN).quantize(Decimal("0.01"))


def _refunds(rng: random.Random, plan: list[Planned], purchases: int) -> list[Step]:
    """A handful of refunds of recent purchases, some days after each: half in full, half in
    part (one of those then refunded in full as well, as many days later again). Every one
    falls before today."""
    candidates = [item for item in plan if item.refundable and 3 <= item.day <= 45 and item.amount >= 1000]
    count = min(len(candidates), 2 * max(2, purchases // 600))
    chosen = sorted(rng.sample(candidates, count), key=lambda item: item.external_id)
    steps = []
    for number, item in enumerate(chosen, start=1):
        wait = timedelta(days=rng.randint(1, (item.day - 1) // 2))
        in_full = partial(services.refund_transaction, business=item.business, external_id=item.external_id)
        if number % 2:
            steps.append(Step(item.occurred_at + wait, in_full))
            continue
        part = (item.amount * Decimal(str(rng.uniform(0.2, 0.6)))).to_integral_value(rounding=ROUND_DOWN)
        steps.append(
            Step(
                item.occurred_at + wait,
                partial(
                    services.refund_transaction,
                    business=item.business,
                    external_id=item.external_id,
                    amount=part.quantize(Decimal("0.01")),
                    refund_id=f"demo-refund-{number}",
                ),
            )
        )
        if number == 2:  # the rest of it came back later
            steps.append(Step(item.occurred_at + 2 * wait, in_full))
    return steps


def _adjustments(rng: random.Random, plan: list[Planned], admin: User, purchases: int) -> list[Step]:
    """A few manual corrections by managers and by the platform, each with its reason, made
    an hour or two after a customer's purchase."""
    managers = {
        membership.business_id: membership.user
        for membership in Membership.objects.filter(role=Membership.Role.MANAGER).select_related("user")
    }
    regular = [item for item in plan if item.refundable and item.day >= 2]
    count = min(len(regular), max(3, purchases // 700))
    steps = []
    for number, item in enumerate(rng.sample(regular, count), start=1):
        amount, by, reason = ADJUSTMENTS[(number - 1) % len(ADJUSTMENTS)]
        by_manager = by == "manager"
        adjust = partial(
            _adjust,
            customer=item.customer,
            amount=amount,
            reason=reason,
            created_by=managers.get(item.business.pk, admin) if by_manager else admin,
            business=item.business if by_manager else None,
            idempotency_key=f"demo-adjust-{number}",
        )
        steps.append(Step(item.occurred_at + timedelta(minutes=rng.randint(30, 180)), adjust))
    return steps


def _adjust(
    *, customer: User, amount: Decimal, reason: str, created_by: User, business: Business | None, idempotency_key: str
) -> None:
    if amount < 0:  # takes no more than the customer can spend at the time
        spendable = services.spendable_balance(services.get_account(customer))
        amount = -min(-amount, spendable.to_integral_value(rounding=ROUND_DOWN))
        if amount == 0:
            return
    services.adjust_balance(
        user=customer,
        amount=amount.quantize(Decimal("0.01")),
        reason=reason,
        created_by=created_by,
        business=business,
        idempotency_key=idempotency_key,
    )


def _daily_tasks(launch_day: date, today: date, *, until: datetime) -> list[Step]:
    """The scheduled tasks that write the ledger, run at their times of each day of the
    history before `until`: the nightly expiry, and the birthday bonuses over its last month."""
    steps = []
    for offset in range(1, (today - launch_day).days + 1):
        day = launch_day + timedelta(days=offset)
        steps.append(Step(_local(day, EXPIRY_TIME), services.check_bonus_expiration))
        if (today - day).days <= BIRTHDAY_DAYS:
            steps.append(Step(_local(day, BIRTHDAY_TIME), partial(services.grant_birthday_bonuses, day)))
    return [step for step in steps if step.at < until]
