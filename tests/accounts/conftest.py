import re
from dataclasses import dataclass, field

import pytest
from django.core.cache import cache

from accounts.phones import normalize_phone
from notifications.channels.sms import SmsReceipt


@dataclass
class RecordingSmsBackend:
    """Stands in for the SMS provider: keeps what would have been sent, or fails on demand."""

    sent: list[tuple[str, str]] = field(default_factory=list)
    fail_with: Exception | None = None
    name: str = "recording"

    def send(self, phone: str, text: str) -> SmsReceipt:
        if self.fail_with is not None:
            raise self.fail_with
        self.sent.append((phone, text))
        return SmsReceipt(provider=self.name, message_id=str(len(self.sent)))

    def last_code(self) -> str:
        return re.search(r"\d{4,}", self.sent[-1][1]).group(0)


@pytest.fixture
def sms(monkeypatch):
    backend = RecordingSmsBackend()
    monkeypatch.setattr("notifications.services.get_sms_backend", lambda: backend)
    return backend


@pytest.fixture
def login(api_client, sms):
    """Log a phone in through the real API; returns the verify response's JSON."""

    def do_login(phone="+79991234567", ip="10.0.0.1"):
        # Each call is a fresh login: act as if the resend cooldown has passed.
        cache.delete(f"otp:cooldown:{normalize_phone(phone)}")
        challenge = api_client.post("/api/v1/auth/otp/", {"phone": phone}, format="json", REMOTE_ADDR=ip)
        assert challenge.status_code == 201, challenge.json()
        response = api_client.post(
            "/api/v1/auth/otp/verify/",
            {"code_id": challenge.json()["code_id"], "code": sms.last_code()},
            format="json",
        )
        assert response.status_code == 200, response.json()
        return response.json()

    return do_login
