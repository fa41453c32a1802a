"""Shared fixtures. Service markers: `postgres` and `redis` tests skip where the service is
absent, and fail instead under REQUIRE_SERVICES=1 (CI)."""

import os
import re
from dataclasses import dataclass, field

import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import connection

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"


def _missing(reason: str):
    if REQUIRE_SERVICES:
        pytest.fail(f"REQUIRE_SERVICES=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def redis_reachable() -> bool:
    if not settings.REDIS_URL:
        return False
    import redis

    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError:
        return False
    return True


@pytest.fixture(autouse=True)
def _service_markers(request):
    if request.node.get_closest_marker("postgres") and connection.vendor != "postgresql":
        _missing("this test needs PostgreSQL: set DATABASE_URL=postgres://…")
    if request.node.get_closest_marker("redis") and not redis_reachable():
        _missing("this test needs Redis: set REDIS_URL=redis://… to a running server")


@pytest.fixture(autouse=True)
def _clean_cache(settings):
    from svoykrug import answers

    # Cached answers on, as with Redis in production (without REDIS_URL they default to off).
    settings.ANSWER_CACHE_SECONDS = 300
    answers.forget_failures()
    cache.clear()
    yield
    cache.clear()
    answers.forget_failures()


@pytest.fixture
def api_client():
    from rest_framework.test import APIClient

    return APIClient()


@pytest.fixture
def locmem_cache(settings):
    """A process-local cache for tests that travel in time: Redis expires keys by its own
    clock, which time_machine cannot move."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "time"}}
    cache.clear()
    return cache


@pytest.fixture
def tiers(db):
    """The circle's four tiers as the migration seeds them (a transactional test's flush
    empties the table, so tests that count on tiers ask for this)."""
    import importlib

    from django.apps import apps

    from loyalty.models import StatusTier

    seeding = importlib.import_module("loyalty.migrations.0002_seed_tiers_and_guard_ledger")
    seeding.seed_tiers(apps, None)
    return {tier.name: tier for tier in StatusTier.objects.all()}


@pytest.fixture(autouse=True)
def _celery_eager(request):
    """Tasks run in the test's own process, whatever broker REDIS_URL names; a test marked
    `celery_worker` talks to a real worker instead."""
    from svoykrug.celery import app

    eager = not request.node.get_closest_marker("celery_worker")
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = eager
    yield
    app.conf.task_always_eager = previous


@dataclass
class RecordingSmsBackend:
    """Stands in for the SMS provider: keeps what would have been sent, or fails on demand."""

    sent: list[tuple[str, str]] = field(default_factory=list)
    fail_with: Exception | None = None
    name: str = "recording"

    def send(self, phone: str, text: str):
        from notifications.channels.sms import SmsReceipt

        if self.fail_with is not None:
            raise self.fail_with
        self.sent.append((phone, text))
        return SmsReceipt(provider=self.name, message_id=f"sms-{len(self.sent)}")

    def last_code(self) -> str:
        return re.search(r"\d{4,}", self.sent[-1][1]).group(0)


@pytest.fixture
def sms(monkeypatch):
    """SMS are recorded, not sent: `sms.sent`, `sms.last_code()`, `sms.fail_with = SmsError(...)`."""
    backend = RecordingSmsBackend()
    monkeypatch.setattr("notifications.services.get_sms_backend", lambda: backend)
    return backend


@pytest.fixture(autouse=True)
def _forget_the_warehouse(settings, tmp_path_factory):
    """Tests use chDB in a folder of the test run unless they ask for the server (the
    `warehouse` fixture of tests/analytics runs them on both), so a CLICKHOUSE_URL in the
    environment is never written to by a test that did not choose it; and a test that
    touched the warehouse leaves no open session for the next one."""
    from analytics.warehouse import reset_warehouse

    settings.CLICKHOUSE_URL = ""
    settings.CHDB_PATH = str(tmp_path_factory.getbasetemp() / "chdb")
    yield
    reset_warehouse()
