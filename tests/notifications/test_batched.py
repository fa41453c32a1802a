"""One task per customer for what one purchase tells (notifications.services.batched): its
bonuses and the coupons it issued go out together after commit, a rolled-back part tells
nothing, and with the broker down every event still waits in the database for the sweeper."""

from decimal import Decimal

import pytest
from django.db import transaction

from crosspromo import services as crosspromo
from crosspromo.services import ChainConfig
from loyalty import services as loyalty
from notifications import services
from notifications.models import NotificationLog, PendingEvent
from tests.factories import BusinessFactory, LoyaltyProgramFactory, UserFactory
from tests.notifications.conftest import sweep

pytestmark = pytest.mark.django_db
EXPIRING = {"days": 1, "batches": [{"amount": "10.00", "date": "27.11.2026"}]}


@pytest.fixture
def customer(db):
    return UserFactory(phone="+79991112233", email="")


@pytest.fixture
def cafe_with_chain(tiers):
    cafe = LoyaltyProgramFactory(business=BusinessFactory(name="Кофейня"), accrual_rate=Decimal(5)).business
    salon = LoyaltyProgramFactory(business=BusinessFactory(name="Салон")).business
    chain = crosspromo.create_chain(
        ChainConfig(source=cafe, target=salon, reward_kind="fixed", reward_value=Decimal(200))
    )
    crosspromo.accept_chain(chain, business=salon)
    return cafe


def told() -> list[tuple[object, str, str]]:
    """(customer, kind, event key) of every message in the log."""
    return sorted(
        {
            (log.user_id, log.kind, log.idempotency_key.rsplit(f":{log.kind}:", 1)[0])
            for log in NotificationLog.objects.all()
        },
        key=str,
    )


def test_a_purchase_that_earns_and_issues_a_coupon_publishes_one_task(
    customer, cafe_with_chain, broker, push, django_capture_on_commit_callbacks
):
    services.register_device(user=customer, token="tok-a", platform="android")
    with django_capture_on_commit_callbacks(execute=True):
        result = loyalty.record_transaction(
            business=cafe_with_chain, customer=customer, external_id="p1", amount=Decimal(1000)
        )

    assert broker.published.count("notify_pending") == 1  # not one task per event
    assert not PendingEvent.objects.exists()  # both decided by it
    coupon = result.transaction.coupons_issued.get()
    assert told() == [
        (customer.pk, "bonus_accrued", f"txn:{result.transaction.pk}"),
        (customer.pk, "coupon_issued", f"coupon:{coupon.pk}"),
    ]
    assert sorted(body for _tokens, _title, body in push.sent) == sorted(
        NotificationLog.objects.values_list("body", flat=True)
    )
    assert len(push.sent) == 2


def test_the_events_of_a_rolled_back_savepoint_tell_nothing(customer, broker, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic(), services.batched():
        services.notify_after_commit(user_id=customer.pk, messages=[("bonus_expiring", EXPIRING)], event_key="kept")
        try:
            with transaction.atomic():
                services.notify_after_commit(
                    user_id=customer.pk, messages=[("bonus_expiring", EXPIRING)], event_key="undone"
                )
                raise RuntimeError("the write failed")
        except RuntimeError:
            pass

    assert broker.published.count("notify_pending") == 1
    assert told() == [(customer.pk, "bonus_expiring", "kept")]
    assert not PendingEvent.objects.exists()  # the undone one was never written


def test_a_batch_rolled_back_as_a_whole_tells_nothing(customer, broker, django_capture_on_commit_callbacks):
    with (
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(RuntimeError),
        transaction.atomic(),
        services.batched(),
    ):
        services.notify_after_commit(user_id=customer.pk, messages=[("bonus_expiring", EXPIRING)], event_key="e1")
        raise RuntimeError("the write failed")

    assert broker.published == []
    assert not NotificationLog.objects.exists()
    assert not PendingEvent.objects.exists()


def test_nested_batches_join_the_outer_one_and_customers_get_a_task_each(
    customer, broker, django_capture_on_commit_callbacks
):
    other = UserFactory(phone="+79991112244", email="")
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic(), services.batched():
        services.notify_after_commit(user_id=customer.pk, messages=[("bonus_expiring", EXPIRING)], event_key="a")
        with services.batched():
            services.notify_after_commit(user_id=customer.pk, messages=[("bonus_expiring", EXPIRING)], event_key="b")
        services.notify_after_commit(user_id=other.pk, messages=[("bonus_expiring", EXPIRING)], event_key="c")
        assert broker.published == []  # nothing before the commit

    assert broker.published[:2] == ["notify_pending", "notify_pending"]  # one per customer
    assert told() == sorted(
        [(customer.pk, "bonus_expiring", "a"), (customer.pk, "bonus_expiring", "b"), (other.pk, "bonus_expiring", "c")],
        key=str,
    )


def test_with_the_broker_down_a_batch_waits_in_the_database_and_goes_once(
    customer, cafe_with_chain, broker, push, django_capture_on_commit_callbacks
):
    services.register_device(user=customer, token="tok-a", platform="android")
    broker.down = True
    with django_capture_on_commit_callbacks(execute=True):
        loyalty.record_transaction(business=cafe_with_chain, customer=customer, external_id="p1", amount=Decimal(1000))

    assert broker.published == ["notify_pending"]
    assert PendingEvent.objects.count() == 2  # the purchase's bonuses and its coupon
    assert not NotificationLog.objects.exists()
    assert push.sent == []

    broker.down = False
    assert sweep(minutes_later=0.5) == 0  # within NOTIFY_PENDING_GRACE_SECONDS: its task may still come
    assert sweep(minutes_later=2) == 2
    assert sorted(NotificationLog.objects.values_list("kind", "status")) == [
        ("bonus_accrued", "sent"),
        ("coupon_issued", "sent"),
    ]
    assert not PendingEvent.objects.exists()
    assert sweep(minutes_later=3) == 0
    assert len(push.sent) == 2


def test_an_error_caught_inside_the_transaction_keeps_the_events_of_what_commits(
    customer, broker, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        try:
            with services.batched():
                services.notify_after_commit(
                    user_id=customer.pk, messages=[("bonus_expiring", EXPIRING)], event_key="kept"
                )
                raise RuntimeError("a later step failed, and the caller carried on")
        except RuntimeError:
            pass

    assert told() == [(customer.pk, "bonus_expiring", "kept")]
