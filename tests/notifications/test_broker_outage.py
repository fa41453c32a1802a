"""With the broker down, or a broker that lost the task, an event waits in the database (the
PendingEvent its write committed), the write commits undisturbed, and the sweeper decides and
sends each message once the broker is back."""

import os
import socket
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from loyalty import services as loyalty
from notifications import services
from notifications.models import NotificationLog, PendingEvent
from notifications.tasks import notify_pending
from tests.factories import BusinessFactory, LoyaltyProgramFactory, UserFactory
from tests.notifications.conftest import sweep

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
EXPIRING = {"days": 1, "batches": [{"amount": "10.00", "date": "27.11.2026"}]}


@pytest.fixture
def customer(db):
    return UserFactory(phone="+79991112233", email="")


def test_with_the_broker_down_the_event_waits_in_the_database_and_the_sweeper_sends_it_once(
    customer, broker, sms, django_capture_on_commit_callbacks
):
    broker.down = True

    with django_capture_on_commit_callbacks(execute=True):
        services.notify_after_commit(user_id=customer.pk, messages=[("bonus_expiring", EXPIRING)], event_key="e1")

    pending = PendingEvent.objects.get()
    assert (pending.user_id, pending.messages, pending.event_key) == (customer.pk, [["bonus_expiring", EXPIRING]], "e1")
    assert broker.published == ["notify_pending"]
    assert not NotificationLog.objects.exists()
    assert sms.sent == []

    broker.down = False
    assert sweep(minutes_later=2) == 1
    assert sweep(minutes_later=3) == 0

    log = NotificationLog.objects.get()
    assert (log.kind, log.channel, log.recipient, log.status, log.attempts) == (
        "bonus_expiring",
        "sms",
        "+79991112233",
        "sent",
        1,
    )
    assert [phone for phone, _text in sms.sent] == ["+79991112233"]
    assert not PendingEvent.objects.exists()


def test_a_task_the_broker_took_and_lost_is_made_up_by_the_sweeper(
    customer, broker, sms, django_capture_on_commit_callbacks, monkeypatch
):
    # Redis accepted the task, then lost it with its memory: the publish succeeded, nothing ran.
    monkeypatch.setattr(notify_pending, "apply_async", lambda *args, **kwargs: None)
    with django_capture_on_commit_callbacks(execute=True):
        services.notify_after_commit(user_id=customer.pk, messages=[("bonus_expiring", EXPIRING)], event_key="e1")
    assert not NotificationLog.objects.exists()

    assert sweep(minutes_later=2) == 1

    assert NotificationLog.objects.get().status == "sent"
    assert len(sms.sent) == 1


def test_an_event_task_that_reached_a_worker_after_all_sends_nothing_twice(
    customer, broker, sms, django_capture_on_commit_callbacks
):
    broker.down = True
    with django_capture_on_commit_callbacks(execute=True):
        services.notify_after_commit(user_id=customer.pk, messages=[("bonus_expiring", EXPIRING)], event_key="e1")
    broker.down = False
    pending = PendingEvent.objects.get()

    # The publish that "failed" was delivered anyway (a timeout after Redis took it).
    with django_capture_on_commit_callbacks(execute=True):
        assert notify_pending(str(customer.pk), [pending.pk]) == 1
    assert notify_pending(str(customer.pk), [pending.pk]) == 0  # decided once
    assert sweep(minutes_later=2) == 0

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
    assert PendingEvent.objects.get().event_key == f"txn:{result.transaction.pk}"
    assert broker.published == ["notify_pending"]
    assert push.sent == []

    broker.down = False
    assert sweep(minutes_later=2) == 4
    assert sweep(minutes_later=3) == 0

    assert sorted(NotificationLog.objects.values_list("kind", "recipient", "status")) == [
        ("bonus_accrued", "tok-a", "sent"),
        ("bonus_accrued", "tok-b", "sent"),
        ("welcome", "tok-a", "sent"),
        ("welcome", "tok-b", "sent"),
    ]
    assert sorted(tokens[0] for tokens, _title, _body in push.sent) == ["tok-a", "tok-a", "tok-b", "tok-b"]


def test_with_the_broker_up_the_event_is_sent_once_and_nothing_is_left_for_the_sweeper(
    customer, broker, sms, django_capture_on_commit_callbacks
):
    for _attempt in range(2):  # the caller's retry of the same event
        with django_capture_on_commit_callbacks(execute=True):
            services.notify_after_commit(user_id=customer.pk, messages=[("bonus_expiring", EXPIRING)], event_key="e1")

    assert broker.published == ["notify_pending", "deliver_notification", "notify_pending"]
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
    assert not PendingEvent.objects.exists()


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
from notifications.tasks import notify_pending
from svoykrug.celery import app
assert not app.conf.task_always_eager
started = time.monotonic()
try:
    services._publish(notify_pending, "1", [])
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


def test_staff_see_the_events_waiting_for_the_sweeper_and_cannot_change_them(
    customer, broker, client, django_capture_on_commit_callbacks
):
    staff = UserFactory(phone="+79990000001", is_staff=True, is_superuser=True)
    client.force_login(staff)
    broker.down = True
    with django_capture_on_commit_callbacks(execute=True):
        services.notify_after_commit(user_id=customer.pk, messages=[("bonus_expiring", EXPIRING)], event_key="txn:42")
    pending = PendingEvent.objects.get()

    listing = client.get("/admin/notifications/pendingevent/")
    shown = client.get(f"/admin/notifications/pendingevent/{pending.pk}/change/")
    deleted = client.post(f"/admin/notifications/pendingevent/{pending.pk}/delete/", {"post": "yes"})

    assert listing.status_code == 200 and "txn:42" in listing.content.decode()
    assert shown.status_code == 200
    assert deleted.status_code == 403
    assert PendingEvent.objects.filter(pk=pending.pk).exists()


def test_an_event_that_cannot_be_decided_stays_and_holds_up_none_of_the_others(customer, broker, sms, caplog):
    broken = PendingEvent.objects.create(user=customer, messages=[["no_such_kind", {}]], event_key="bad")
    fine = PendingEvent.objects.create(user=customer, messages=[["bonus_expiring", EXPIRING]], event_key="good")

    assert sweep(minutes_later=2) == 1

    assert list(PendingEvent.objects.values_list("pk", flat=True)) == [broken.pk]
    assert NotificationLog.objects.get().idempotency_key.startswith("good:")
    assert f"Could not decide pending event {broken.pk}" in caplog.text
    assert not PendingEvent.objects.filter(pk=fine.pk).exists()


def test_one_sweep_drains_a_backlog_batch_after_batch_and_passes_over_what_fails(
    customer, broker, sms, settings, caplog
):
    settings.NOTIFY_PENDING_BATCH = 2
    events = [
        PendingEvent.objects.create(user=customer, messages=[["bonus_expiring", EXPIRING]], event_key=f"e{n}")
        for n in range(5)
    ]
    broken = PendingEvent.objects.create(user=customer, messages=[["no_such_kind", {}]], event_key="bad")
    events.append(PendingEvent.objects.create(user=customer, messages=[["bonus_expiring", EXPIRING]], event_key="e5"))

    assert sweep(minutes_later=2) == 6  # four batches of two, the broken one among them

    assert list(PendingEvent.objects.values_list("pk", flat=True)) == [broken.pk]
    assert NotificationLog.objects.filter(status="sent").count() == 6
    assert len(sms.sent) == 6
    assert caplog.text.count(f"Could not decide pending event {broken.pk}") == 1  # tried once a run
