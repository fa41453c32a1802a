"""The events tests' shared pieces: a host partner with a program, its staff, and events made
through the service as a partner makes them."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from accounts.models import Membership
from events import services
from tests.factories import BusinessFactory, LoyaltyProgramFactory, MembershipFactory


@pytest.fixture
def host(tiers):
    business = BusinessFactory(
        name="Кофейня",
        slug="cafe",
        address="ул. Ленина, 1",
        latitude=Decimal("55.751244"),
        longitude=Decimal("37.618423"),
    )
    return LoyaltyProgramFactory(business=business, bonus_lifetime_days=365).business


@pytest.fixture
def manager(host):
    return MembershipFactory(business=host, role=Membership.Role.MANAGER).user


@pytest.fixture
def cashier(host):
    return MembershipFactory(business=host, role=Membership.Role.CASHIER).user


@pytest.fixture
def make_event(host, manager):
    """make_event(**overrides) → an event of the host made through create_event, three days ahead."""

    def make(**overrides):
        starts = overrides.pop("starts_at", timezone.now() + timedelta(days=3))
        values = {
            "business": host,
            "title": "Tasting",
            "starts_at": starts,
            "ends_at": starts + timedelta(hours=2),
            "capacity": 10,
        }
        values.update(overrides)
        return services.create_event(services.EventCreate(**values), manager)

    return make
