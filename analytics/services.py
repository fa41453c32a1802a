"""The Analytics service: RFM segments and churn risk, computed in the warehouse.

The catalogue's names are kept: `calculate_rfm_segments`, `predict_churn_risk` (the model is in
`analytics.churn`), `aggregate_transactions_to_clickhouse` (in `analytics.export`, re-exported
here). Every function takes an optional `as_of` date so that the past can be replayed: only
purchases before the end of that day count."""

from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import NamedTuple

from django.utils import timezone

from analytics.dashboard import DashboardData, generate_business_dashboard
from analytics.export import aggregate_transactions_to_clickhouse, ensure_fresh
from analytics.warehouse import gc_paused, get_warehouse

__all__ = [
    "DashboardData",
    "RFMSegment",
    "SEGMENTS",
    "aggregate_transactions_to_clickhouse",
    "calculate_rfm_segments",
    "count_rfm_segments",
    "generate_business_dashboard",
    "predict_churn_risk",
    "segment_for",
]

# The segments, in the order the rules below try them.
SEGMENTS = (
    "champions",
    "loyal",
    "potential_loyalists",
    "new",
    "at_risk",
    "cant_lose",
    "hibernating",
    "lost",
)


def segment_for(r: int, f: int, m: int) -> str:
    """The named segment of recency, frequency and monetary scores (1–5, 5 best), by rules
    written once here (docs/analytics.md shows them as a table):

    1. can't lose — bought often and much (F ≥ 4, M ≥ 4) but not lately (R ≤ 2);
    2. champions — recent and frequent (R ≥ 4, F ≥ 4);
    3. loyal — fairly recent and frequent (R ≥ 3, F ≥ 3);
    4. new — recent, one purchase (R ≥ 4, F = 1);
    5. potential loyalists — fairly recent, a few purchases (R ≥ 3, F ≤ 2);
    6. at risk — frequent once, not lately (R ≤ 2, F ≥ 3);
    7. hibernating — some time ago, few purchases (R = 2, F ≤ 2);
    8. lost — long ago, few purchases (R = 1, F ≤ 2).
    Every one of the 125 combinations falls in exactly one."""
    if r <= 2 and f >= 4 and m >= 4:
        return "cant_lose"
    if r >= 4 and f >= 4:
        return "champions"
    if r >= 3 and f >= 3:
        return "loyal"
    if r >= 4 and f == 1:
        return "new"
    if r >= 3:
        return "potential_loyalists"
    if f >= 3:
        return "at_risk"
    if r == 2:
        return "hibernating"
    return "lost"


# Every combination of scores once, so that a million customers are a lookup each.
_SEGMENT_OF = {(r, f, m): segment_for(r, f, m) for r in range(1, 6) for f in range(1, 6) for m in range(1, 6)}


class RFMSegment(NamedTuple):
    """One customer's scores (a named tuple: a million of them are made in a second)."""

    user_id: object
    recency_days: int
    frequency: int
    monetary: Decimal
    r: int
    f: int
    m: int
    segment: str


def cutoff(as_of: date | datetime | None) -> datetime:
    """The moment `as_of` means: the end of that day in the default time zone (now without one)."""
    if as_of is None:
        # The warehouse keeps whole seconds: the next whole second takes in this one's purchases.
        return (timezone.now() + timedelta(seconds=1)).replace(microsecond=0)
    if isinstance(as_of, datetime):
        return as_of if timezone.is_aware(as_of) else timezone.make_aware(as_of)
    return timezone.make_aware(datetime.combine(as_of + timedelta(days=1), time.min))


# Scores are quintiles among the scope's customers: the thresholds are the exact 20/40/60/80%
# quantiles, and a score counts the thresholds a value is above (recency reversed: recent is
# good). The customers' figures are computed once, gathered into arrays beside their
# quantiles, and unrolled again (ARRAY JOIN): ClickHouse 18.16 has no window functions, and
# a join with the quantiles would compute every figure twice. No lambdas over inner columns
# either: 18.16 does not see a column used only inside one and leaves it out of the subquery;
# and sums narrowed to Decimal64, whose arrays it can gather (a Decimal128 array crashes it).
RFM_SQL = """
SELECT {columns}
       5 - ((recency > rq[1]) + (recency > rq[2]) + (recency > rq[3]) + (recency > rq[4])) AS r,
       1 + ((frequency > fq[1]) + (frequency > fq[2]) + (frequency > fq[3]) + (frequency > fq[4])) AS f,
       1 + ((toFloat64(monetary) > mq[1]) + (toFloat64(monetary) > mq[2]) + (toFloat64(monetary) > mq[3])
            + (toFloat64(monetary) > mq[4])) AS m
FROM (
    SELECT groupArray(customer_id) AS customers,
           groupArray(recency) AS recencies,
           groupArray(frequency) AS frequencies,
           groupArray(monetary) AS monetaries,
           quantilesExact(0.2, 0.4, 0.6, 0.8)(recency) AS rq,
           quantilesExact(0.2, 0.4, 0.6, 0.8)(toFloat64(frequency)) AS fq,
           quantilesExact(0.2, 0.4, 0.6, 0.8)(toFloat64(monetary)) AS mq
    FROM (
        SELECT customer_id,
               dateDiff('day', max(occurred_at), toDateTime(%(as_of)s, 'UTC')) AS recency,
               count() AS frequency,
               toDecimal64(sum(paid_amount - money_refunded), 2) AS monetary
        FROM purchases FINAL
        WHERE occurred_at < toDateTime(%(as_of)s, 'UTC') AND status != 'refunded' {scope}
        GROUP BY customer_id
    )
)
ARRAY JOIN customers AS customer_id, recencies AS recency, frequencies AS frequency, monetaries AS monetary
{only}
{tail}
"""
CUSTOMER_COLUMNS = "customer_id, recency, frequency, monetary,"
# How many customers have each combination of scores: what a segment mix needs, without a
# row per customer leaving the warehouse.
COUNT_COLUMNS, COUNT_TAIL = "count() AS scored,", "GROUP BY r, f, m"


def calculate_rfm_segments(user_ids=None, business_id=None, as_of=None) -> list[RFMSegment]:
    """RFM scores and segments of `user_ids` (all customers when None) among the business's
    customers, or the whole circle's without a business, from purchases before `as_of`.
    A customer without purchases in the scope is not in the result."""
    ensure_fresh()
    params = {"as_of": cutoff(as_of)}
    scope = only = ""
    if business_id is not None:
        scope, params["business"] = "AND business_id = %(business)s", business_id
    if user_ids is not None:
        user_ids = list(user_ids)
        if not user_ids:
            return []
        # As text: ClickHouse 18.16 will not look a UUID up in an array of strings.
        only, params["users"] = "WHERE has(%(users)s, toString(customer_id))", [str(user) for user in user_ids]
    sql = RFM_SQL.format(columns=CUSTOMER_COLUMNS, scope=scope, only=only, tail="ORDER BY customer_id")
    columns = get_warehouse().columns(sql, params)
    if not columns:
        return []
    # Column by column, no tuple per row in between: a million customers take 2 s less.
    with gc_paused():
        segments = list(map(_SEGMENT_OF.__getitem__, zip(*columns[4:7], strict=True)))
        return list(map(RFMSegment, *columns, segments))


def count_rfm_segments(business_id=None, as_of=None) -> dict[str, int]:
    """How many of the business's customers (the circle's without one) are in each segment,
    every segment present: `calculate_rfm_segments` counted in the warehouse."""
    ensure_fresh()
    params = {"as_of": cutoff(as_of)}
    scope = ""
    if business_id is not None:
        scope, params["business"] = "AND business_id = %(business)s", business_id
    counts = dict.fromkeys(SEGMENTS, 0)
    sql = RFM_SQL.format(columns=COUNT_COLUMNS, scope=scope, only="", tail=COUNT_TAIL)
    for customers, r, f, m in get_warehouse().execute(sql, params):
        counts[_SEGMENT_OF[r, f, m]] += customers
    return counts


def predict_churn_risk(user_id, business_id=None, as_of=None) -> float:
    """The probability (0–1) that the customer makes no purchase in the next CHURN_HORIZON_DAYS
    after `as_of` (now by default), in the circle or at `business_id`, from data before `as_of`
    only. A model trained for the moment is used (the current one for now; trained on first
    use if there is none); analytics.churn describes the model and its checks.

    No silent fallback: without a model that beat the recency baseline this raises
    `churn.NotEnoughChurnData` (too few customers, or one outcome only) or
    `churn.ChurnModelUnavailable`; a customer with no purchase in the scope raises
    `churn.NoPurchaseHistory`. All three are `churn.ChurnError`."""
    from analytics import churn  # churn uses cutoff() from this module

    return churn.predict_churn_risk(user_id, business_id=business_id, as_of=as_of)
