"""Fixtures for the notification channels: a local fake SMS.ru and settings that point at it."""

import pytest

from tests.fakes.smsru import FakeSmsRu


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
