"""RFM on both backends, against hand-computed scores: ten customers of one partner where
customer k made k purchases of 100·k roubles, the last one 3·(11 − k) days before the day
looked at. A score is one more than the number of the scope's 20/40/60/80% thresholds
(exact quantiles) the value is above; recency the other way round."""

import itertools
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from accounts.models import User
from analytics import export
from analytics.services import SEGMENTS, calculate_rfm_segments, count_rfm_segments, segment_for
from loyalty import services
from tests.factories import BusinessFactory, LoyaltyProgramFactory

pytestmark = pytest.mark.django_db

AS_OF = timezone.localdate() - timedelta(days=1)
END = timezone.make_aware(datetime.combine(AS_OF + timedelta(days=1), time.min))
R = [1, 2, 2, 3, 3, 4, 4, 5, 5, 5]
F = M = [1, 1, 1, 2, 2, 3, 3, 4, 4, 5]
SEGMENTS_BY_K = ["lost", "hibernating", "hibernating"] + ["potential_loyalists"] * 2 + ["loyal"] * 2 + ["champions"] * 3


def phone(k: int) -> str:
    return f"+7916555{k:04d}"


@pytest.fixture
def partner():
    business = LoyaltyProgramFactory().business
    for k in range(1, 11):
        last = END - timedelta(days=3 * (11 - k), hours=12)
        for n in range(k):
            services.record_transaction(
                business=business,
                external_id=f"{k}-{n}",
                amount=Decimal(100 * k),
                phone=phone(k),
                occurred_at=last - timedelta(days=n),
            )
    return business


def scores(segments):
    """The segments in the order of k."""
    phones = dict(User.objects.values_list("pk", "phone"))
    by_phone = {phones[segment.user_id]: segment for segment in segments}
    return [by_phone[phone(k)] for k in range(1, 11)]


def test_scores_and_segments_match_the_hand_computed_ones(warehouse, partner):
    export.aggregate_transactions_to_clickhouse()
    result = scores(calculate_rfm_segments(business_id=partner.pk, as_of=AS_OF))
    # Days between the last purchase and the end of AS_OF, by the warehouse's (UTC) calendar.
    lasts = [END - timedelta(days=3 * (11 - k), hours=12) for k in range(1, 11)]
    assert [s.recency_days for s in result] == [
        (END.astimezone(UTC).date() - t.astimezone(UTC).date()).days for t in lasts
    ]
    assert [s.frequency for s in result] == list(range(1, 11))
    assert [s.monetary for s in result] == [Decimal(100 * k * k) for k in range(1, 11)]
    assert [(s.r, s.f, s.m) for s in result] == list(zip(R, F, M, strict=True))
    assert [s.segment for s in result] == SEGMENTS_BY_K


def test_segment_counts_are_the_segments_counted(warehouse, partner):
    export.aggregate_transactions_to_clickhouse()
    counts = count_rfm_segments(business_id=partner.pk, as_of=AS_OF)
    assert counts == {segment: SEGMENTS_BY_K.count(segment) for segment in SEGMENTS}
    assert count_rfm_segments(business_id=BusinessFactory().pk, as_of=AS_OF) == dict.fromkeys(SEGMENTS, 0)


def test_only_the_asked_customers_and_only_the_scope_and_the_past(warehouse, partner):
    other = LoyaltyProgramFactory(business=BusinessFactory()).business
    # At another partner customer 1 buys a lot: the circle sees it, this partner does not.
    for n in range(30):
        services.record_transaction(
            business=other,
            external_id=f"x-{n}",
            amount=Decimal(5000),
            phone=phone(1),
            occurred_at=END - timedelta(hours=n + 1),
        )
    export.aggregate_transactions_to_clickhouse()
    first = User.objects.get(phone=phone(1))
    (mine,) = calculate_rfm_segments([first.pk], business_id=partner.pk, as_of=AS_OF)
    assert (mine.frequency, mine.segment) == (1, "lost")
    (circle,) = calculate_rfm_segments([first.pk], as_of=AS_OF)
    assert (circle.frequency, circle.r, circle.f, circle.m) == (31, 5, 5, 5)
    # A week earlier customer 10's last purchases had not happened yet.
    earlier = scores(calculate_rfm_segments(business_id=partner.pk, as_of=AS_OF - timedelta(days=7)))
    assert earlier[9].frequency < 10
    assert calculate_rfm_segments([], business_id=partner.pk) == []


def test_a_refunded_purchase_does_not_count(warehouse, partner):
    services.refund_transaction(business=partner, external_id="10-0")
    export.aggregate_transactions_to_clickhouse()
    result = scores(calculate_rfm_segments(business_id=partner.pk, as_of=AS_OF))
    assert (result[9].frequency, result[9].monetary) == (9, Decimal(9000))


def test_every_score_combination_has_exactly_one_segment_and_every_segment_is_used():
    seen = {segment_for(r, f, m) for r, f, m in itertools.product(range(1, 6), repeat=3)}
    assert seen == set(SEGMENTS)
    assert segment_for(1, 5, 5) == "cant_lose" and segment_for(2, 3, 1) == "at_risk"
