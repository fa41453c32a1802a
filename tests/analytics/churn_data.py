"""Seeded purchases with a known churn pattern, written straight into the warehouse.

Recency alone cannot separate them: regulars with a naturally long rhythm (about every 60
days) who keep buying often have a longer recency than weekly customers who stopped a few
weeks ago. Kinds of customer (all purchases before `end`):

- weekly: about every 7 days, to the end;
- bimonthly: about every 60 days, to the end;
- weekly_stopper: about every 7 days, until a random day in the last STOP_DAYS;
- fading: gaps growing by half each time from 5 days, until they pass about 150 days;
- bimonthly_stopper: about every 60 days, until a random day in the last STOP_DAYS;
- probe_regular: exactly every 60 days, the last purchase 45 days before the end;
- probe_stopper: exactly every 7 days, the last purchase 25 days before the end.
Each customer has a home partner and makes OTHER_SHARE of the purchases at another."""

import random
import uuid
from datetime import timedelta
from decimal import Decimal

from analytics.export import PURCHASE_FIELDS

KINDS = {
    "weekly": 50,
    "bimonthly": 80,
    "weekly_stopper": 100,
    "fading": 30,
    "bimonthly_stopper": 20,
    "probe_regular": 1,
    "probe_stopper": 1,
}
HISTORY_DAYS = 540
STOP_DAYS = 270
OTHER_SHARE = 0.1

PURCHASE_COLUMNS = [*PURCHASE_FIELDS, "version"]  # the warehouse table, as the export fills it


def customer_count() -> int:
    return sum(KINDS.values())


def purchase_row(rng: random.Random, business_id, customer_id, moment) -> tuple:
    amount, zero = Decimal(rng.randrange(300, 3000)), Decimal("0.00")
    accrued = (amount * Decimal("0.05")).quantize(Decimal("0.01"))
    key = uuid.UUID(int=rng.getrandbits(128))
    return (key, business_id, customer_id, f"gen-{key.hex[:12]}", "import", "completed", moment, moment, amount) + (
        zero,
        zero,
        amount,
        accrued,
        zero,
        zero,
        1,
    )


def _times(rng: random.Random, kind: str, end):
    start = end - timedelta(days=HISTORY_DAYS)
    if kind.startswith("probe_"):
        gap, last = (60, 45) if kind == "probe_regular" else (7, 25)
        return [end - timedelta(days=last + gap * n) for n in range((HISTORY_DAYS - last) // gap)]
    if kind == "fading":
        moments, moment, gap = [], start + timedelta(days=rng.uniform(0, 200)), 5.0
        while moment < end and gap < 150:
            moments.append(moment)
            moment += timedelta(days=gap * rng.uniform(0.8, 1.2))
            gap *= 1.5
        return moments
    mean = 7 if kind.startswith("weekly") else 60
    stop = end - timedelta(days=rng.uniform(0, STOP_DAYS)) if kind.endswith("stopper") else end
    moments, moment = [], start + timedelta(days=rng.uniform(0, mean))
    while moment < stop:
        moments.append(moment)
        moment += timedelta(days=max(1.0, rng.gauss(mean, mean * 0.15)))
    return moments


def generate(end, customers, partners, seed: int = 7):
    """Purchase rows and {customer_id: kind}: `customers` (as many as customer_count()) get the
    kinds in KINDS's order; `partners` are the partners' ids."""
    rng = random.Random(seed)
    ids = iter(customers)
    kinds, rows = {}, []
    for kind, count in KINDS.items():
        for _ in range(count):
            customer = next(ids)
            kinds[customer] = kind
            home, other = rng.sample(list(partners), 2)
            for moment in _times(rng, kind, end):
                rows.append(purchase_row(rng, other if rng.random() < OTHER_SHARE else home, customer, moment))
    return rows, kinds


def load(warehouse, end, customers, partners, seed: int = 7) -> dict:
    """Generate and insert the purchases; returns {customer_id: kind}."""
    rows, kinds = generate(end, customers, partners, seed)
    warehouse.insert("purchases", PURCHASE_COLUMNS, rows)
    return kinds
