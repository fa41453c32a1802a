import pytest
from django.core.cache import cache

from accounts.phones import normalize_phone


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
