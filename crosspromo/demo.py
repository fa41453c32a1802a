"""The demo's cross-promo for `seed_demo`: chains between the demo partners in every status,
with coupons issued by recent purchases at their sources and some of them redeemed at their
targets, so the portal's pages, the win-win index and the dashboard's block show numbers.

The chains that ran were agreed a month ago, and their purchases and redemptions happen on
the demo clock (`loyalty.demo.clock_at`) at their own times, so coupons, ledger entries and
lots carry those times. Safe to run again: a chain is looked up by its pair of partners, and one found is left as it
is, its coupons with it."""

import random
from contextlib import nullcontext
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial

from django.db.models import Q
from django.utils import timezone

from accounts.models import Business
from crosspromo import services
from crosspromo.models import Coupon, CrossPromoChain
from crosspromo.services import ChainConfig
from loyalty import services as loyalty
from loyalty.demo import Step, clock_at, live_through

Status = CrossPromoChain.Status
D = Decimal
SEED = 20261126
EXTERNAL_ID_PREFIX = "crosspromo-demo-"
AGREED_DAYS_AGO = 30  # when the chains that ran were agreed; their coupons came after

# (source index, target index, reward kind, value, largest discount, status wanted)
CHAINS = [  # eight different pairs among the first six partners
    (0, 1, "percent", D(15), D(500), Status.ACTIVE),
    (1, 2, "bonus", D(150), None, Status.ACTIVE),
    (2, 3, "fixed", D(300), None, Status.ACTIVE),
    (3, 4, "percent", D(10), D(300), Status.PAUSED),
    (4, 5, "fixed", D(200), None, Status.ENDED),
    (5, 0, "bonus", D(100), None, Status.PROPOSED),
    (0, 2, "percent", D(20), D(400), Status.DECLINED),
    (1, 3, "fixed", D(250), None, Status.ACCEPTED),  # starts next week
]


def seed_crosspromo(businesses: list[Business], customer_phones: list[str]) -> dict:
    """Make the chains and their coupons; returns the counts for the summary."""
    rng = random.Random(SEED)
    now = timezone.now()
    agreed = now - timedelta(days=AGREED_DAYS_AGO)
    made, history, to_stop = [], [], []
    for source_index, target_index, kind, value, largest, wanted in CHAINS:
        if max(source_index, target_index) >= len(businesses):
            continue
        source, target = businesses[source_index], businesses[target_index]
        has_run = wanted in (Status.ACTIVE, Status.PAUSED, Status.ENDED)
        with clock_at(agreed) if has_run else nullcontext():
            chain, created = _chain(source, target, kind, value, largest, wanted, timezone.now())
        made.append(chain)
        if created and has_run:
            history += _coupons(chain, customer_phones, rng, now)
            if wanted != Status.ACTIVE and chain.status == Status.ACTIVE:
                to_stop.append((chain, "pause" if wanted == Status.PAUSED else "end"))
    live_through(history, desc="Cross-promo")
    for chain, action in to_stop:  # today, after the coupons
        services.change_chain(chain, action, business=None, by=None)
    return {
        "chains": len(made),
        "coupons": Coupon.objects.filter(chain__in=made).count(),
        "redeemed": Coupon.objects.filter(chain__in=made, status=Coupon.Status.REDEEMED).count(),
    }


def _chain(source, target, kind, value, largest, wanted, now) -> tuple[CrossPromoChain, bool]:
    existing = (
        CrossPromoChain.objects.filter(Q(source=source, target=target) | Q(source=target, target=source))
        .order_by("-created_at")
        .first()
    )
    if existing is not None:
        return existing, False
    starts_at = now + timedelta(days=7) if wanted == Status.ACCEPTED else now - timedelta(hours=1)
    chain = services.create_chain(
        ChainConfig(
            source=source,
            target=target,
            reward_kind=kind,
            reward_value=value,
            max_discount=largest,
            min_purchase_amount=D(500),
            starts_at=starts_at,
            ends_at=now + timedelta(days=90),
            coupon_lifetime_days=30,
            total_limit=200,
            budget=D(40000),
            title=f"{source.name} → {target.name}",
        )
    )
    if wanted in (Status.ACTIVE, Status.PAUSED, Status.ENDED, Status.ACCEPTED):
        chain = services.accept_chain(chain, business=target)
    elif wanted == Status.DECLINED:
        chain = services.decline_chain(chain, business=target)
    return chain, True


def _coupons(chain: CrossPromoChain, phones: list[str], rng: random.Random, now: datetime) -> list[Step]:
    """Purchases at the source in the last weeks issue coupons; about half are redeemed at
    the target some days later, before today."""
    buyers = rng.sample(phones, min(24, len(phones)))
    steps = []
    for n, phone in enumerate(buyers):
        bought_at = now - timedelta(days=rng.randint(1, 20), hours=rng.randint(0, 8))
        source_id = f"{EXTERNAL_ID_PREFIX}{chain.pk}-s{n}"
        steps.append(
            Step(
                bought_at,
                partial(
                    loyalty.record_transaction,
                    business=chain.source,
                    external_id=source_id,
                    amount=D(rng.randrange(600, 3000, 10)),
                    phone=phone,
                    occurred_at=bought_at,
                ),
            )
        )
        if rng.random() < 0.5:
            continue
        redeemed_at = bought_at + (now - bought_at) * rng.uniform(0.1, 0.9)
        redeem = partial(
            _redeem,
            chain,
            source_id=source_id,
            external_id=f"{EXTERNAL_ID_PREFIX}{chain.pk}-t{n}",
            amount=D(rng.randrange(1000, 4000, 10)),
            phone=phone,
        )
        steps.append(Step(redeemed_at, redeem))
    return steps


def _redeem(chain: CrossPromoChain, *, source_id: str, external_id: str, amount: Decimal, phone: str) -> None:
    """A purchase at the target with the coupon the source's purchase issued, if it did."""
    coupon = Coupon.objects.filter(chain=chain, issuing_transaction__external_id=source_id).first()
    if coupon is None or coupon.status != Coupon.Status.ACTIVE:
        return
    loyalty.record_transaction(
        business=chain.target, external_id=external_id, amount=amount, phone=phone, coupon=coupon.code
    )
