"""Money under parallel load, on PostgreSQL with real connections (one per thread)."""

from decimal import Decimal

import pytest

from loyalty import services
from loyalty.models import BonusAccount, LedgerEntry, Transaction
from loyalty.selectors import ledger_mismatches
from svoykrug.exceptions import DomainError
from tests.factories import ApiKeyFactory, BusinessFactory, LoyaltyProgramFactory, UserFactory
from tests.parallel import run_parallel

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def shop(tiers):
    # 100% of a check may be paid with bonuses, so each 1-rouble redemption is allowed by the cap.
    return LoyaltyProgramFactory(
        business=BusinessFactory(slug="shop"), accrual_rate=Decimal("0"), max_redeem_share=Decimal("100")
    ).business


def test_a_thousand_parallel_redemptions_of_one_from_a_balance_of_a_hundred(api_client, shop):
    customer = UserFactory(phone="+79991112233")
    services.adjust_balance(user=customer, amount=Decimal(100), reason="test", created_by=None)
    _, raw_key = ApiKeyFactory(business=shop)

    def redeem(index):
        from rest_framework.test import APIClient

        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw_key}")
        body = {"external_id": f"r-{index}", "phone": customer.phone, "amount": "1.00", "redeem": "1.00"}
        return client.post("/api/v1/partner/transactions/", body, format="json")

    responses = run_parallel(1000, redeem)

    statuses = [getattr(r, "status_code", r) for r in responses]
    assert statuses.count(201) == 100, {s for s in statuses if s not in (201, 409)}
    assert statuses.count(409) == 900
    assert {r.json()["error"]["code"] for r in responses if r.status_code == 409} == {"insufficient_bonuses"}
    assert BonusAccount.objects.get(user=customer).balance == Decimal("0.00")
    assert Transaction.objects.count() == 100
    assert ledger_mismatches() == []


def test_the_same_purchase_posted_fifty_times_at_once_is_one_purchase(shop):
    customer = UserFactory(phone="+79991112233")
    services.update_program(business=shop, changed_by=None, accrual_rate=Decimal("5"))

    outcomes = run_parallel(
        50,
        lambda _: services.record_transaction(
            business=shop, phone=customer.phone, external_id="same", amount=Decimal("1000")
        ),
    )

    results = [o for o in outcomes if isinstance(o, services.PurchaseResult)]
    assert len(results) == 50, [o for o in outcomes if not isinstance(o, services.PurchaseResult)]
    assert sum(r.created for r in results) == 1
    assert {r.transaction.pk for r in results} == {Transaction.objects.get().pk}
    assert LedgerEntry.objects.filter(kind="accrual").count() == 1
    assert BonusAccount.objects.get(user=customer).balance == Decimal("50.00")


def test_parallel_first_purchases_of_a_new_phone_make_one_customer(shop):
    outcomes = run_parallel(
        20,
        lambda index: services.record_transaction(
            business=shop, phone="+79997776655", external_id=f"p-{index}", amount=Decimal("100")
        ),
    )

    assert all(isinstance(o, services.PurchaseResult) for o in outcomes), outcomes
    assert len({o.transaction.customer_id for o in outcomes}) == 1
    assert BonusAccount.objects.count() == 1


def test_expiry_twice_at_once_expires_once(shop):
    from datetime import timedelta

    import time_machine
    from django.utils import timezone

    people = [UserFactory() for _ in range(30)]
    for person in people:
        services.adjust_balance(user=person, amount=Decimal(10), reason="test", created_by=None)

    with time_machine.travel(timezone.now() + timedelta(days=400)):
        outcomes = run_parallel(2, lambda _: services.check_bonus_expiration())

    assert all(isinstance(o, list) for o in outcomes), outcomes
    assert sorted(outcomes[0] + outcomes[1]) == sorted(p.pk for p in people)
    assert LedgerEntry.objects.filter(kind="expiry").count() == 30
    assert ledger_mismatches() == []


def test_purchases_refunds_and_expiry_in_parallel_keep_the_books(shop):
    """A mixed crowd on one account: the row lock orders them, the books still balance."""
    customer = UserFactory(phone="+79991112233")
    services.adjust_balance(user=customer, amount=Decimal(500), reason="test", created_by=None)
    for index in range(20):
        services.record_transaction(
            business=shop, customer=customer, external_id=f"base-{index}", amount=Decimal("50"), redeem=Decimal("5")
        )

    def act(index):
        if index % 3 == 0:
            return services.refund_transaction(business=shop, external_id=f"base-{index % 20}")
        if index % 3 == 1:
            return services.record_transaction(
                business=shop, customer=customer, external_id=f"new-{index}", amount=Decimal("20"), redeem=Decimal("3")
            )
        return services.check_bonus_expiration()

    outcomes = run_parallel(60, act)

    unexpected = [o for o in outcomes if isinstance(o, Exception) and not isinstance(o, DomainError)]
    assert unexpected == []
    assert ledger_mismatches() == []
    assert BonusAccount.objects.get(user=customer).balance >= 0
