"""With the broker down an event's messages are kept in the notification log, the write that
caused them commits undisturbed, and the sweeper sends each message once the broker is back."""

import os
import socket
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from loyalty import services as loyalty
from notifications import services
from notifications.models import NotificationLog
from notifications.tasks import notify_event
from tests.factories import BusinessFactory, LoyaltyProgramFactory, UserFactory
from tests.notifications.conftest import sweep

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
EXPIRING = {"days": 1, "batches": [{"amount": "10.00", "date": "27.11.2026"}]}


@pytest.fixture
def customer(db):
    return UserFactory(phone="+79991112233", email="")


def test_with_the_broker_down_the_message_waits_in_the_log_and_the_sweeper_sends_it_once(
    customer, broker, sms, django_capture_on_commit_callbacks
):
    broker.down = True

    with django_capture_on_commit_callbacks(execute=True):
        services.notify_after_commit(user_id=customer.pk, messages=[("bonus_expiring", EXPIRING)], event_key="e1")

    log = NotificationLog.objects.get()
    assert (log.kind, log.channel, log.recipient, log.status, log.attempts) == (
        "bonus_expiring",
        "sms",
        "+79991112233",
        "queued",
        0,
    )
    assert broker.published == ["notify_event"]  # its delivery is not offered to a broker known to be down
    assert sms.sent == []

    broker.down = False
    assert sweep(minutes_later=2) == 1
    assert sweep(minutes_later=3) == 0

    log.refresh_from_db()
    assert (log.status, log.attempts) == ("sent", 1)
    assert [phone for phone, _text in sms.sent] == ["+79991112233"]


def test_an_event_task_that_reached_a_worker_after_all_sends_nothing_twice(
    customer, broker, sms, django_capture_on_commit_callbacks
):
    broker.down = True
    with django_capture_on_commit_callbacks(execute=True):
        services.notify_after_commit(user_id=customer.pk, messages=[("bonus_expiring", EXPIRING)], event_key="e1")
    broker.down = False

    # The publish that "failed" was delivered anyway (a timeout after Redis took it).
    assert notify_event(str(customer.pk), [["bonus_expiring", EXPIRING]], "e1") == 0
    assert sweep(minutes_later=2) == 1

    assert NotificationLog.objects.count() == 1
    assert len(sms.sent) == 1


def test_while_the_broker_is_down_a_purchase_is_recorded_and_its_messages_go_later(
    customer, broker, push, tiers, django_capture_on_commit_callbacks
):
    business = LoyaltyProgramFactory(business=BusinessFactory(name="Кофейня"), welcome_bonus=Decimal(100)).business
    services.register_device(user=customer, token="tok-a", platform="android")
    services.register_device(user=customer, token="tok-b", platform="ios")
    broker.down = True

    with django_capture_on_commit_callbacks(execute=True):
        result = loyalty.record_transaction(
            business=business, customer=customer, external_id="p1", amount=Decimal(1000)
        )

    assert (result.created, result.balance) == (True, Decimal("150.00"))
    assert sorted(NotificationLog.objects.values_list("kind", "recipient", "status")) == [
        ("bonus_accrued", "tok-a", "queued"),
        ("bonus_accrued", "tok-b", "queued"),
        ("welcome", "tok-a", "queued"),
        ("welcome", "tok-b", "queued"),
    ]
    assert broker.published == ["notify_event"]
    assert push.sent == []

    broker.down = False
    assert sweep(minutes_later=2) == 4
    assert sweep(minutes_later=3) == 0

    assert set(NotificationLog.objects.values_list("status", flat=True)) == {"sent"}
    assert sorted(tokens[0] for tokens, _title, _body in push.sent) == ["tok-a", "tok-a", "tok-b", "tok-b"]


def test_with_the_broker_up_the_event_is_sent_once_and_nothing_is_left_for_the_sweeper(
    customer, broker, sms, django_capture_on_commit_callbacks
):
    for _attempt in range(2):  # the caller's retry of the same event
        with django_capture_on_commit_callbacks(execute=True):
            services.notify_after_commit(user_id=customer.pk, messages=[("bonus_expiring", EXPIRING)], event_key="e1")

    assert broker.published == ["notify_event", "deliver_notification", "notify_event"]
    assert NotificationLog.objects.get().status == "sent"
    assert sweep(minutes_later=2) == 0
    assert len(sms.sent) == 1


def test_when_deliveries_cannot_be_enqueued_the_first_failure_stops_the_rest(
    customer, broker, push, django_capture_on_commit_callbacks
):
    services.register_device(user=customer, token="tok-a", platform="android")
    services.register_device(user=customer, token="tok-b", platform="ios")
    broker.down = True

    with django_capture_on_commit_callbacks(execute=True):
        logs = services.notify(
            customer, "bonus_accrued", {"amount": "10", "business_name": "C", "balance": "10"}, event_key="e1"
        )

    assert len(logs) == 2
    assert broker.published == ["deliver_notification"]  # not once more for the second device
    assert set(NotificationLog.objects.values_list("status", flat=True)) == {"queued"}
    broker.down = False
    assert sweep(minutes_later=2) == 2
    assert len(push.sent) == 2


def test_a_muted_event_is_not_kept_either(customer, broker, django_capture_on_commit_callbacks):
    broker.down = True
    with services.muted(), django_capture_on_commit_callbacks(execute=True):
        services.notify_after_commit(user_id=customer.pk, messages=[("bonus_expiring", EXPIRING)], event_key="e1")

    assert broker.published == []
    assert NotificationLog.objects.count() == 0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_enqueueing_to_a_broker_that_refuses_gives_up_at_once():
    """Against a real Redis URL with nothing listening (Celery's default retries wait ~0.8 s)."""
    script = """
import time
import django
django.setup()
from kombu.exceptions import OperationalError
from notifications import services
from notifications.channels.push import PushOutcome
from notifications.tasks import notify_event
from svoykrug.celery import app
assert not app.conf.task_always_eager
started = time.monotonic()
try:
    services._publish(notify_event, "1", [], "e1")
except OperationalError:
    print(f"{time.monotonic() - started:.3f}")
"""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "svoykrug.settings",
        "REDIS_URL": f"redis://127.0.0.1:{_closed_port()}/0",
    }
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    assert float(result.stdout) < 0.3, result.stdout
