"""The export to the warehouse, on both backends: idempotent, a refund re-exported as a new
version and read once, a watermark with an overlap, ledger entries with their issuers."""

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from analytics import export, schema
from analytics.models import ExportState
from loyalty import services
from tests.factories import BusinessFactory, LoyaltyProgramFactory

pytestmark = pytest.mark.django_db

D = Decimal


def buy(business, external_id, amount, phone="+79161234567", **kwargs):
    return services.record_transaction(
        business=business, external_id=external_id, amount=D(amount), phone=phone, **kwargs
    ).transaction


def totals(warehouse, business):
    (row,) = warehouse.execute(
        "SELECT count(), sum(paid_amount), sum(refunded_amount), groupArray(status) "
        "FROM purchases FINAL WHERE business_id = %(business)s",
        {"business": business.pk},
    )
    return row[0], row[1], row[2], sorted(row[3])


def test_exporting_twice_changes_no_figure(warehouse):
    cafe = LoyaltyProgramFactory(accrual_rate=D(5)).business
    buy(cafe, "A-1", "1000.00")
    buy(cafe, "A-2", "250.50", phone="+79161234568")

    first = export.aggregate_transactions_to_clickhouse()
    again = export.aggregate_transactions_to_clickhouse(since=timezone.now() - timedelta(days=1))

    assert first == again == 4  # 2 purchases + 2 accrual entries, each time
    assert totals(warehouse, cafe) == (2, D("1250.50"), D("0.00"), ["completed", "completed"])
    ((accrued, entries),) = warehouse.execute(
        "SELECT sum(amount), count() FROM ledger_entries FINAL WHERE issuer_id = %(cafe)s", {"cafe": cafe.pk}
    )
    assert (accrued, entries) == (D("62.52"), 2)  # 50.00 + 12.52
    ((names,),) = warehouse.execute("SELECT groupArray(name) FROM businesses FINAL WHERE id = %(id)s", {"id": cafe.pk})
    assert names == [cafe.name]


def test_a_refund_is_exported_as_a_new_version_and_read_once(warehouse):
    cafe = LoyaltyProgramFactory(accrual_rate=D(10)).business
    other = LoyaltyProgramFactory(business=BusinessFactory()).business
    start = timezone.now() - timedelta(hours=5)
    with time_machine.travel(start, tick=False):
        buy(cafe, "A-1", "1000.00")
        buy(other, "B-1", "300.00")
    with time_machine.travel(start + timedelta(hours=1), tick=False):
        assert export.aggregate_transactions_to_clickhouse() == 4
    with time_machine.travel(start + timedelta(hours=2), tick=False):
        # Nothing changed since the watermark (less its 10 minutes of overlap).
        assert export.aggregate_transactions_to_clickhouse() == 0
        services.refund_transaction(business=cafe, external_id="A-1", amount=D("400.00"), refund_id="R-1")
    with time_machine.travel(start + timedelta(hours=3), tick=False):
        # The purchase again (a new version) and the reversal of its accrual.
        assert export.aggregate_transactions_to_clickhouse() == 2

    assert totals(warehouse, cafe) == (1, D("1000.00"), D("400.00"), ["partially_refunded"])
    assert totals(warehouse, other) == (1, D("300.00"), D("0.00"), ["completed"])  # never another's rows
    ((versions,),) = warehouse.execute(
        "SELECT uniqExact(version) FROM purchases WHERE business_id = %(cafe)s", {"cafe": cafe.pk}
    )
    assert versions in (1, 2)  # two versions stored until merged; FINAL reads the latest either way
    ((kinds,),) = warehouse.execute(
        "SELECT groupArray(kind) FROM ledger_entries FINAL WHERE transaction_id IN "
        "(SELECT id FROM purchases FINAL WHERE business_id = %(cafe)s)",
        {"cafe": cafe.pk},
    )
    assert sorted(kinds) == ["accrual", "refund_reversal"]


def test_the_watermark_and_lag_are_kept_per_stream(warehouse):
    cafe = LoyaltyProgramFactory().business
    buy(cafe, "A-1", "100.00")
    assert export.export_lag_seconds() is None
    moment = timezone.now()
    with time_machine.travel(moment, tick=False):
        export.aggregate_transactions_to_clickhouse()
    states = {state.name: state for state in ExportState.objects.all()}
    assert set(states) == {"purchases", "ledger_entries", "coupons", "event_registrations"}
    assert states["purchases"].watermark == moment
    assert (states["purchases"].last_rows, states["purchases"].total_rows) == (1, 1)
    with time_machine.travel(moment + timedelta(minutes=5), tick=False):
        assert export.export_lag_seconds() == 300


def test_a_second_run_while_one_is_going_does_nothing(warehouse):
    from django.core.cache import cache

    LoyaltyProgramFactory()
    cache.add("warehouse-export", 1, timeout=60)
    assert export.aggregate_transactions_to_clickhouse() == 0
    assert not ExportState.objects.exists()


def test_text_with_escapes_survives_the_export(warehouse):
    cafe = LoyaltyProgramFactory().business
    tricky = "чек\t№1 \\ «ё»\nвторая строка"
    buy(cafe, tricky, "10.00")
    export.aggregate_transactions_to_clickhouse()
    ((external_id,),) = warehouse.execute(
        "SELECT external_id FROM purchases FINAL WHERE business_id = %(cafe)s", {"cafe": cafe.pk}
    )
    assert external_id == tricky


def test_a_new_empty_warehouse_is_filled_from_the_beginning(warehouse, settings, tmp_path):
    from analytics import schema
    from analytics.warehouse import get_warehouse, reset_warehouse

    cafe = LoyaltyProgramFactory().business
    buy(cafe, "A-1", "100.00")
    export.aggregate_transactions_to_clickhouse()
    # The warehouse is lost and made again (here: a new chDB folder); PostgreSQL still has
    # its watermarks, which would skip everything already sent.
    reset_warehouse()
    settings.CLICKHOUSE_URL = ""
    settings.CHDB_PATH = str(tmp_path / "chdb-again")
    assert schema.migrate() != []
    export.aggregate_transactions_to_clickhouse()
    assert totals(get_warehouse(), cafe)[:2] == (1, D("100.00"))


def partner_rows(warehouse, business):
    """What business_ledger holds under the partner, and the home customer_firsts gives."""
    ledger = warehouse.execute(
        "SELECT role, kind, amount FROM business_ledger FINAL WHERE partner_id = %(b)s ORDER BY role, kind, amount",
        {"b": business.pk},
    )
    return [(role, kind, amount) for role, kind, amount in ledger]


def homes(warehouse):
    rows = warehouse.execute("SELECT customer_id, argMin(home, first_key) FROM customer_firsts GROUP BY customer_id")
    return dict(rows)


def firsts(warehouse):
    rows = warehouse.execute(
        "SELECT partner_id, customer_id, min(first_at) FROM partner_firsts GROUP BY partner_id, customer_id"
    )
    return {(partner, customer): first for partner, customer, first in rows}


def test_the_tables_derived_for_one_partner_follow_every_export_once(warehouse):
    cafe = LoyaltyProgramFactory(accrual_rate=D(10)).business
    salon = LoyaltyProgramFactory(business=BusinessFactory(), accrual_rate=D(10)).business
    earlier = timezone.now() - timedelta(days=3)
    first = buy(cafe, "C-1", "1000.00", occurred_at=earlier)  # the customer's home: the café
    buy(salon, "S-1", "500.00", redeem=D("40.00"))  # bonuses of the café spent at the salon
    export.aggregate_transactions_to_clickhouse()
    export.aggregate_transactions_to_clickhouse(since=earlier - timedelta(days=1))  # everything twice

    assert partner_rows(warehouse, cafe) == [
        ("issuer", "accrual", D("100.00")),
        ("issuer", "redemption", D("-40.00")),
        ("place", "accrual", D("100.00")),
    ]
    assert partner_rows(warehouse, salon) == [
        ("issuer", "accrual", D("46.00")),
        ("place", "accrual", D("46.00")),
        ("place", "redemption", D("-40.00")),
    ]
    assert homes(warehouse) == {first.customer_id: cafe.pk}
    customer, at_cafe = first.customer_id, first.occurred_at.replace(microsecond=0)

    # A purchase that happened even earlier at the salon, recorded now, moves the home.
    buy(salon, "S-0", "100.00", occurred_at=earlier - timedelta(days=1))
    export.aggregate_transactions_to_clickhouse()
    assert homes(warehouse) == {customer: salon.pk}
    day_before = (earlier - timedelta(days=1)).replace(microsecond=0)
    assert firsts(warehouse) == {(cafe.pk, customer): at_cafe, (salon.pk, customer): day_before}


def test_migrating_a_warehouse_that_holds_rows_fills_the_derived_tables(warehouse):
    cafe = LoyaltyProgramFactory(accrual_rate=D(10)).business
    purchase = buy(cafe, "C-1", "1000.00")
    # The warehouse as it was before migrations 0002 and 0003, already holding the rows.
    for name in ("business_ledger_by_issuer", "business_ledger_by_place", "business_ledger"):
        warehouse.execute(f"DROP TABLE {name}")
    for name in ("customer_firsts_feed", "customer_firsts", "partner_firsts_feed", "partner_firsts"):
        warehouse.execute(f"DROP TABLE {name}")
    warehouse.execute("DROP TABLE schema_migrations")
    schema.applied(warehouse)  # made again, empty
    warehouse.insert("schema_migrations", ["name", "applied_at"], [("0001_purchases_and_ledger", timezone.now())])
    export.aggregate_transactions_to_clickhouse()

    assert schema.migrate(warehouse) == [
        "0002_business_ledger",
        "0003_customer_firsts",
        "0004_partner_firsts",
        "0005_coupons",
        "0006_event_registrations",
    ]
    assert partner_rows(warehouse, cafe) == [("issuer", "accrual", D("100.00")), ("place", "accrual", D("100.00"))]
    assert homes(warehouse) == {purchase.customer_id: cafe.pk}
    assert firsts(warehouse) == {(cafe.pk, purchase.customer_id): purchase.occurred_at.replace(microsecond=0)}


def test_a_coupon_is_exported_again_when_it_is_redeemed_and_read_once(warehouse):
    from crosspromo import services as crosspromo

    cafe = LoyaltyProgramFactory().business
    salon = LoyaltyProgramFactory(business=BusinessFactory()).business
    chain = crosspromo.create_chain(
        crosspromo.ChainConfig(source=cafe, target=salon, reward_kind="fixed", reward_value=D("150.00"))
    )
    crosspromo.accept_chain(chain, business=salon)
    coupon = buy(cafe, "C-1", "500.00").coupons_issued.get()
    export.aggregate_transactions_to_clickhouse()
    with time_machine.travel(timezone.now() + timedelta(seconds=2)):
        redeemed = buy(salon, "S-1", "1000.00", coupon=coupon.code)
        export.aggregate_transactions_to_clickhouse()
    rows = warehouse.execute(
        "SELECT id, source_id, target_id, status, value_given, redeeming_transaction_id, redeemed_at IS NOT NULL "
        "FROM coupons FINAL WHERE target_id = %(salon)s",
        {"salon": salon.pk},
    )
    assert rows == [(coupon.pk, cafe.pk, salon.pk, "redeemed", D("150.00"), redeemed.pk, 1)]
