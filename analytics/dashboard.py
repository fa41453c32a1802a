"""A partner's dashboard: `generate_business_dashboard(business_id, period, as_of)`.

The period ends at the end of `as_of`'s day (today without one) on the business's own
clock (`Business.time_zone`): "day" is that day, "week" the 7 days and "month" the 30 days
ending with it. Each figure comes for that period and for the one of the same length just
before it, with a series for charts: by hour for a day, by day for a week or a month, every
point present (the missing ones filled with zeros here, not in SQL).

Definitions (the warehouse's rows; every query is scoped to the business and reads FINAL):
- revenue: money paid less money refunded (`paid_amount - money_refunded`) of the
  business's purchases that occurred in the period; a refund counts against its purchase's
  time, and the warehouse keeps only a purchase's latest state, so a replay of the past
  (`as_of`) sees refunds made since.
- purchases: those not fully refunded; average check: revenue / purchases.
- new customers: bought in the period (not fully refunded), and their first purchase at the
  business ever (whatever became of it) is in the period; returning: bought in the period,
  first came before it. New + returning = the period's buyers.
- bonuses issued: accrual, welcome and birthday entries of lots the business issued;
  spent: redemptions at the business, whoever issued the bonuses (refund returns do not net
  out); expired: expiry entries of its lots. All positive, by the entries' times.
- bonus liability: the sum of every entry of its lots up to the period's end (its bonuses
  still outstanding), for the previous period at that one's end.
- a customer's home partner is where their first purchase in the circle occurred (whatever
  became of it); `revenue_from_others_customers` is revenue here from customers whose home
  is elsewhere, `own_customers_spent_elsewhere` the revenue at other partners from customers
  whose home is here (a total: no other partner's figures are shown).
- cross-promo: coupons issued by the business's chains (it is their source) by issue time;
  coupons redeemed here (it is their target) by redemption time, and the discounts and
  bonuses they gave.
- events (the business's own, as host; `event_registrations`): events held are those that
  started in the period, by now, and were not cancelled (an event nobody ever registered for
  has no row in the warehouse and is not counted); registrations are their seats taken
  (registered, checked in or no-show: not waitlisted, not cancelled); attendance is the
  checked-in share of the seats of those of them that have ended, in percent to one decimal
  (None without any: its change is in points, not percent); bonuses for tickets are what
  their registrations paid less what was refunded (a late cancellation keeps its price, also
  when the customer registers again on the same row and pays anew);
  new attendees are the checked-in customers, each once, with no purchase here before the
  event's start (`partner_firsts`, whatever became of the purchase).
- segments: the RFM segment counts of the business's customers at the period's end
  (`count_rfm_segments`: `calculate_rfm_segments` counted in the warehouse), now only (not for
  the previous period).
- at risk: the ten highest churn scores of the business (analytics.churn's latest, not
  replayed by `as_of`), from PostgreSQL.

Four warehouse queries per dashboard: purchases by bucket, ledger by bucket, customers (with
the coupons and the events), RFM.
Buckets are local days and hours as the warehouse's time zone database has them, assumed the
same as Python's."""

from dataclasses import dataclass, fields
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

from django.db.models import Max
from django.utils import timezone

from accounts.models import Business
from accounts.phones import mask_phone
from analytics.export import ensure_fresh
from analytics.models import ChurnScore
from analytics.warehouse import get_warehouse
from loyalty.models import Transaction
from loyalty.money import KOPECK, ZERO, as_money

__all__ = ["PERIODS", "RATES", "AtRiskCustomer", "DashboardData", "Figures", "delta", "generate_business_dashboard"]

PERIODS = {"day": 1, "week": 7, "month": 30}
SERIES = ("revenue", "purchases", "bonuses_issued", "bonuses_spent", "bonuses_expired")
BEFORE = date(1970, 1, 1)  # the ledger query's bucket for entries older than both periods


def delta(current, previous) -> Decimal | None:
    """The change from `previous` to `current` in percent, to one decimal place; None when
    there was nothing before to compare with."""
    if not previous:
        return None
    change = (Decimal(current) - Decimal(previous)) * 100 / abs(Decimal(previous))
    return change.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class Figures:
    """The figures of one period (see the module's docstring for what each one counts)."""

    revenue: Decimal
    purchases: int
    average_check: Decimal
    new_customers: int
    returning_customers: int
    bonuses_issued: Decimal
    bonuses_spent: Decimal
    bonuses_expired: Decimal
    bonus_liability: Decimal
    revenue_from_others_customers: Decimal
    own_customers_spent_elsewhere: Decimal
    coupons_issued: int = 0
    coupons_redeemed: int = 0
    coupon_rewards: Decimal = ZERO
    events_held: int = 0
    event_registrations: int = 0
    event_attendance: Decimal | None = None  # percent; None: no seats of an ended event
    event_ticket_bonuses: Decimal = ZERO
    event_new_attendees: int = 0


# Figures that are shares in percent: their change is the difference in points.
RATES = ("event_attendance",)


@dataclass(frozen=True)
class AtRiskCustomer:
    user_id: object
    name: str  # the display name, else the masked phone
    risk: float  # the probability of no purchase here within the churn horizon
    last_purchase_at: datetime | None


@dataclass(frozen=True)
class DashboardData:
    """One partner's dashboard. `current` and `previous` hold the two periods' figures:
    [start, end) and [previous_start, start), aware datetimes on the business's clock.
    `series[name]` and `previous_series[name]` are lists of (bucket, value), one point per
    hour (an aware datetime) for "day", per day (a date) otherwise, for each of SERIES."""

    business_id: object
    period: str
    time_zone: str
    start: datetime
    end: datetime
    previous_start: datetime
    current: Figures
    previous: Figures
    series: dict[str, list[tuple[date | datetime, Decimal | int]]]
    previous_series: dict[str, list[tuple[date | datetime, Decimal | int]]]
    segments: dict[str, int]
    at_risk: list[AtRiskCustomer]

    def delta(self, name: str) -> Decimal | None:
        """The percent change of figure `name` from the previous period (None from zero); for
        a share (RATES), the change in percentage points (None when either is missing)."""
        current, previous = getattr(self.current, name), getattr(self.previous, name)
        if name in RATES:
            return None if current is None or previous is None else current - previous
        return delta(current, previous)

    def deltas(self) -> dict[str, Decimal | None]:
        return {field.name: self.delta(field.name) for field in fields(Figures)}


# PREWHERE filters rows before FINAL picks each row's latest version, which is right only on
# columns every version of a row shares: a purchase's business_id and occurred_at (its sorting
# key) and customer_id, and every column of a ledger entry (entries never change). It spares
# merging the versions of the rows left out (ClickHouse 18.16 does not move WHERE there
# under FINAL): 1.5 s → 0.3 s on 4 million ledger rows there. Status and amounts are filtered after.

# Purchases by local day and hour (hour 0 unless `hourly`) over both periods: revenue and
# purchases, whose period totals are the sums of the buckets.
PURCHASES_SQL = """
SELECT toDate(occurred_at, %(tz)s) AS day, toHour(occurred_at, %(tz)s) * %(hourly)s AS hour,
       sum(paid_amount - money_refunded) AS revenue,
       countIf(status != 'refunded') AS purchases
FROM purchases FINAL
PREWHERE business_id = %(business)s
  AND occurred_at >= toDateTime(%(previous_start)s, 'UTC') AND occurred_at < toDateTime(%(end)s, 'UTC')
GROUP BY day, hour
"""

# Ledger movements of the business's bonuses (role issuer: its lots) and at the business
# (role place) over both periods, by local day and hour; and, as one more row dated
# 1970-01-01, the sum of its bonuses' movements before them, for the liability (the issuer
# rows only: role is in business_ledger's sorting key, after the partner).
LEDGER_SQL = """
SELECT toDate(created_at, %(tz)s) AS day,
       toHour(created_at, %(tz)s) * %(hourly)s AS hour,
       sumIf(amount, own AND kind IN ('accrual', 'welcome', 'birthday')) AS issued,
       -sumIf(amount, NOT own AND kind = 'redemption') AS spent,
       -sumIf(amount, own AND kind = 'expiry') AS expired,
       sumIf(amount, own) AS liability_change
FROM (
    SELECT kind, amount, created_at, role = 'issuer' AS own
    FROM business_ledger FINAL
    PREWHERE partner_id = %(business)s
      AND created_at >= toDateTime(%(previous_start)s, 'UTC') AND created_at < toDateTime(%(end)s, 'UTC')
)
GROUP BY day, hour
UNION ALL
SELECT toDate('1970-01-01') AS day, 0 AS hour,
       sumIf(amount, 0) AS issued, sumIf(amount, 0) AS spent, sumIf(amount, 0) AS expired,
       sum(amount) AS liability_change
FROM business_ledger FINAL
PREWHERE partner_id = %(business)s AND role = 'issuer' AND created_at < toDateTime(%(previous_start)s, 'UTC')
"""

# Each query below looks customers up in the smallest set that answers it, not in all the
# business's customers: a partner of a large circle has a hundred thousand of them, and
# every lookup of a home reads customer_firsts.

# Who bought here in either period (refunded purchases too: a superset, filtered later).
PERIOD_BUYERS_SQL = """
SELECT customer_id FROM purchases
PREWHERE business_id = %(business)s
  AND occurred_at >= toDateTime(%(previous_start)s, 'UTC') AND occurred_at < toDateTime(%(end)s, 'UTC')
"""

# The home partner (that of the first purchase in the circle) of the customers in {who}.
HOMES_SQL = """
SELECT customer_id, argMin(home, first_key) AS home
FROM customer_firsts
WHERE customer_id IN ({who})
GROUP BY customer_id
"""

# The period's buyers here, one row each: how many counted purchases and what money in each
# period, their first purchase here ever (partner_firsts), and their home; then counted and
# summed. New + returning = the period's buyers.
HERE_SQL = """
SELECT countIf(here_now > 0 AND first_here >= toDateTime(%(start)s, 'UTC')) AS new_now,
       countIf(here_now > 0 AND first_here < toDateTime(%(start)s, 'UTC')) AS returning_now,
       countIf(here_before > 0 AND first_here >= toDateTime(%(previous_start)s, 'UTC')) AS new_before,
       countIf(here_before > 0 AND first_here < toDateTime(%(previous_start)s, 'UTC')) AS returning_before,
       sumIf(paid_here_now, home != %(business)s) AS from_others_now,
       sumIf(paid_here_before, home != %(business)s) AS from_others_before
FROM (
    SELECT *
    FROM (
        SELECT customer_id,
               countIf(counted AND in_current) AS here_now,
               countIf(counted AND NOT in_current) AS here_before,
               sumIf(money, in_current) AS paid_here_now,
               sumIf(money, NOT in_current) AS paid_here_before
        FROM (
            SELECT customer_id,
                   paid_amount - money_refunded AS money,
                   status != 'refunded' AS counted,
                   occurred_at >= toDateTime(%(start)s, 'UTC') AS in_current
            FROM purchases FINAL
            PREWHERE business_id = %(business)s
              AND occurred_at >= toDateTime(%(previous_start)s, 'UTC') AND occurred_at < toDateTime(%(end)s, 'UTC')
        )
        GROUP BY customer_id
    ) AS buyers
    ANY LEFT JOIN (
        SELECT customer_id, min(first_at) AS first_here
        FROM partner_firsts
        WHERE partner_id = %(business)s AND customer_id IN ({period_buyers})
        GROUP BY customer_id
    ) AS firsts USING customer_id
) AS counted
ANY LEFT JOIN ({homes}) AS homes USING customer_id
""".replace("{homes}", HOMES_SQL.replace("{who}", PERIOD_BUYERS_SQL)).replace("{period_buyers}", PERIOD_BUYERS_SQL)

# The business's customers (who bought here before the end) who bought at other partners in
# the periods: the periods' ranges of the other partners' purchases.
AWAY_SQL = """
SELECT customer_id FROM purchases
PREWHERE occurred_at >= toDateTime(%(previous_start)s, 'UTC') AND occurred_at < toDateTime(%(end)s, 'UTC')
  AND business_id != %(business)s
  AND customer_id IN (
      SELECT customer_id FROM purchases
      PREWHERE business_id = %(business)s AND occurred_at < toDateTime(%(end)s, 'UTC')
  )
"""

# What those of them whose home is here paid at the other partners in each period.
ELSEWHERE_SQL = """
SELECT sumIf(money, in_current) AS elsewhere_now, sumIf(money, NOT in_current) AS elsewhere_before
FROM (
    SELECT paid_amount - money_refunded AS money, occurred_at >= toDateTime(%(start)s, 'UTC') AS in_current
    FROM purchases FINAL
    PREWHERE occurred_at >= toDateTime(%(previous_start)s, 'UTC') AND occurred_at < toDateTime(%(end)s, 'UTC')
      AND business_id != %(business)s
      AND customer_id IN (SELECT customer_id FROM ({homes}) WHERE home = %(business)s)
)
""".replace("{homes}", HOMES_SQL.replace("{who}", AWAY_SQL))

# Cross-promo: coupons the business's chains issued (it is their source) and coupons
# redeemed here (it is their target) in each period, with what the redeemed ones gave.
COUPONS_SQL = """
SELECT countIf(sent AND issued_at >= toDateTime(%(start)s, 'UTC')) AS issued_now,
       countIf(sent AND issued_at < toDateTime(%(start)s, 'UTC')) AS issued_before,
       countIf(used AND used_at >= toDateTime(%(start)s, 'UTC')) AS redeemed_now,
       countIf(used AND used_at < toDateTime(%(start)s, 'UTC')) AS redeemed_before,
       sumIf(value_given, used AND used_at >= toDateTime(%(start)s, 'UTC')) AS given_now,
       sumIf(value_given, used AND used_at < toDateTime(%(start)s, 'UTC')) AS given_before
FROM (
    SELECT issued_at, value_given,
           source_id = %(business)s AND issued_at >= toDateTime(%(previous_start)s, 'UTC') AS sent,
           ifNull(redeemed_at, toDateTime(0, 'UTC')) AS used_at,
           target_id = %(business)s AND status = 'redeemed'
               AND used_at >= toDateTime(%(previous_start)s, 'UTC') AND used_at < toDateTime(%(end)s, 'UTC') AS used
    FROM coupons FINAL
    WHERE (target_id = %(business)s OR source_id = %(business)s) AND issued_at < toDateTime(%(end)s, 'UTC')
)
"""

# The business's events (as host) that started in either period, by now, and were not
# cancelled: their registrations, one row each, with the customer's first purchase here
# (partner_firsts; `bought_here` is 0 for a customer who never bought here, whose first_here
# is then the type's default). business_id is in every version of a row (PREWHERE); status
# and the event's terms change, so they are filtered after FINAL.
EVENTS_SQL = """
SELECT uniqExactIf(event_id, in_current) AS events_now,
       uniqExactIf(event_id, NOT in_current) AS events_before,
       countIf(seated AND in_current) AS seats_now,
       countIf(seated AND NOT in_current) AS seats_before,
       countIf(came AND ended AND in_current) AS came_now,
       countIf(came AND ended AND NOT in_current) AS came_before,
       countIf(seated AND ended AND in_current) AS expected_now,
       countIf(seated AND ended AND NOT in_current) AS expected_before,
       sumIf(kept, in_current) AS tickets_now,
       sumIf(kept, NOT in_current) AS tickets_before,
       uniqExactIf(customer_id, came AND in_current
                   AND (bought_here = 0 OR first_here >= starts_at)) AS fresh_now,
       uniqExactIf(customer_id, came AND NOT in_current
                   AND (bought_here = 0 OR first_here >= starts_at)) AS fresh_before
FROM (
    SELECT event_id, customer_id, event_starts_at AS starts_at,
           status IN ('registered', 'checked_in', 'no_show') AS seated,
           status = 'checked_in' AS came,
           event_ends_at <= toDateTime(%(now)s, 'UTC') AS ended,
           paid_amount - refunded_amount AS kept,
           event_starts_at >= toDateTime(%(start)s, 'UTC') AS in_current
    FROM event_registrations FINAL
    PREWHERE business_id = %(business)s
    WHERE event_status IN ('published', 'finished')
      AND event_starts_at >= toDateTime(%(previous_start)s, 'UTC') AND event_starts_at < toDateTime(%(end)s, 'UTC')
      AND event_starts_at < toDateTime(%(now)s, 'UTC')
) AS registrations
ANY LEFT JOIN (
    SELECT customer_id, min(first_at) AS first_here, toUInt8(1) AS bought_here
    FROM partner_firsts
    WHERE partner_id = %(business)s AND customer_id IN (
        SELECT customer_id FROM event_registrations
        PREWHERE business_id = %(business)s
        WHERE event_starts_at >= toDateTime(%(previous_start)s, 'UTC') AND event_starts_at < toDateTime(%(end)s, 'UTC')
    )
    GROUP BY customer_id
) AS firsts USING customer_id
"""

# All four in one query: one row (one JOIN a SELECT: ClickHouse 18.16 takes no more).
CUSTOMERS_SQL = (
    f"SELECT * FROM (SELECT * FROM (SELECT * FROM ({HERE_SQL}) AS here CROSS JOIN ({ELSEWHERE_SQL}) AS elsewhere)"  # noqa: S608
    f" AS people CROSS JOIN ({COUPONS_SQL}) AS coupons) AS circle CROSS JOIN ({EVENTS_SQL}) AS events"
)


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time.min, tzinfo=zone)


def _last_day(as_of: date | datetime | None, zone: ZoneInfo) -> date:
    if as_of is None:
        return timezone.localdate(timezone=zone)
    if isinstance(as_of, datetime):
        return (as_of if timezone.is_aware(as_of) else timezone.make_aware(as_of)).astimezone(zone).date()
    return as_of


def _bucket_keys(first: date, days: int, hourly: bool, zone: ZoneInfo) -> list[date | datetime]:
    dates = [first + timedelta(days=n) for n in range(days)]
    if not hourly:
        return dates
    return [datetime.combine(day, time(hour), tzinfo=zone) for day in dates for hour in range(24)]


def _at_risk(business_id, limit: int = 10) -> list[AtRiskCustomer]:
    """The business's customers most likely to leave: the latest churn scores (the nightly
    `refresh_churn_scores` keeps only the latest, so this list is now's, whatever `as_of`),
    highest risk first, with the name (else the masked phone) and the last purchase there."""
    scores = list(
        ChurnScore.objects.filter(business_id=business_id, user__is_active=True)
        .select_related("user")
        .order_by("-risk", "user_id")[:limit]
    )
    last = dict(
        Transaction.objects.filter(business_id=business_id, customer_id__in=[score.user_id for score in scores])
        .exclude(status=Transaction.Status.REFUNDED)
        .values("customer_id")
        .annotate(last=Max("occurred_at"))
        .values_list("customer_id", "last")
    )
    return [
        AtRiskCustomer(
            user_id=score.user_id,
            name=score.user.full_name or mask_phone(score.user.phone),
            risk=score.risk,
            last_purchase_at=last.get(score.user_id),
        )
        for score in scores
    ]


def _events(row) -> tuple[dict, dict]:
    """The event figures of the current and the previous period from EVENTS_SQL's columns
    (each a pair: now, before)."""
    held, seats, came, expected, tickets, fresh = (row[n : n + 2] for n in range(0, 12, 2))

    def period(n: int) -> dict:
        attendance = None
        if expected[n]:
            attendance = (Decimal(int(came[n])) * 100 / int(expected[n])).quantize(Decimal("0.1"), ROUND_HALF_UP)
        return {
            "events_held": int(held[n]),
            "event_registrations": int(seats[n]),
            "event_attendance": attendance,
            "event_ticket_bonuses": as_money(tickets[n]),
            "event_new_attendees": int(fresh[n]),
        }

    return period(0), period(1)


def generate_business_dashboard(business_id, period: str, as_of: date | datetime | None = None) -> DashboardData:
    """The business's dashboard for the period ending with `as_of`'s day (today without one):
    the figures of that period and the previous one, series for charts, the RFM segment mix
    and the customers most at risk. `period` is "day", "week" or "month"."""
    from analytics.services import count_rfm_segments  # services re-exports this module

    if period not in PERIODS:
        raise ValueError(f"period must be one of {', '.join(PERIODS)}, not {period!r}")
    ensure_fresh()
    zone_name = Business.objects.values_list("time_zone", flat=True).get(pk=business_id)
    zone = ZoneInfo(zone_name)
    days, hourly = PERIODS[period], period == "day"
    last = _last_day(as_of, zone)
    first = last - timedelta(days=days - 1)
    previous_first = first - timedelta(days=days)
    end = _midnight(last + timedelta(days=1), zone)
    start, previous_start = _midnight(first, zone), _midnight(previous_first, zone)
    params = {
        "business": business_id,
        "tz": zone_name,
        "hourly": int(hourly),
        "previous_start": previous_start,
        "start": start,
        "end": end,
        "now": timezone.now(),
    }
    warehouse = get_warehouse()

    def key(day: date, hour: int) -> date | datetime:
        return datetime.combine(day, time(hour), tzinfo=zone) if hourly else day

    # Every figure of every bucket, zero where nothing happened.
    current_keys = _bucket_keys(first, days, hourly, zone)
    previous_keys = _bucket_keys(previous_first, days, hourly, zone)
    buckets = {k: dict.fromkeys(SERIES, ZERO) | {"purchases": 0} for k in current_keys + previous_keys}
    for day, hour, revenue, purchases in warehouse.execute(PURCHASES_SQL, params):
        bucket = buckets[key(day, hour)]
        bucket["revenue"] += as_money(revenue)
        bucket["purchases"] += int(purchases)
    liability_before = ZERO  # of the entries older than both periods
    liability_changes = dict.fromkeys(buckets, ZERO)
    for day, hour, issued, spent, expired, change in warehouse.execute(LEDGER_SQL, params):
        if day == BEFORE:
            liability_before += as_money(change)
            continue
        bucket = buckets[key(day, hour)]
        bucket["bonuses_issued"] += as_money(issued)
        bucket["bonuses_spent"] += as_money(spent)
        bucket["bonuses_expired"] += as_money(expired)
        liability_changes[key(day, hour)] += as_money(change)
    ((new_now, returning_now, new_before, returning_before, *rest),) = warehouse.execute(CUSTOMERS_SQL, params)
    from_others_now, from_others_before, elsewhere_now, elsewhere_before = (as_money(value) for value in rest[:4])
    issued_now, issued_before, redeemed_now, redeemed_before = (int(value) for value in rest[4:8])
    given_now, given_before = as_money(rest[8]), as_money(rest[9])
    events_now, events_before = _events(rest[10:])

    def total(keys, name):
        return sum((buckets[k][name] for k in keys), 0 if name == "purchases" else ZERO)

    liability_at_start = liability_before + sum((liability_changes[k] for k in previous_keys), ZERO)
    liability_at_end = liability_at_start + sum((liability_changes[k] for k in current_keys), ZERO)

    def figures(keys, new, returning, liability, from_others, elsewhere, coupons, events) -> Figures:
        revenue, purchases = total(keys, "revenue"), total(keys, "purchases")
        return Figures(
            revenue=revenue,
            purchases=purchases,
            average_check=(revenue / purchases).quantize(KOPECK, rounding=ROUND_HALF_UP) if purchases else ZERO,
            new_customers=int(new),
            returning_customers=int(returning),
            bonuses_issued=total(keys, "bonuses_issued"),
            bonuses_spent=total(keys, "bonuses_spent"),
            bonuses_expired=total(keys, "bonuses_expired"),
            bonus_liability=liability,
            revenue_from_others_customers=from_others,
            own_customers_spent_elsewhere=elsewhere,
            coupons_issued=coupons[0],
            coupons_redeemed=coupons[1],
            coupon_rewards=coupons[2],
            **events,
        )

    segments = count_rfm_segments(business_id=business_id, as_of=end)
    return DashboardData(
        business_id=business_id,
        period=period,
        time_zone=zone_name,
        start=start,
        end=end,
        previous_start=previous_start,
        current=figures(
            current_keys,
            new_now,
            returning_now,
            liability_at_end,
            from_others_now,
            elsewhere_now,
            (issued_now, redeemed_now, given_now),
            events_now,
        ),
        previous=figures(
            previous_keys,
            new_before,
            returning_before,
            liability_at_start,
            from_others_before,
            elsewhere_before,
            (issued_before, redeemed_before, given_before),
            events_before,
        ),
        series={name: [(k, buckets[k][name]) for k in current_keys] for name in SERIES},
        previous_series={name: [(k, buckets[k][name]) for k in previous_keys] for name in SERIES},
        segments=segments,
        at_risk=_at_risk(business_id),
    )
