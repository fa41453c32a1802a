"""The partner dashboard on both backends, against the same figures computed from the
PostgreSQL tables with the ORM here (the reference), and against a few worked by hand.

A small circle, every event made through loyalty.services at its own moment (time_machine),
k days before the day looked at (AS_OF), on Moscow's clock:

- the café (10%, welcome 50, bonuses live 30 days) is the business looked at; the salon
  (5%) and the shop (5%, welcome 20) are the others;
- Anna starts at the café (k=40: 150 of bonuses, expired at k=10), buys there at k=35 (20,
  expired at k=3), k=10 and k=3, then at the salon paying 60 of the café's bonuses (k=2),
  and at the café again after AS_OF (k=−1);
- Boris starts at the salon (k=12) and pays 100 of its bonuses at the café (k=1);
- Gleb's first café purchase (k=9) is refunded in full; he buys again at k=4 (returning:
  he first came at k=9);
- Vera starts at the shop (k=8), buys at the café at 01:30 on the week's first day (the
  evening before in UTC) and at 23:30 on AS_OF, 200 of that refunded a quarter hour later;
- Dina buys only at the salon and the shop.

The warehouse gets everything up to V-2 once, then everything again after the refund."""

from collections import Counter
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.utils import timezone

from accounts.models import User
from analytics import export
from analytics.dashboard import SERIES, DashboardData, Figures, delta, generate_business_dashboard
from analytics.models import ChurnModel, ChurnScore
from analytics.services import SEGMENTS, calculate_rfm_segments
from crosspromo.models import Coupon
from loyalty import services
from loyalty.models import LedgerEntry, Transaction
from tests.factories import BusinessFactory, LoyaltyProgramFactory, UserFactory

pytestmark = pytest.mark.django_db

D = Decimal
ZERO = D("0.00")
MOSCOW = ZoneInfo("Europe/Moscow")
AS_OF = timezone.localdate() - timedelta(days=2)
DAYS = {"day": 1, "week": 7, "month": 30}
PHONES = {"anna": "+79160000001", "boris": "+79160000002", "gleb": "+79160000003", "vera": "+79160000004"}
PHONES["dina"] = "+79160000005"


def at(k: int, hour: int, minute: int = 0) -> datetime:
    """`hour:minute` in Moscow k days before AS_OF."""
    return datetime.combine(AS_OF - timedelta(days=k), time(hour, minute), tzinfo=MOSCOW)


def midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=MOSCOW)


def bounds(period: str, as_of: date = AS_OF) -> tuple[datetime, datetime, datetime]:
    """(previous_start, start, end) of the period ending with as_of's day."""
    days = DAYS[period]
    end = midnight(as_of + timedelta(days=1))
    return midnight(as_of - timedelta(days=2 * days - 1)), midnight(as_of - timedelta(days=days - 1)), end


def buy(business, external_id, amount, who, moment, redeem="0"):
    with time_machine.travel(moment, tick=False):
        services.record_transaction(
            business=business, external_id=external_id, amount=D(amount), phone=PHONES[who], redeem=D(redeem)
        )


def refund(business, external_id, moment, amount=None):
    with time_machine.travel(moment, tick=False):
        services.refund_transaction(
            business=business, external_id=external_id, amount=amount and D(amount), refund_id=amount and "R-1"
        )


def expire(moment):
    with time_machine.travel(moment, tick=False):
        services.check_bonus_expiration()


@pytest.fixture
def circle(warehouse):
    cafe = LoyaltyProgramFactory(accrual_rate=D(10), welcome_bonus=D(50), bonus_lifetime_days=30).business
    salon = LoyaltyProgramFactory(business=BusinessFactory()).business
    shop = LoyaltyProgramFactory(business=BusinessFactory(), welcome_bonus=D(20)).business
    buy(cafe, "A-1", "1000", "anna", at(40, 12))
    buy(cafe, "A-2", "200", "anna", at(35, 12))
    buy(salon, "S-1", "2000", "boris", at(12, 11))
    buy(cafe, "A-3", "500", "anna", at(10, 12))
    expire(at(10, 13))
    buy(cafe, "G-1", "800", "gleb", at(9, 13))
    refund(cafe, "G-1", at(9, 15))
    buy(shop, "P-1", "300", "vera", at(8, 12))
    buy(cafe, "V-1", "400", "vera", at(6, 1, 30))
    buy(salon, "S-2", "1500", "dina", at(5, 10))
    buy(cafe, "G-2", "300", "gleb", at(4, 10))
    buy(cafe, "A-4", "600", "anna", at(3, 12))
    expire(at(3, 13))
    buy(salon, "S-3", "500", "anna", at(2, 12), redeem="60")
    buy(cafe, "B-1", "1000", "boris", at(1, 18), redeem="100")
    buy(shop, "P-2", "250", "dina", at(1, 19))
    buy(cafe, "V-2", "700", "vera", at(0, 23, 30))
    export.aggregate_transactions_to_clickhouse()
    refund(cafe, "V-2", at(0, 23, 45), amount="200")
    buy(cafe, "A-5", "999", "anna", at(-1, 10))
    # Everything again: each row twice, V-2 in a second version (refunded); FINAL reads one.
    export.aggregate_transactions_to_clickhouse(since=at(60, 0))
    return cafe, salon, shop


# --- The reference: the same figures from PostgreSQL, straightforwardly ---------------------


def money(values) -> Decimal:
    return sum(values, ZERO)


def home(customer_id):
    """The business of the customer's first purchase in the circle."""
    return Transaction.objects.filter(customer_id=customer_id).order_by("occurred_at", "recorded_at")[0].business_id


def reference(business, start: datetime, end: datetime) -> Figures:
    in_period = list(Transaction.objects.filter(business=business, occurred_at__gte=start, occurred_at__lt=end))
    revenue = money(t.paid_amount - t.money_refunded for t in in_period)
    counted = [t for t in in_period if t.status != Transaction.Status.REFUNDED]
    buyers = {t.customer_id for t in counted}
    # The first purchase here whatever became of it: Gleb, whose first one was refunded, is
    # returning when he buys again in a later week.
    here = Transaction.objects.filter(business=business)
    first_here = {c: here.filter(customer_id=c).order_by("occurred_at")[0].occurred_at for c in buyers}
    entries = LedgerEntry.objects.filter(created_at__gte=start, created_at__lt=end)
    issued = entries.filter(lot__business=business, kind__in=["accrual", "welcome", "birthday"])
    elsewhere = Transaction.objects.filter(occurred_at__gte=start, occurred_at__lt=end).exclude(business=business)
    return Figures(
        revenue=revenue,
        purchases=len(counted),
        average_check=(revenue / len(counted)).quantize(D("0.01")) if counted else ZERO,
        new_customers=sum(1 for c in buyers if first_here[c] >= start),
        returning_customers=sum(1 for c in buyers if first_here[c] < start),
        bonuses_issued=money(e.amount for e in issued),
        bonuses_spent=-money(e.amount for e in entries.filter(business=business, kind="redemption")),
        bonuses_expired=-money(e.amount for e in entries.filter(lot__business=business, kind="expiry")),
        bonus_liability=money(e.amount for e in LedgerEntry.objects.filter(lot__business=business, created_at__lt=end)),
        revenue_from_others_customers=money(
            t.paid_amount - t.money_refunded for t in in_period if home(t.customer_id) != business.pk
        ),
        own_customers_spent_elsewhere=money(
            t.paid_amount - t.money_refunded for t in elsewhere if home(t.customer_id) == business.pk
        ),
    )


def figures(revenue, purchases, new, returning, issued, spent, expired, liability, from_others, elsewhere):
    return Figures(
        revenue=D(revenue),
        purchases=purchases,
        average_check=(D(revenue) / purchases).quantize(D("0.01")) if purchases else ZERO,
        new_customers=new,
        returning_customers=returning,
        bonuses_issued=D(issued),
        bonuses_spent=D(spent),
        bonuses_expired=D(expired),
        bonus_liability=D(liability),
        revenue_from_others_customers=D(from_others),
        own_customers_spent_elsewhere=D(elsewhere),
    )


# The café's figures worked by hand: (current, previous) per period ending with AS_OF.
BY_HAND = {
    # Vera 500 (refunded 200 of 700) | Boris 900 paid + 100 of the salon's bonuses.
    "day": (figures(500, 1, 0, 1, 70, 0, 0, 260, 500, 0), figures(900, 1, 1, 0, 90, 100, 0, 210, 900, 0)),
    # Vera 400 + 500, Gleb 300 (returning: he first came last week), Anna 600, Boris 900; Anna's
    # 20 expire; Anna pays 440 at the salon | Anna 500, her 150 expire; Gleb's 800 refunded (his
    # 80 + 50 issued, then taken back).
    "week": (
        figures(2700, 5, 2, 2, 290, 100, 20, 260, 1800, 440),
        figures(500, 1, 0, 1, 180, 0, 150, 70, 0, 0),
    ),
    # Both weeks | Anna's first two purchases (150 + 20 issued, outstanding at the end).
    "month": (
        figures(3200, 6, 3, 1, 470, 100, 170, 260, 1800, 440),
        figures(1200, 2, 1, 0, 170, 0, 0, 170, 0, 0),
    ),
}


# --- The tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("period", ["day", "week", "month"])
def test_every_figure_equals_the_one_from_postgresql(circle, period):
    cafe, _salon, _shop = circle
    data = generate_business_dashboard(cafe.pk, period, as_of=AS_OF)
    previous_start, start, end = bounds(period)
    assert (data.previous_start, data.start, data.end, data.time_zone) == (previous_start, start, end, "Europe/Moscow")
    assert data.current == reference(cafe, start, end) == BY_HAND[period][0]
    assert data.previous == reference(cafe, previous_start, start) == BY_HAND[period][1]


def test_series_have_every_point_and_sum_to_the_period(circle):
    cafe, _salon, _shop = circle
    week = generate_business_dashboard(cafe.pk, "week", as_of=AS_OF)
    days = [AS_OF - timedelta(days=k) for k in range(6, -1, -1)]
    assert [day for day, _value in week.series["revenue"]] == days
    assert [day for day, _value in week.previous_series["revenue"]] == [day - timedelta(days=7) for day in days]
    for name in SERIES:
        assert sum(value for _day, value in week.series[name]) == getattr(week.current, name), name
        assert sum(value for _day, value in week.previous_series[name]) == getattr(week.previous, name), name
    # Vera's 01:30 on the week's first day is that day's (in UTC it was the evening before).
    assert [value for _day, value in week.series["revenue"]] == [D(400), 0, D(300), D(600), 0, D(900), D(500)]
    assert [value for _day, value in week.series["purchases"]] == [1, 0, 1, 1, 0, 1, 1]
    assert dict(week.series["bonuses_expired"])[AS_OF - timedelta(days=3)] == D(20)

    day = generate_business_dashboard(cafe.pk, "day", as_of=AS_OF)
    hours = [midnight(AS_OF) + timedelta(hours=h) for h in range(24)]
    assert [hour for hour, _value in day.series["revenue"]] == hours
    assert [hour for hour, _value in day.previous_series["revenue"]] == [h - timedelta(days=1) for h in hours]
    assert {hour.hour: value for hour, value in day.series["revenue"] if value} == {23: D(500)}
    assert {hour.hour: value for hour, value in day.previous_series["bonuses_spent"] if value} == {18: D(100)}
    for name in SERIES:
        assert sum(value for _hour, value in day.series[name]) == getattr(day.current, name), name


def test_as_of_replays_the_past(circle):
    cafe, _salon, _shop = circle
    week_before = AS_OF - timedelta(days=7)
    data = generate_business_dashboard(cafe.pk, "week", as_of=week_before)
    previous_start, start, end = bounds("week", week_before)
    assert data.current == reference(cafe, start, end) == BY_HAND["week"][1]
    assert data.previous == reference(cafe, previous_start, start)
    assert data.previous.bonuses_issued == 0 and data.previous.bonus_liability == D(170)  # Anna's, from before
    assert sum(data.segments.values()) == 1  # Anna: Gleb's purchase was refunded, Vera and Boris came later

    # The day after AS_OF (Anna's 999, 99.90 of bonuses) is not in AS_OF's figures; a datetime works too.
    after = generate_business_dashboard(cafe.pk, "day", as_of=at(-1, 12))
    assert after.current == reference(cafe, *bounds("day", AS_OF + timedelta(days=1))[1:])
    assert (after.current.revenue, after.current.bonus_liability) == (D(999), D("359.90"))
    assert after.previous == BY_HAND["day"][0]


def test_another_business_never_shows_up(circle):
    cafe, salon, _shop = circle
    before = generate_business_dashboard(cafe.pk, "week", as_of=AS_OF)

    # The salon's own figures are right, and the café's purchases are not among them.
    salon_data = generate_business_dashboard(salon.pk, "week", as_of=AS_OF)
    previous_start, start, end = bounds("week")
    assert salon_data.current == reference(salon, start, end)
    assert salon_data.previous == reference(salon, previous_start, start)
    assert (salon_data.current.revenue, salon_data.current.purchases) == (D(1940), 2)  # Anna 440, Dina 1500
    assert salon_data.current.bonuses_spent == D(60)  # Anna's, of the café's bonuses: spent at the salon

    # A partner with nothing sees nothing at all.
    empty = LoyaltyProgramFactory(business=BusinessFactory()).business
    nothing = generate_business_dashboard(empty.pk, "month", as_of=AS_OF)
    assert nothing.current == nothing.previous == figures(0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    assert (nothing.current.events_held, nothing.current.event_attendance, nothing.delta("event_attendance")) == (
        0,
        None,
        None,
    )
    assert all(value == 0 for series in nothing.series.values() for _day, value in series)
    assert set(nothing.segments.values()) == {0}

    # More at another partner, by someone who never came to the café: the café's figures stay.
    buy(salon, "S-9", "5000", "dina", at(2, 15))
    export.aggregate_transactions_to_clickhouse()
    assert generate_business_dashboard(cafe.pk, "week", as_of=AS_OF) == before


def test_a_dashboard_is_four_warehouse_queries_each_for_the_business_alone(circle, warehouse, monkeypatch):
    cafe, _salon, _shop = circle
    statements = []
    execute = warehouse.execute

    def counting(sql, params=None, **kwargs):
        statements.append((sql, params or {}))
        return execute(sql, params, **kwargs)

    monkeypatch.setattr(warehouse, "execute", counting)
    generate_business_dashboard(cafe.pk, "month", as_of=AS_OF)
    assert len(statements) == 4
    for sql, params in statements:
        assert "FINAL" in sql and "%(business)s" in sql and params["business"] == cafe.pk


def test_the_segment_mix_counts_the_business_customers(circle):
    cafe, _salon, _shop = circle
    data = generate_business_dashboard(cafe.pk, "week", as_of=AS_OF)
    assert list(data.segments) == list(SEGMENTS)
    expected = Counter(s.segment for s in calculate_rfm_segments(business_id=cafe.pk, as_of=data.end))
    assert data.segments == {segment: expected.get(segment, 0) for segment in SEGMENTS}
    buyers = Transaction.objects.filter(business=cafe, occurred_at__lt=data.end).exclude(status="refunded")
    assert sum(data.segments.values()) == buyers.values("customer").distinct().count() == 4


def test_at_risk_is_the_business_top_ten_by_churn_risk(circle):
    cafe, salon, _shop = circle
    assert generate_business_dashboard(cafe.pk, "day", as_of=AS_OF).at_risk == []  # no scores yet
    model = ChurnModel.objects.create(
        as_of=timezone.now(), horizon_days=60, estimator=b"", baseline_estimator=b"", sklearn_version="test"
    )
    users = {who: User.objects.get(phone=phone) for who, phone in PHONES.items()}
    users["vera"].first_name, users["vera"].last_name = "Вера", "Павлова"
    users["vera"].save()

    def score(user, business, risk):
        ChurnScore.objects.create(user=user, business=business, risk=risk, model=model, scored_at=timezone.now())

    score(users["anna"], cafe, 0.91)
    score(users["vera"], cafe, 0.95)
    score(users["dina"], salon, 0.99)  # another partner's customer
    score(users["boris"], None, 0.98)  # the circle's score, not the café's
    for n in range(10):
        score(UserFactory(first_name="", last_name=""), cafe, 0.5 - n / 100)
    at_risk = generate_business_dashboard(cafe.pk, "day", as_of=AS_OF).at_risk
    assert len(at_risk) == 10
    assert [(c.user_id, c.name, c.risk, c.last_purchase_at) for c in at_risk[:2]] == [
        (users["vera"].pk, "Вера Павлова", 0.95, at(0, 23, 30)),
        (users["anna"].pk, "+7916***0001", 0.91, at(-1, 10)),  # scores are now's, whatever as_of
    ]
    assert [c.risk for c in at_risk[2:]] == [0.5 - n / 100 for n in range(8)]
    assert at_risk[2].last_purchase_at is None and at_risk[2].name.startswith("+7999")


def test_delta_is_the_percent_change_and_none_from_zero():
    assert delta(D(150), D(100)) == D("50.0")
    assert delta(1, 3) == D("-66.7")
    assert delta(D(5), ZERO) is None and delta(0, 0) is None
    figures_now, figures_then = figures(1100, 2, 1, 1, 0, 0, 0, 0, 0, 0), figures(1000, 2, 0, 2, 0, 0, 0, 0, 0, 0)
    data = DashboardData(
        business_id=None,
        period="day",
        time_zone="Europe/Moscow",
        start=midnight(AS_OF),
        end=midnight(AS_OF),
        previous_start=midnight(AS_OF),
        current=figures_now,
        previous=figures_then,
        series={},
        previous_series={},
        segments={},
        at_risk=[],
    )
    assert (data.delta("revenue"), data.delta("purchases"), data.delta("new_customers")) == (D("10.0"), 0, None)
    assert data.deltas()["returning_customers"] == D("-50.0")


def test_an_unknown_period_is_refused():
    with pytest.raises(ValueError, match="period"):
        generate_business_dashboard(None, "year")


def test_the_cross_promo_block_counts_coupons_sent_and_redeemed(warehouse):
    from crosspromo import services as crosspromo

    cafe = LoyaltyProgramFactory().business
    salon = LoyaltyProgramFactory(business=BusinessFactory()).business
    with time_machine.travel(at(20, 9), tick=False):
        chain = crosspromo.create_chain(
            crosspromo.ChainConfig(source=cafe, target=salon, reward_kind="fixed", reward_value=D("150.00"))
        )
        crosspromo.accept_chain(chain, business=salon)
    buy(cafe, "C-1", "500", "anna", at(10, 12))  # issued the week before
    buy(cafe, "C-2", "500", "boris", at(5, 12))  # issued this week
    codes = dict(Coupon.objects.values_list("customer__phone", "code"))
    with time_machine.travel(at(3, 12), tick=False):
        services.record_transaction(
            business=salon, external_id="S-1", amount=D(1000), phone=PHONES["anna"], coupon=codes[PHONES["anna"]]
        )
    export.aggregate_transactions_to_clickhouse(since=at(30, 0))

    sent = generate_business_dashboard(cafe.pk, "week", as_of=AS_OF)
    assert (sent.current.coupons_issued, sent.previous.coupons_issued) == (1, 1)
    assert sent.current.coupons_redeemed == 0
    honoured = generate_business_dashboard(salon.pk, "week", as_of=AS_OF)
    assert (honoured.current.coupons_redeemed, honoured.current.coupon_rewards) == (1, D("150.00"))
    assert (honoured.previous.coupons_redeemed, honoured.current.coupons_issued) == (0, 0)
