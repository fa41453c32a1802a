"""Fixtures of the partner portal's tests: two businesses with their staff, a client that
speaks English (the msgids) unless a test asks for Russian, and SMS that are recorded."""

import uuid
from decimal import Decimal

import pytest
from django.test import Client

from accounts.models import Membership
from accounts.portal import SESSION_BUSINESS
from loyalty import services
from loyalty.models import Transaction
from tests.factories import BusinessFactory, LoyaltyProgramFactory, MembershipFactory, UserFactory


@pytest.fixture
def client():
    """The portal in English, so that tests read the msgids; the i18n test asks for Russian."""
    return Client(headers={"Accept-Language": "en"})


@pytest.fixture
def business_a(tiers):
    business = BusinessFactory(name="Кофейня «Зерно»", slug="zerno")
    LoyaltyProgramFactory(business=business, accrual_rate=Decimal("5.00"), max_redeem_share=Decimal("30.00"))
    return business


@pytest.fixture
def business_b(tiers):
    business = BusinessFactory(name="Салон «Лён»", slug="len")
    LoyaltyProgramFactory(business=business, accrual_rate=Decimal("10.00"), max_redeem_share=Decimal("50.00"))
    return business


def _member(business, role, phone, first_name):
    user = UserFactory(phone=phone, first_name=first_name, last_name="Петрова")
    MembershipFactory(user=user, business=business, role=role)
    return user


@pytest.fixture
def owner(business_a):
    return _member(business_a, Membership.Role.OWNER, "+79990000101", "Ольга")


@pytest.fixture
def manager(business_a):
    return _member(business_a, Membership.Role.MANAGER, "+79990000102", "Мария")


@pytest.fixture
def cashier(business_a):
    return _member(business_a, Membership.Role.CASHIER, "+79990000103", "Анна")


@pytest.fixture
def owner_b(business_b):
    return _member(business_b, Membership.Role.OWNER, "+79990000201", "Борис")


@pytest.fixture
def login(client):
    """Log a person in (the session a finished SMS login leaves), optionally in a business."""

    def do_login(user, business=None):
        client.force_login(user)
        if business is not None:
            session = client.session
            session[SESSION_BUSINESS] = str(business.pk)
            session.save()
        return client

    return do_login


@pytest.fixture
def buy():
    """Record a purchase through the service, as a POS would."""

    def do_buy(business, phone, amount, redeem="0", external_id=None, **kwargs) -> Transaction:
        return services.record_transaction(
            business=business,
            external_id=external_id or f"pos-{uuid.uuid4().hex[:8]}",
            phone=phone,
            amount=Decimal(amount),
            redeem=Decimal(redeem),
            **kwargs,
        ).transaction

    return do_buy
