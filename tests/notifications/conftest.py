"""Fixtures for the notification channels: a fake push backend, a local fake SMS.ru and settings
that point at it; a broker that can go down in front of the eager tasks, and the sweeper run later."""

from datetime import timedelta

import pytest
import time_machine
from django.test import TestCase
from django.utils import timezone
from kombu.exceptions import OperationalError

from notifications.channels.push import PushOutcome
from notifications.tasks import deliver_notification, notify_pending, send_due_notifications
from tests.fakes.smsru import FakeSmsRu


class FakePush:
    """The push backend, recording what was sent; `outcome` (if set) answers every token."""

    def __init__(self):
        self.sent, self.outcome = [], None

    def send(self, tokens, title, body, data=None):
        self.sent.append((tokens, title, body))
        return [self.outcome or PushOutcome(token=t, ok=True, message_id=f"push-{len(self.sent)}") for t in tokens]


@pytest.fixture
def push(monkeypatch):
    fake = FakePush()
    monkeypatch.setattr("notifications.channels.push.get_push_backend", lambda: fake)
    return fake


@pytest.fixture
def fake_smsru():
    """A running fake SMS.ru on 127.0.0.1; `.url` is its base URL, `.requests` what it received."""
    fake = FakeSmsRu(slow_delay=1.0)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def smsru_settings(settings, fake_smsru):
    """Django settings that make get_sms_backend() talk to the fake with short timeouts."""
    settings.SMSRU_API_ID = "test-api-id"
    settings.SMSRU_BASE_URL = fake_smsru.url
    settings.SMSRU_SENDER = ""
    settings.SMSRU_TEST_MODE = False
    settings.SMSRU_CONNECT_TIMEOUT_SECONDS = 1.0
    settings.SMSRU_READ_TIMEOUT_SECONDS = 2.0
    return settings


class Broker:
    """Stands in for Redis in front of the eager tasks: while `down`, enqueueing raises as
    kombu does when it cannot connect; `published` lists what was offered to it."""

    def __init__(self, monkeypatch):
        self.down = False
        self.published: list[str] = []
        for task in (notify_pending, deliver_notification):
            monkeypatch.setattr(task, "apply_async", self._apply_async(task, task.apply_async))

    def _apply_async(self, task, apply_async):
        def offered(*args, **kwargs):
            self.published.append(task.name.rsplit(".", 1)[-1])
            if self.down:
                raise OperationalError("Error 111 connecting to redis:6379. Connection refused.")
            return apply_async(*args, **kwargs)

        return offered


@pytest.fixture
def broker(monkeypatch):
    return Broker(monkeypatch)


def sweep(minutes_later: float) -> int:
    """The sweeper's run that long from now, with the deliveries it enqueues on commit run
    (as they are after its transaction in a worker)."""
    with (
        time_machine.travel(timezone.now() + timedelta(minutes=minutes_later)),
        TestCase.captureOnCommitCallbacks(execute=True),
    ):
        return send_due_notifications()
