from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from loyalty.selectors import ledger_mismatches
from tests.factories import BusinessFactory, LoyaltyProgramFactory, UserFactory


def D(value) -> Decimal:
    return Decimal(str(value))


@pytest.fixture
def cafe(tiers):
    return LoyaltyProgramFactory(
        business=BusinessFactory(name="Кофейня", slug="cafe"), accrual_rate=D(5), max_redeem_share=D(30)
    ).business


@pytest.fixture
def salon(tiers):
    return LoyaltyProgramFactory(
        business=BusinessFactory(name="Салон", slug="salon"), accrual_rate=D(10), max_redeem_share=D(50)
    ).business


@pytest.fixture
def customer(db):
    return UserFactory(phone="+79991112233")


@pytest.fixture
def books_balance():
    """Call at the end of a test: the ledger, the lots and the cached balances agree."""

    def check():
        assert ledger_mismatches() == []

    return check


def days_ago(days: float):
    return timezone.now() - timedelta(days=days)
