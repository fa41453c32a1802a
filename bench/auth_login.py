"""Phone login speed: how fast one process answers the mobile app's auth calls.

Runs the real API through Django's test client (no network, no SMS: a recording backend
stands in for SMS.ru) on a throwaway test database of whatever DATABASE_URL points at,
with whatever cache REDIS_URL selects. Prints requests per second and latency
percentiles for each call.

    .venv/bin/python bench/auth_login.py                       # SQLite + local-memory cache
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/svoykrug \
    REDIS_URL=redis://127.0.0.1:6379/0 .venv/bin/python bench/auth_login.py
"""

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "svoykrug.settings")
os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret-key-0123456789abcdef")
os.environ.setdefault("LOG_LEVEL", "WARNING")
os.environ["SMSRU_API_ID"] = ""
# 300 logins from one address: the bench measures the login path, not the per-IP rate limit.
os.environ.setdefault("THROTTLE_OTP_RATE", "off")
os.environ.setdefault("THROTTLE_OTP_VERIFY_RATE", "off")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

import notifications.services  # noqa: E402
from notifications.channels.sms import SmsReceipt  # noqa: E402

LOGINS = int(os.environ.get("BENCH_LOGINS", "300"))


class RecordingSms:
    name = "bench"
    last_text = ""

    def send(self, phone, text):
        self.last_text = text
        return SmsReceipt(provider=self.name, message_id="0")


def report(name, durations):
    durations = sorted(durations)
    total = sum(durations)
    p50 = statistics.median(durations) * 1000
    p95 = durations[int(len(durations) * 0.95) - 1] * 1000
    print(f"{name:<28} {len(durations) / total:8.0f} req/s   p50 {p50:6.2f} ms   p95 {p95:6.2f} ms")


def timed(send, *args, **kwargs):
    started = time.perf_counter()
    response = send(*args, **kwargs)
    return time.perf_counter() - started, response


def main():
    settings.OTP_MAX_PER_IP_PER_HOUR = LOGINS * 10
    sms = RecordingSms()
    notifications.services.get_sms_backend = lambda: sms
    setup_test_environment()
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        from django.core.cache import cache

        cache.clear()
        client = APIClient()
        send, verify, refresh, me = [], [], [], []
        for index in range(LOGINS):
            phone = f"+7999{index:07d}"
            took, response = timed(client.post, "/api/v1/auth/otp/", {"phone": phone}, format="json")
            assert response.status_code == 201, response.content
            send.append(took)
            code = sms.last_text.split(": ")[1].split(".")[0]
            body = {"code_id": response.json()["code_id"], "code": code}
            took, response = timed(client.post, "/api/v1/auth/otp/verify/", body, format="json")
            assert response.status_code == 200, response.content
            verify.append(took)
            tokens = response.json()
            took, response = timed(
                client.post, "/api/v1/auth/token/refresh/", {"refresh": tokens["refresh"]}, format="json"
            )
            assert response.status_code == 200, response.content
            refresh.append(took)
            auth = {"HTTP_AUTHORIZATION": f"Bearer {response.json()['access']}"}
            took, response = timed(client.get, "/api/v1/me/", **auth)
            assert response.status_code == 200
            me.append(took)
        cache_backend = settings.CACHES["default"]["BACKEND"].rsplit(".", 1)[1]
        print(f"{LOGINS} logins; database {connection.vendor}, cache {cache_backend}")
        report("POST /auth/otp/", send)
        report("POST /auth/otp/verify/", verify)
        report("POST /auth/token/refresh/", refresh)
        report("GET /me/", me)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
