"""/healthz says the process is up; /readyz checks each configured dependency."""

import socket

import pytest

from svoykrug import health


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_healthz(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_checks_database_and_cache(client, settings):
    settings.REDIS_URL = ""
    settings.CLICKHOUSE_URL = ""

    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "cache": "ok"},
        "warehouse_lag_seconds": None,  # nothing exported yet
    }


@pytest.mark.django_db
def test_readyz_shows_how_far_behind_the_warehouse_is(client, settings):
    from datetime import timedelta

    import time_machine
    from django.utils import timezone

    from analytics.models import ExportState

    settings.REDIS_URL = ""
    settings.CLICKHOUSE_URL = ""
    moment = timezone.now()
    ExportState.objects.create(name="purchases", watermark=moment - timedelta(seconds=90))
    with time_machine.travel(moment, tick=False):
        response = client.get("/readyz")
    assert (response.status_code, response.json()["warehouse_lag_seconds"]) == (200, 90)


@pytest.mark.django_db
def test_readyz_names_a_failing_database(client, monkeypatch, settings):
    settings.REDIS_URL = ""
    settings.CLICKHOUSE_URL = ""

    def broken():
        raise ConnectionError("database is down")

    monkeypatch.setattr(health, "check_database", broken)

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["failing"] == ["database"]
    assert response.json()["checks"]["database"] == "error: ConnectionError"
    assert response.json()["checks"]["cache"] == "ok"


@pytest.mark.django_db
def test_readyz_checks_redis_and_clickhouse_when_configured(client, settings):
    port = closed_port()
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
    settings.CLICKHOUSE_URL = f"clickhouse://default@127.0.0.1:{port}/default"
    settings.HEALTHCHECK_TIMEOUT_SECONDS = 1

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["failing"] == ["clickhouse", "redis"]
    assert response.json()["checks"]["database"] == "ok"


@pytest.mark.redis
@pytest.mark.django_db
def test_readyz_passes_with_a_live_redis(client, settings):
    settings.CLICKHOUSE_URL = ""

    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json()["checks"]["redis"] == "ok"
