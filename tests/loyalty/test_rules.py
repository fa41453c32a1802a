"""Each rule of the Loyalty service, one by one, with exact amounts."""

from datetime import timedelta

import pytest
import time_machine
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from loyalty import services
from loyalty.models import BonusAccount, BonusLot, LedgerEntry, ProgramChange, Transaction
from loyalty.money import percent_of, round_down, share_of
from loyalty.selectors import account_summary, clearing_matrix
from tests.factories import UserFactory
from tests.loyalty.conftest import D, days_ago

pytestmark = pytest.mark.django_db


def buy(business, customer, external_id, amount, **kwargs):
    return services.record_transaction(
        business=business, customer=customer, external_id=external_id, amount=D(amount), **kwargs
    )


def balance_of(user):
    return BonusAccount.objects.get(user=user).balance


# --- Money ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"), [("1.999", "1.99"), ("0.005", "0.00"), ("10", "10.00"), ("-1.999", "-1.99")]
)
def test_one_rounding_rule_rounds_down_to_the_kopeck(value, expected):
    assert round_down(D(value)) == D(expected)


def test_percent_and_share_round_down():
    assert percent_of(D("333.33"), D("5")) == D("16.66")
    assert share_of(D("10.00"), D("1"), D("3")) == D("3.33")
    assert share_of(D("10.00"), D("1"), D("0")) == D("0.00")


# --- Accrual ---------------------------------------------------------------------------------


def test_accrual_is_on_money_paid_at_the_business_rate(cafe, customer, books_balance):
    result = buy(cafe, customer, "p1", "1000.00")

    assert result.created is True
    assert result.transaction.bonuses_accrued == D("50.00")
    assert result.balance == D("50.00")
    assert result.tier.name == "Bronze"
    books_balance()


def test_no_accrual_on_the_part_paid_with_bonuses_nor_on_the_coupon(cafe, customer, books_balance):
    services.adjust_balance(user=customer, amount=D(300), reason="test", created_by=None)

    purchase = buy(cafe, customer, "p1", "1000.00", redeem=D("200.00"), coupon_discount=D("100.00")).transaction

    assert purchase.paid_amount == D("700.00")
    assert purchase.bonuses_accrued == D("35.00")
    assert balance_of(customer) == D("135.00")
    books_balance()


def test_rate_is_the_business_rate_plus_the_tier_uplift(cafe, customer):
    buy(cafe, customer, "big", "60000.00", occurred_at=days_ago(10))  # spend makes the customer Gold

    purchase = buy(cafe, customer, "p2", "100.00").transaction

    assert purchase.tier.name == "Gold"
    assert purchase.bonuses_accrued == D("7.00")  # 5% + 2 pp
    lot = BonusLot.objects.get(transaction=purchase)
    assert lot.tier.name == "Gold"


def test_accrual_rounds_down(cafe, customer):
    assert buy(cafe, customer, "p1", "99.99").transaction.bonuses_accrued == D("4.99")


def test_inactive_program_accrues_nothing_and_accepts_no_bonuses(cafe, customer):
    services.adjust_balance(user=customer, amount=D(100), reason="test", created_by=None)
    services.update_program(business=cafe, changed_by=None, is_active=False)

    assert buy(cafe, customer, "p1", "1000").transaction.bonuses_accrued == D("0.00")
    with pytest.raises(services.RedemptionOverLimit):
        buy(cafe, customer, "p2", "1000", redeem=D(10))


# --- Idempotency ---------------------------------------------------------------------------------


def test_same_purchase_twice_is_recorded_once(cafe, customer):
    first = buy(cafe, customer, "p1", "1000")
    again = buy(cafe, customer, "p1", "1000")

    assert again.created is False
    assert again.transaction.pk == first.transaction.pk
    assert again.balance == D("50.00")
    assert Transaction.objects.count() == 1
    assert LedgerEntry.objects.filter(kind="accrual").count() == 1


def test_same_id_with_other_data_is_a_conflict(cafe, customer):
    buy(cafe, customer, "p1", "1000")

    with pytest.raises(services.IdempotencyConflict):
        buy(cafe, customer, "p1", "1001")
    assert balance_of(customer) == D("50.00")


def test_same_external_id_at_two_businesses_is_two_purchases(cafe, salon, customer):
    buy(cafe, customer, "42", "100")
    buy(salon, customer, "42", "100")

    assert Transaction.objects.count() == 2


@pytest.mark.parametrize(
    ("amount", "kwargs"),
    [
        ("0", {}),
        ("-5", {}),
        ("10.001", {}),
        ("2000000", {}),
        ("100", {"redeem": D("60"), "coupon_discount": D("50")}),
        ("100", {"occurred_at": timezone.now() + timedelta(hours=1)}),
        ("100", {"occurred_at": timezone.now() - timedelta(days=400)}),
    ],
)
def test_invalid_purchases_are_refused_and_change_nothing(cafe, customer, amount, kwargs):
    with pytest.raises(services.InvalidPurchase):
        buy(cafe, customer, "bad", amount, **kwargs)

    assert Transaction.objects.count() == 0
    assert LedgerEntry.objects.count() == 0


def test_a_phone_new_to_the_circle_gets_an_account(cafe):
    result = services.record_transaction(business=cafe, phone="8 999 777-66-55", external_id="p1", amount=D(200))

    assert result.transaction.customer.phone == "+79997776655"
    assert result.transaction.customer.first_app_login_at is None
    assert result.balance == D("10.00")


# --- Welcome and birthday ------------------------------------------------------------------------


def test_welcome_bonus_once_on_the_first_purchase_in_the_circle(cafe, salon, customer):
    services.update_program(business=cafe, changed_by=None, welcome_bonus=D(100))
    services.update_program(business=salon, changed_by=None, welcome_bonus=D(200))

    buy(cafe, customer, "p1", "100")
    buy(salon, customer, "p2", "100")
    buy(cafe, customer, "p3", "100")

    welcomes = LedgerEntry.objects.filter(kind="welcome")
    assert [(w.amount, w.business_id) for w in welcomes] == [(D("100.00"), cafe.pk)]
    assert balance_of(customer) == D("100.00") + D("5.00") + D("10.00") + D("5.00")


def test_birthday_bonus_once_a_year_to_the_business_customers(cafe, salon, customer):
    services.update_program(business=cafe, changed_by=None, birthday_bonus=D(300))
    customer.birth_date = timezone.localdate().replace(year=1990)
    customer.save()
    stranger = UserFactory(birth_date=customer.birth_date)  # never bought at the café
    buy(cafe, customer, "p1", "100")

    granted = services.grant_birthday_bonuses()
    again = services.grant_birthday_bonuses()

    assert (granted, again) == (1, 0)
    assert balance_of(customer) == D("305.00")
    assert not BonusAccount.objects.filter(user=stranger).exists()


def test_a_29_february_birthday_counts_on_28_february_in_other_years(cafe, customer):
    services.update_program(business=cafe, changed_by=None, birthday_bonus=D(50))
    customer.birth_date = timezone.datetime(2000, 2, 29).date()
    customer.save()
    with time_machine.travel("2027-02-28 09:00:00 +0300", tick=False):
        buy(cafe, customer, "p1", "100")
        assert services.grant_birthday_bonuses() == 1


# --- Redemption ------------------------------------------------------------------------------------


def test_redemption_is_capped_by_the_business_share(cafe, customer):
    services.adjust_balance(user=customer, amount=D(1000), reason="test", created_by=None)

    with pytest.raises(services.RedemptionOverLimit) as refused:
        buy(cafe, customer, "p1", "1000", redeem=D("300.01"))
    accepted = buy(cafe, customer, "p2", "1000", redeem=D("300.00"))

    assert refused.value.extra["max_redeemable"] == "300.00"
    assert accepted.transaction.bonuses_redeemed == D("300.00")


def test_tier_extra_share_raises_the_cap(cafe, customer):
    buy(cafe, customer, "big", "60000", occurred_at=days_ago(5))  # Gold: +10 pp of a check
    services.adjust_balance(user=customer, amount=D(1000), reason="test", created_by=None)

    result = buy(cafe, customer, "p1", "1000", redeem=D("400.00"))

    assert result.transaction.bonuses_redeemed == D("400.00")


def test_not_enough_bonuses_is_refused_and_nothing_is_recorded(cafe, customer):
    services.adjust_balance(user=customer, amount=D(10), reason="test", created_by=None)

    with pytest.raises(services.InsufficientBonuses):
        buy(cafe, customer, "p1", "1000", redeem=D("10.01"))

    assert not Transaction.objects.filter(external_id="p1").exists()
    assert balance_of(customer) == D("10.00")


def test_bonuses_on_hold_cannot_be_spent(cafe, salon, customer):
    services.update_program(business=cafe, changed_by=None, hold_days=14)
    buy(cafe, customer, "p1", "2000")  # 100 bonuses, spendable in 14 days

    assert account_summary(customer).pending == D("100.00")
    assert account_summary(customer).spendable == D("0.00")
    with pytest.raises(services.InsufficientBonuses):
        buy(salon, customer, "p2", "1000", redeem=D("50"))
    with time_machine.travel(timezone.now() + timedelta(days=14, minutes=1)):
        assert buy(salon, customer, "p3", "1000", redeem=D("50")).transaction.bonuses_redeemed == D("50.00")


def test_soonest_expiring_lots_are_spent_first_and_recorded(cafe, salon, customer):
    buy(salon, customer, "late", "1000", occurred_at=days_ago(10))  # salon lot: 100, expires later
    buy(cafe, customer, "early", "1000", occurred_at=days_ago(300))  # café lot: 50, expires sooner

    spent = buy(salon, customer, "spend", "1000", redeem=D("80")).transaction

    entries = LedgerEntry.objects.filter(transaction=spent, kind="redemption").order_by("id")
    assert [(e.lot.business.slug, e.amount) for e in entries] == [("cafe", D("-50.00")), ("salon", D("-30.00"))]
    assert all(e.business_id == salon.pk for e in entries)


def test_apply_bonus_redemption_spends_outside_a_purchase(cafe, customer):
    services.adjust_balance(user=customer, amount=D(100), reason="test", created_by=None)

    assert services.apply_bonus_redemption(customer, D(40), business=cafe, idempotency_key="gift-1") is True
    assert balance_of(customer) == D("60.00")
    with pytest.raises(services.InsufficientBonuses):
        services.apply_bonus_redemption(customer, D(61), business=cafe, idempotency_key="gift-2")


def test_quote_is_the_smaller_of_the_cap_and_the_spendable_balance(cafe, customer):
    services.adjust_balance(user=customer, amount=D(100), reason="test", created_by=None)

    assert services.quote_redemption(business=cafe, phone=customer.phone, amount=D(200)) == D("60.00")
    assert services.quote_redemption(business=cafe, phone=customer.phone, amount=D(1000)) == D("100.00")
    assert services.quote_redemption(business=cafe, phone="+79990000000", amount=D(1000)) == D("0.00")


# --- Refunds ---------------------------------------------------------------------------------------


def test_full_refund_takes_the_accrual_back(cafe, customer, books_balance):
    buy(cafe, customer, "p1", "1000")

    result = services.refund_transaction(business=cafe, external_id="p1")

    assert result.refund.accrual_reversed == D("50.00")
    assert result.refund.unrecovered == D("0.00")
    assert result.balance == D("0.00")
    assert Transaction.objects.get(external_id="p1").status == "refunded"
    books_balance()


def test_partial_refunds_take_back_in_proportion_and_add_up_exactly(cafe, customer, books_balance):
    buy(cafe, customer, "p1", "999.99")  # 49.99 accrued

    first = services.refund_transaction(business=cafe, external_id="p1", amount=D("333.33"), refund_id="r1")
    second = services.refund_transaction(business=cafe, external_id="p1", amount=D("333.33"), refund_id="r2")
    third = services.refund_transaction(business=cafe, external_id="p1")

    taken = [r.refund.accrual_reversed for r in (first, second, third)]
    assert taken == [D("16.66"), D("16.66"), D("16.67")]
    assert sum(taken) == D("49.99")
    assert Transaction.objects.get(external_id="p1").status == "refunded"
    assert balance_of(customer) == D("0.00")
    books_balance()


def test_refund_returns_the_bonuses_spent_as_lots_of_their_issuers(cafe, salon, customer, books_balance):
    buy(salon, customer, "earn", "1000")  # 100 from the salon
    buy(cafe, customer, "spend", "1000", redeem=D("100"))  # paid 900 → 45 accrued

    result = services.refund_transaction(business=cafe, external_id="spend")

    assert result.refund.redeemed_returned == D("100.00")
    assert result.refund.accrual_reversed == D("45.00")
    returned = BonusLot.objects.get(entries__kind="refund_return")
    assert (returned.business_id, returned.amount) == (salon.pk, D("100.00"))
    assert result.balance == D("100.00")
    books_balance()


def test_buy_earn_spend_refund_keep_does_not_work(cafe, salon, customer, books_balance):
    buy(cafe, customer, "earn", "2000")  # 100 accrued
    buy(salon, customer, "spend", "1000", redeem=D("100"))  # spent elsewhere; 90 accrued there
    assert balance_of(customer) == D("90.00")

    refund = services.refund_transaction(business=cafe, external_id="earn").refund

    assert refund.accrual_reversed == D("90.00")  # from the other bonuses, down to zero
    assert refund.unrecovered == D("10.00")  # recorded for the café
    assert balance_of(customer) == D("0.00")
    assert BonusAccount.objects.get(user=customer).clawback_due == D("10.00")
    buy(salon, customer, "later", "1000")  # 100 more: 10 go to the debt first
    assert balance_of(customer) == D("90.00")
    assert BonusAccount.objects.get(user=customer).clawback_due == D("0.00")
    books_balance()


def test_refunding_in_a_clever_order_keeps_nothing(cafe, salon, customer, books_balance):
    services.update_program(business=cafe, changed_by=None, welcome_bonus=D(100))
    buy(cafe, customer, "t1", "1000")  # 50 + 100 welcome
    buy(salon, customer, "t2", "500", redeem=D("120"))  # spends 120, earns 38

    services.refund_transaction(business=cafe, external_id="t1")
    services.refund_transaction(business=salon, external_id="t2")

    assert balance_of(customer) == D("0.00")
    books_balance()


def test_refund_is_idempotent_and_refuses_more_than_is_left(cafe, customer):
    buy(cafe, customer, "p1", "1000")
    services.refund_transaction(business=cafe, external_id="p1", amount=D(400), refund_id="r1")

    again = services.refund_transaction(business=cafe, external_id="p1", amount=D(400), refund_id="r1")
    with pytest.raises(services.IdempotencyConflict):
        services.refund_transaction(business=cafe, external_id="p1", amount=D(300), refund_id="r1")
    with pytest.raises(services.RefundNotPossible):
        services.refund_transaction(business=cafe, external_id="p1", amount=D(601), refund_id="r2")
    with pytest.raises(services.RefundIdRequired):
        services.refund_transaction(business=cafe, external_id="p1", amount=D(100))
    with pytest.raises(services.TransactionNotFound):
        services.refund_transaction(business=cafe, external_id="nope")

    assert again.created is False
    assert Transaction.objects.get(external_id="p1").refunded_amount == D("400.00")


# --- Tiers -----------------------------------------------------------------------------------------


def test_tier_rises_with_spend_and_falls_when_it_ages(cafe, customer):
    buy(cafe, customer, "p1", "16000", occurred_at=days_ago(300))
    assert services.update_status_tier(customer).name == "Silver"

    with time_machine.travel(timezone.now() + timedelta(days=70)):
        assert services.update_status_tier(customer).name == "Bronze"


def test_a_refund_can_lower_the_tier(cafe, customer):
    buy(cafe, customer, "p1", "16000")
    assert BonusAccount.objects.get(user=customer).tier.name == "Silver"

    services.refund_transaction(business=cafe, external_id="p1", amount=D(2000), refund_id="r1")

    assert BonusAccount.objects.get(user=customer).tier.name == "Bronze"


def test_nightly_recompute_downgrades_in_batches(cafe, settings, tiers):
    settings.LOYALTY_BATCH_ACCOUNTS = 2
    people = [UserFactory() for _ in range(5)]
    for index, person in enumerate(people):
        buy(cafe, person, f"p{index}", "16000", occurred_at=days_ago(360))

    with time_machine.travel(timezone.now() + timedelta(days=10)):
        changed = services.recompute_all_tiers()
        again = services.recompute_all_tiers()

    assert (changed, again) == (5, 0)
    assert set(BonusAccount.objects.values_list("tier__name", flat=True)) == {"Bronze"}


# --- Expiry ----------------------------------------------------------------------------------------


def test_expiry_takes_what_is_left_of_expired_lots_only(cafe, salon, customer, books_balance):
    buy(cafe, customer, "old", "1000", occurred_at=days_ago(364))  # 50, expires tomorrow
    buy(salon, customer, "new", "1000", occurred_at=days_ago(1))  # 100
    buy(salon, customer, "spend", "100", redeem=D("20"))  # takes 20 from the old lot

    with time_machine.travel(timezone.now() + timedelta(days=2)):
        affected = services.check_bonus_expiration()
        again = services.check_bonus_expiration()

    assert affected == [customer.pk]
    assert again == []
    expiry = LedgerEntry.objects.get(kind="expiry")
    assert (expiry.amount, expiry.lot.business_id) == (D("-30.00"), cafe.pk)
    assert balance_of(customer) == D("100.00") + D("8.00")
    books_balance()


def test_expiry_in_batches(cafe, settings, tiers):
    settings.LOYALTY_BATCH_ACCOUNTS = 3
    people = [UserFactory() for _ in range(7)]
    for index, person in enumerate(people):
        buy(cafe, person, f"p{index}", "100", occurred_at=days_ago(366 - 2))

    with time_machine.travel(timezone.now() + timedelta(days=3)):
        affected = services.check_bonus_expiration()

    assert sorted(affected) == sorted(p.pk for p in people)
    assert set(BonusAccount.objects.values_list("balance", flat=True)) == {D("0.00")}


def test_expiries_are_listed_per_batch(cafe, salon, customer):
    buy(cafe, customer, "a", "1000", occurred_at=days_ago(300))
    buy(salon, customer, "b", "1000", occurred_at=days_ago(100))

    expiries = account_summary(customer).expiries

    assert [(e.amount, e.business_name) for e in expiries] == [(D("50.00"), "Кофейня"), (D("100.00"), "Салон")]


# --- Adjustments -------------------------------------------------------------------------------------


def test_adjustment_needs_a_reason_and_cannot_go_below_zero(customer, books_balance, tiers):
    with pytest.raises(services.InvalidPurchase):
        services.adjust_balance(user=customer, amount=D(10), reason="  ", created_by=None)
    services.adjust_balance(user=customer, amount=D(10), reason="goodwill", created_by=None)
    with pytest.raises(services.InsufficientBonuses):
        services.adjust_balance(user=customer, amount=D(-11), reason="mistake", created_by=None)

    entries = services.adjust_balance(user=customer, amount=D(-4), reason="mistake", created_by=None)

    assert [(e.amount, e.reason) for e in entries] == [(D("-4.00"), "mistake")]
    assert balance_of(customer) == D("6.00")
    books_balance()


def test_adjustment_with_a_key_happens_once(customer, tiers):
    services.adjust_balance(user=customer, amount=D(10), reason="x", created_by=None, idempotency_key="k1")
    services.adjust_balance(user=customer, amount=D(10), reason="x", created_by=None, idempotency_key="k1")

    assert balance_of(customer) == D("10.00")


# --- Program history ------------------------------------------------------------------------------------


def test_program_changes_are_kept_with_who_and_what(cafe):
    manager = UserFactory()

    services.update_program(business=cafe, changed_by=manager, accrual_rate=D("7.50"), hold_days=3)
    services.update_program(business=cafe, changed_by=manager, accrual_rate=D("7.50"))  # no change

    change = ProgramChange.objects.get()
    assert change.changed_by == manager
    assert change.changes == {"accrual_rate": ["5.00", "7.50"], "hold_days": [0, 3]}


def test_program_refuses_impossible_terms(cafe):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        services.update_program(business=cafe, changed_by=None, accrual_rate=D(101))
    assert ProgramChange.objects.count() == 0


# --- Settlement --------------------------------------------------------------------------------------


def test_clearing_matrix_says_who_issued_what_was_spent_where(cafe, salon, customer):
    buy(cafe, customer, "earn-c", "2000")  # café issues 100
    buy(salon, customer, "earn-s", "1000", occurred_at=days_ago(1))  # salon issues 100, expiring a day sooner
    buy(salon, customer, "spend", "1000", redeem=D("150"))  # 100 salon + 50 café spent at the salon
    services.refund_transaction(business=salon, external_id="spend", amount=D(500), refund_id="half")  # 75 back

    rows = clearing_matrix(since=days_ago(2), until=timezone.now() + timedelta(minutes=1))

    assert {(r.issuer_name, r.spender_name, r.amount) for r in rows} == {
        ("Салон", "Салон", D("50.00")),
        ("Кофейня", "Салон", D("25.00")),
    }


# --- The ledger's guards -------------------------------------------------------------------------------


def test_database_refuses_a_negative_balance(customer, tiers):
    services.adjust_balance(user=customer, amount=D(5), reason="x", created_by=None)

    with pytest.raises(IntegrityError), transaction.atomic():
        BonusAccount.objects.filter(user=customer).update(balance=D(-1))


def test_database_refuses_a_lot_remainder_above_its_amount(cafe, customer):
    buy(cafe, customer, "p1", "1000")

    with pytest.raises(IntegrityError), transaction.atomic():
        BonusLot.objects.update(remaining=D(51))


@pytest.mark.postgres
def test_postgres_refuses_to_change_or_delete_ledger_entries(cafe, customer):
    buy(cafe, customer, "p1", "1000")
    entry = LedgerEntry.objects.get()

    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        LedgerEntry.objects.filter(pk=entry.pk).update(amount=D(1000))
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM loyalty_ledgerentry")
    assert LedgerEntry.objects.get().amount == D("50.00")


def test_program_history_records_amounts_as_stored(cafe):
    services.update_program(business=cafe, changed_by=None, accrual_rate=D("7.5"))

    assert ProgramChange.objects.get().changes == {"accrual_rate": ["5.00", "7.50"]}


def test_a_quote_creates_no_account(cafe, customer):
    assert services.quote_redemption(business=cafe, phone=customer.phone, amount=D(100)) == D("0.00")
    assert not BonusAccount.objects.filter(user=customer).exists()
