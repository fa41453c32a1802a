"""The win-win index and the chain recommendations, on small circles worked out by hand."""

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import translation

from accounts.models import Business
from crosspromo.models import Coupon, CrossPromoChain
from crosspromo.services.insights import (
    ChainSuggestion,
    _reasons,
    calculate_winwin_index,
    complementarity,
    generate_chain_recommendations,
    harmonic_mean,
    saturate,
)
from loyalty import services
from tests.factories import BusinessFactory, LoyaltyProgramFactory

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
_purchase_ids = itertools.count(1)


def D(value) -> Decimal:
    return Decimal(str(value))


def phone(n: int) -> str:
    return f"+7916{n:07d}"


def buy(business, customer: int, amount, days_ago: float = 0, at: datetime | None = None):
    """A purchase by customer number `customer`, `days_ago` days before NOW (or `at`)."""
    return services.record_transaction(
        business=business,
        external_id=f"p{next(_purchase_ids)}",
        amount=D(amount),
        phone=phone(customer),
        occurred_at=at or NOW - timedelta(days=days_ago),
    ).transaction


def refund(purchase, amount=None):
    services.refund_transaction(
        business=purchase.business,
        external_id=purchase.external_id,
        amount=None if amount is None else D(amount),
        refund_id=None if amount is None else "part",
    )


@pytest.fixture(autouse=True)
def clock():
    with time_machine.travel(NOW, tick=False):
        yield


def partner(name, category, latitude=None, longitude=None, **fields) -> Business:
    return LoyaltyProgramFactory(
        business=BusinessFactory(
            name=name,
            category=category,
            latitude=None if latitude is None else D(latitude),
            longitude=None if longitude is None else D(longitude),
            **fields,
        )
    ).business


@pytest.fixture
def cafe(tiers):
    return partner("Кофейня", Business.Category.CAFE, "55.750000", "37.600000")


@pytest.fixture
def salon(tiers):
    # 0.0045° of latitude north of the café: 500 m.
    return partner("Салон", Business.Category.BEAUTY, "55.754500", "37.600000")


def chain(source, target, status=CrossPromoChain.Status.ACTIVE, issued=0, redeemed=0) -> CrossPromoChain:
    return CrossPromoChain.objects.create(
        source=source,
        target=target,
        status=status,
        reward_kind=CrossPromoChain.Reward.PERCENT,
        reward_value=D(10),
        starts_at=NOW - timedelta(days=300),
        issued_count=issued,
        redeemed_count=redeemed,
    )


# --- The formula -----------------------------------------------------------------------------


def test_a_gain_of_five_percent_saturates_to_one_half():
    assert saturate(0.05) == 0.5
    assert saturate(0.0) == 0.0
    assert saturate(0.15) == pytest.approx(0.75)


def test_the_harmonic_mean_is_zero_when_either_side_is_zero():
    assert harmonic_mean(0.9, 0.0) == 0.0
    assert harmonic_mean(0.6, 0.6) == pytest.approx(0.6)
    assert harmonic_mean(0.9, 0.1) == pytest.approx(0.18)


def test_the_worked_example_of_the_docs():
    # Salon: 36,000 of 400,000 from the café's customers; café: 10,000 of 250,000 from the salon's.
    assert harmonic_mean(saturate(36_000 / 400_000), saturate(10_000 / 250_000)) == pytest.approx(0.5255, abs=1e-4)


# --- The win-win index -----------------------------------------------------------------------


def test_a_balanced_flow_scores_high_with_its_parts_as_computed_by_hand(cafe, salon):
    # The café sends customers 1 and 2 to the salon (they had bought at the café before).
    buy(cafe, 1, "500.00", days_ago=100)
    buy(salon, 1, "2000.00", days_ago=30)
    buy(salon, 1, "1000.00", days_ago=10)  # a second visit of a sent customer counts too
    buy(cafe, 2, "800.00", days_ago=100)
    buy(salon, 2, "1500.00", days_ago=30)
    buy(salon, 5, "10500.00", days_ago=20)  # the salon's own customer
    # The salon sends customers 3 and 4 to the café.
    buy(salon, 3, "300.00", days_ago=120)
    buy(cafe, 3, "600.00", days_ago=40)
    buy(salon, 4, "200.00", days_ago=120)
    buy(cafe, 4, "400.00", days_ago=40)
    buy(cafe, 6, "4000.00", days_ago=50)  # the café's own customer

    index = calculate_winwin_index(cafe, salon)

    assert index.a_to_b.source_id == cafe.pk
    assert index.a_to_b.target_id == salon.pk
    assert index.a_to_b.customers_sent == 2
    assert index.a_to_b.revenue_brought == D("4500.00")
    assert index.a_to_b.target_revenue == D("15000.00")
    assert index.a_to_b.gain == pytest.approx(0.3)
    assert index.a_to_b.saturated_gain == pytest.approx(0.3 / 0.35)
    assert index.b_to_a.customers_sent == 2
    assert index.b_to_a.revenue_brought == D("1000.00")
    assert index.b_to_a.target_revenue == D("5000.00")
    assert index.b_to_a.gain == pytest.approx(0.2)
    assert index.b_to_a.saturated_gain == pytest.approx(0.8)
    assert index.a_to_b.coupons_redeemed == 0
    # 2 · 0.857 · 0.8 / (0.857 + 0.8)
    assert index.value == pytest.approx(0.827586, abs=1e-6)
    assert index.value > 0.6
    assert index.period_end == NOW
    assert index.period_start == NOW - timedelta(days=90)


def test_the_index_is_symmetric(cafe, salon):
    buy(cafe, 1, "100.00", days_ago=60)
    buy(salon, 1, "300.00", days_ago=30)
    buy(salon, 2, "100.00", days_ago=50)
    buy(cafe, 2, "100.00", days_ago=20)
    buy(cafe, 3, "900.00", days_ago=20)

    forth, back = calculate_winwin_index(cafe, salon), calculate_winwin_index(salon, cafe)

    assert forth.value == pytest.approx(back.value)
    assert forth.a_to_b == back.b_to_a
    assert forth.a_to_b.gain == pytest.approx(0.75)  # 300 of the salon's 400
    assert forth.b_to_a.gain == pytest.approx(100 / 1100)  # 100 of the café's 1,100


def test_a_one_sided_flow_scores_low(cafe, salon):
    # The café brings the salon 30% of its revenue...
    buy(cafe, 1, "500.00", days_ago=100)
    buy(salon, 1, "3000.00", days_ago=30)
    buy(salon, 5, "7000.00", days_ago=20)
    # ...the salon brings the café 10 ₽ of 5,000 (0.2%).
    buy(salon, 3, "300.00", days_ago=120)
    buy(cafe, 3, "10.00", days_ago=40)
    buy(cafe, 6, "4990.00", days_ago=50)

    index = calculate_winwin_index(cafe, salon)

    assert index.a_to_b.gain == pytest.approx(0.3)
    assert index.b_to_a.gain == pytest.approx(0.002)
    assert index.b_to_a.saturated_gain == pytest.approx(0.002 / 0.052)
    assert index.value == pytest.approx(harmonic_mean(0.3 / 0.35, 0.002 / 0.052))
    assert index.value < 0.2


def test_a_flow_one_way_only_scores_zero(cafe, salon):
    buy(cafe, 1, "500.00", days_ago=100)
    buy(salon, 1, "3000.00", days_ago=30)
    buy(cafe, 6, "1000.00", days_ago=50)

    index = calculate_winwin_index(cafe, salon)

    assert index.a_to_b.gain == pytest.approx(1.0)
    assert index.b_to_a.customers_sent == 0
    assert index.b_to_a.gain == 0.0
    assert index.value == 0.0


def test_no_flow_is_zero_and_revenue_is_still_shown(cafe, salon):
    buy(cafe, 1, "700.00", days_ago=30)
    buy(salon, 2, "1200.00", days_ago=30)

    index = calculate_winwin_index(cafe, salon)

    assert index.value == 0.0
    assert (index.a_to_b.customers_sent, index.b_to_a.customers_sent) == (0, 0)
    assert (index.a_to_b.revenue_brought, index.b_to_a.revenue_brought) == (D("0.00"), D("0.00"))
    assert index.a_to_b.target_revenue == D("1200.00")
    assert index.b_to_a.target_revenue == D("700.00")


def test_partners_with_no_purchases_at_all_score_zero(cafe, salon):
    index = calculate_winwin_index(cafe.pk, str(salon.pk))

    assert index.value == 0.0
    assert index.a_to_b.target_revenue == D("0.00")
    assert index.a_to_b.gain == 0.0


def test_refunded_purchases_do_not_count(cafe, salon):
    buy(cafe, 1, "100.00", days_ago=100)
    refund(buy(salon, 1, "2000.00", days_ago=30))  # the only visit, refunded: not sent
    refund(buy(cafe, 2, "100.00", days_ago=100))  # bought at the café only on paper
    buy(salon, 2, "1000.00", days_ago=30)
    buy(cafe, 3, "100.00", days_ago=100)
    refund(buy(salon, 3, "1000.00", days_ago=30), amount="400.00")  # partly refunded: 600 brought
    buy(cafe, 7, "100.00", days_ago=100)
    refund(buy(salon, 7, "500.00", days_ago=60))  # a refunded first visit is no visit...
    buy(salon, 7, "700.00", days_ago=30)  # ...so this one is the first
    buy(salon, 5, "3000.00", days_ago=20)

    flow = calculate_winwin_index(cafe, salon).a_to_b

    assert flow.customers_sent == 2  # customers 3 and 7
    assert flow.revenue_brought == D("1300.00")
    assert flow.target_revenue == D("5300.00")  # 1,000 + 600 + 700 + 3,000
    assert flow.gain == pytest.approx(1300 / 5300)


def test_the_period_bounds_are_respected(cafe, salon):
    as_of = NOW - timedelta(days=5)
    start = as_of - timedelta(days=90)
    buy(cafe, 1, "100.00", days_ago=200)
    buy(salon, 1, "1000.00", at=start)  # first visit on the excluded bound: not sent...
    buy(salon, 1, "2000.00", days_ago=50)  # ...though this one is the salon's revenue
    buy(cafe, 2, "100.00", days_ago=200)
    buy(salon, 2, "1500.00", at=as_of)  # on the included bound
    buy(cafe, 3, "100.00", days_ago=200)
    buy(salon, 3, "800.00", days_ago=3)  # after as_of
    buy(cafe, 5, "100.00", days_ago=200)
    buy(salon, 5, "500.00", at=start + timedelta(seconds=1))
    buy(salon, 4, "1000.00", days_ago=40)  # the salon first, then the café: sent the other way
    buy(cafe, 4, "500.00", days_ago=30)

    index = calculate_winwin_index(cafe, salon, period=timedelta(days=90), as_of=as_of)

    assert (index.period_start, index.period_end) == (start, as_of)
    assert index.a_to_b.customers_sent == 2  # customers 2 and 5
    assert index.a_to_b.revenue_brought == D("2000.00")
    assert index.a_to_b.target_revenue == D("5000.00")  # 2,000 + 1,500 + 500 + 1,000
    assert index.b_to_a.customers_sent == 1
    assert index.b_to_a.revenue_brought == D("500.00")
    assert index.b_to_a.target_revenue == D("500.00")
    assert index.value == pytest.approx(harmonic_mean(saturate(0.4), saturate(1.0)))

    shorter = calculate_winwin_index(cafe, salon, period=timedelta(days=20), as_of=as_of)
    assert shorter.a_to_b.customers_sent == 1  # customer 2 only
    assert shorter.a_to_b.target_revenue == D("1500.00")
    assert shorter.b_to_a.customers_sent == 0


def test_coupons_redeemed_are_counted_per_direction_within_the_period(cafe, salon):
    issuing = [buy(cafe, n, "100.00", days_ago=80) for n in range(1, 6)]
    redeeming = [buy(salon, n, "500.00", days_ago=70) for n in range(1, 6)]
    back_issuing, back_redeeming = buy(salon, 9, "100.00", days_ago=80), buy(cafe, 9, "100.00", days_ago=60)
    # Chains made after the purchases, so no purchase above issued a coupon of its own.
    forth, back = chain(cafe, salon), chain(salon, cafe)

    def coupon(on_chain, issued_by, redeemed_by, redeemed_days_ago):
        Coupon.objects.create(
            chain=on_chain,
            customer=issued_by.customer,
            issuing_transaction=issued_by,
            status=Coupon.Status.REDEEMED if redeemed_by else Coupon.Status.ACTIVE,
            issued_at=issued_by.occurred_at,
            expires_at=issued_by.occurred_at + timedelta(days=200),
            redeemed_at=NOW - timedelta(days=redeemed_days_ago) if redeemed_by else None,
            redeeming_transaction=redeemed_by,
        )

    coupon(forth, issuing[0], redeeming[0], 70)
    coupon(forth, issuing[1], redeeming[1], 70)
    coupon(forth, issuing[2], redeeming[2], 95)  # redeemed before the period
    coupon(forth, issuing[3], None, None)  # not redeemed
    coupon(back, back_issuing, back_redeeming, 60)

    index = calculate_winwin_index(cafe, salon)

    assert index.a_to_b.coupons_redeemed == 2
    assert index.b_to_a.coupons_redeemed == 1
    # Customers count the same with or without a coupon.
    assert index.a_to_b.customers_sent == 5
    assert index.b_to_a.customers_sent == 1


def test_the_index_takes_two_queries_whatever_the_data(cafe, salon, django_assert_num_queries):
    for n in range(1, 8):
        buy(cafe, n, "100.00", days_ago=60)
        buy(salon, n, "100.00", days_ago=30)

    with django_assert_num_queries(2):
        index = calculate_winwin_index(cafe.pk, salon.pk)

    assert index.a_to_b.customers_sent == 7


def test_a_partner_has_no_index_with_itself(cafe):
    with pytest.raises(ValueError):
        calculate_winwin_index(cafe, cafe.pk)


# --- Chain recommendations -------------------------------------------------------------------


@pytest.fixture
def circle(cafe, salon):
    """The café's 10 customers (1..10) and where else they buy; `salon` is where most go."""
    other_cafe = partner("Другая кофейня", Business.Category.CAFE, "55.751000", "37.600000")
    florist = partner("Цветы", Business.Category.SHOP, "55.795000", "37.600000")  # 5 km
    fitness = partner("Фитнес", Business.Category.FITNESS)  # no coordinates
    school = partner("Школа", Business.Category.EDUCATION, "55.777000", "37.600000")  # 3 km
    chained_salon = partner("Салон с цепочкой", Business.Category.BEAUTY, "55.750500", "37.600000")
    clinic = partner("Клиника", Business.Category.CLINIC, "55.750200", "37.600000")
    closed_salon = partner("Закрытый салон", Business.Category.BEAUTY, "55.750100", "37.600000")

    for n in range(1, 11):
        buy(cafe, n, "300.00", days_ago=40)
    for n in range(1, 8):
        buy(salon, n, "1500.00", days_ago=20)
    buy(florist, 1, "900.00", days_ago=10)
    buy(other_cafe, 1, "200.00", days_ago=10)
    buy(other_cafe, 2, "200.00", days_ago=10)
    for n in range(1, 10):
        buy(chained_salon, n, "1000.00", days_ago=10)
        buy(clinic, n, "1000.00", days_ago=10)
        buy(closed_salon, n, "1000.00", days_ago=10)
    # Not the café's customers: one who never bought there, one whose only purchase was refunded.
    buy(salon, 50, "1000.00", days_ago=10)
    refund(buy(cafe, 51, "300.00", days_ago=10))
    buy(salon, 51, "1000.00", days_ago=5)
    buy(florist, 51, "1000.00", days_ago=5)

    Business.objects.filter(pk=closed_salon.pk).update(is_active=False)
    # Chains made after the purchases, so no purchase above issued a coupon.
    chain(cafe, chained_salon, CrossPromoChain.Status.ACTIVE, issued=100, redeemed=23)
    chain(clinic, cafe, CrossPromoChain.Status.PROPOSED)  # the other way round: excluded too
    chain(cafe, school, CrossPromoChain.Status.DECLINED)  # declined: may be suggested again
    return {
        "other_cafe": other_cafe,
        "florist": florist,
        "fitness": fitness,
        "school": school,
        "chained_salon": chained_salon,
        "clinic": clinic,
        "closed_salon": closed_salon,
    }


def test_the_salon_most_customers_go_to_ranks_first(cafe, salon, circle):
    suggestions = generate_chain_recommendations(cafe, limit=10)

    assert [s.partner.name for s in suggestions] == ["Салон", "Другая кофейня", "Цветы", "Фитнес", "Школа"]
    best = suggestions[0]
    assert isinstance(best, ChainSuggestion)
    assert best.partner == salon
    assert best.shared_customers == 7
    assert best.reachable_customers == 3
    assert best.complementarity == 0.8
    assert best.distance_km == pytest.approx(0.500, abs=0.002)
    assert best.similar_chains_redemption_rate == pytest.approx(0.23)
    # affinity min(1, 0.7 / 0.25) = 1, reach 0.3, complementarity 0.8,
    # distance 1 / (1 + 0.5), past chains 0.23 / 0.4; weights 0.35, 0.15, 0.25, 0.15, 0.10.
    expected = 0.35 * 1 + 0.15 * 0.3 + 0.25 * 0.8 + 0.15 / (1 + best.distance_km) + 0.10 * 0.23 / 0.4
    assert best.score == pytest.approx(expected)
    assert best.score == pytest.approx(0.7525, abs=1e-3)


def test_every_suggestion_scores_within_zero_and_one_best_first(cafe, circle):
    suggestions = generate_chain_recommendations(cafe, limit=10)

    scores = [s.score for s in suggestions]
    assert scores == sorted(scores, reverse=True)
    assert all(0 <= score <= 1 for score in scores)
    by_name = {s.partner.name: s for s in suggestions}
    # Same category: low complementarity; no chains of cafés with cafés yet: no rate.
    assert by_name["Другая кофейня"].complementarity == 0.1
    assert by_name["Другая кофейня"].similar_chains_redemption_rate is None
    assert by_name["Другая кофейня"].shared_customers == 2
    # The customer whose café purchase was refunded is not the café's.
    assert by_name["Цветы"].shared_customers == 1
    assert by_name["Цветы"].reachable_customers == 9
    assert by_name["Фитнес"].distance_km is None
    assert by_name["Фитнес"].score == pytest.approx((0.25 * 0.7 + 0.35 * 0 + 0.15 * 1) / 0.75)


def test_partners_with_a_chain_going_and_inactive_partners_are_left_out(cafe, circle):
    partners = {s.partner for s in generate_chain_recommendations(cafe, limit=10)}

    assert circle["chained_salon"] not in partners  # active chain from the café
    assert circle["clinic"] not in partners  # proposed chain to the café
    assert circle["closed_salon"] not in partners  # not active
    assert cafe not in partners
    assert circle["school"] in partners  # its chain was declined


def test_a_paused_chain_still_counts_as_going_and_an_ended_one_does_not(cafe, salon, circle):
    paused = chain(salon, cafe, CrossPromoChain.Status.PAUSED)
    assert salon not in {s.partner for s in generate_chain_recommendations(cafe, limit=10)}

    CrossPromoChain.objects.filter(pk=paused.pk).update(status=CrossPromoChain.Status.ENDED)
    assert generate_chain_recommendations(cafe, limit=1)[0].partner == salon


def test_the_reasons_say_it_in_words(cafe, circle):
    with translation.override("en"):
        suggestions = generate_chain_recommendations(cafe, limit=10)
    by_name = {s.partner.name: s for s in suggestions}

    assert by_name["Салон"].reasons == [
        "7 of your customers already buy there",
        "3 of your customers have never been there",
        "Cafés and beauty salons often send customers to each other",
        "500 m away",
        "Chains between cafés and beauty salons had 23% of coupons redeemed",
    ]
    assert by_name["Цветы"].reasons == [
        "1 of your customers already buys there",
        "9 of your customers have never been there",
        "Cafés and shops often send customers to each other",
    ]
    assert by_name["Фитнес"].reasons == [
        "10 of your customers have never been there",
        "Cafés and fitness studios often send customers to each other",
    ]


def test_the_limit_is_kept(cafe, circle):
    assert [s.partner.name for s in generate_chain_recommendations(cafe, limit=2)] == ["Салон", "Другая кофейня"]


def test_a_business_without_customers_is_still_given_suggestions(tiers, salon, circle):
    newcomer = partner("Новая кофейня", Business.Category.CAFE, "55.754600", "37.600000")

    with translation.override("en"):
        suggestions = generate_chain_recommendations(newcomer.pk, limit=10)

    first = suggestions[0]
    assert first.partner == salon  # complementary, 11 m away, chains of the pair had 23% redeemed
    assert (first.shared_customers, first.reachable_customers) == (0, 0)
    assert first.score == pytest.approx(
        (0.25 * 0.8 + 0.15 / (1 + first.distance_km) + 0.10 * 0.23 / 0.4) / (0.25 + 0.15 + 0.10)
    )
    assert first.reasons == [
        "Cafés and beauty salons often send customers to each other",
        "10 m away",
        "Chains between cafés and beauty salons had 23% of coupons redeemed",
    ]
    assert not any("of your customers" in reason for s in suggestions for reason in s.reasons)


def test_customers_are_those_of_the_last_year_before_as_of(cafe, salon):
    buy(cafe, 1, "100.00", days_ago=200)
    buy(salon, 1, "100.00", days_ago=150)
    buy(cafe, 2, "100.00", days_ago=10)
    buy(salon, 2, "100.00", days_ago=5)

    now = generate_chain_recommendations(cafe)[0]
    later = generate_chain_recommendations(cafe, as_of=NOW + timedelta(days=170))[0]
    earlier = generate_chain_recommendations(cafe, as_of=NOW - timedelta(days=7))[0]

    assert (now.shared_customers, now.reachable_customers) == (2, 0)
    assert (later.shared_customers, later.reachable_customers) == (1, 0)  # customer 1 is 370 days back
    assert (earlier.shared_customers, earlier.reachable_customers) == (1, 1)  # customer 2 not at the salon yet


def test_recommendations_take_three_queries_whatever_the_number_of_partners(cafe, circle, django_assert_num_queries):
    with django_assert_num_queries(3):
        generate_chain_recommendations(cafe, limit=10)
    for n in range(5):
        partner(f"Ещё партнёр {n}", Business.Category.SERVICES, "55.760000", "37.610000")
    with django_assert_num_queries(3):
        assert len(generate_chain_recommendations(cafe, limit=20)) == 10


def test_complementarity_is_symmetric_and_low_within_a_category():
    assert complementarity("cafe", "beauty") == complementarity("beauty", "cafe") == 0.8
    assert complementarity("cafe", "cafe") == 0.1
    assert complementarity("services", "other") == 0.4


def test_large_counts_and_kilometres_are_written_the_local_way():
    cafe = Business(category=Business.Category.CAFE)
    salon = Business(category=Business.Category.BEAUTY)
    with translation.override("en"):
        reasons = _reasons(cafe, salon, shared=312, reachable=4120, fit=0.8, km=1.26, rate=None)

    assert reasons == [
        "312 of your customers already buy there",
        "4,120 of your customers have never been there",
        "Cafés and beauty salons often send customers to each other",
        "1.3 km away",
    ]
