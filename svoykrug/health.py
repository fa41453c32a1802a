"""Liveness and readiness probes for the load balancer and the orchestrator."""

import logging

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache

logger = logging.getLogger(__name__)


@never_cache
def healthz(request):
    """The process is up and answering."""
    return JsonResponse({"status": "ok"})


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


def check_cache() -> None:
    cache.set("readyz:probe", "1", 10)
    if cache.get("readyz:probe") != "1":
        raise RuntimeError("the cache did not keep a value")


def check_redis() -> None:
    import redis

    client = redis.Redis.from_url(
        settings.REDIS_URL,
        socket_connect_timeout=settings.HEALTHCHECK_TIMEOUT_SECONDS,
        socket_timeout=settings.HEALTHCHECK_TIMEOUT_SECONDS,
    )
    try:
        client.ping()
    finally:
        client.close()


def check_clickhouse() -> None:
    from clickhouse_driver import Client

    client = Client.from_url(settings.CLICKHOUSE_URL)
    client.connection.connect_timeout = settings.HEALTHCHECK_TIMEOUT_SECONDS
    client.connection.send_receive_timeout = settings.HEALTHCHECK_TIMEOUT_SECONDS
    try:
        client.execute("SELECT 1")
    finally:
        client.disconnect()


def _warehouse_lag() -> int | None:
    """Seconds the warehouse's purchases are behind (None before the first export): shown,
    not failed on, since a lagging warehouse should not take the web out of rotation."""
    try:
        from analytics.export import export_lag_seconds

        lag = export_lag_seconds()
    except Exception:  # the database check above reports a database that is down
        return None
    return None if lag is None else int(lag)


def readiness_checks() -> dict:
    """The parts this process needs, by name; Redis and ClickHouse only where configured."""
    checks = {"database": check_database, "cache": check_cache}
    if settings.REDIS_URL:
        checks["redis"] = check_redis
    if settings.CLICKHOUSE_URL:
        checks["clickhouse"] = check_clickhouse
    return checks


@never_cache
def readyz(request):
    """200 when every configured dependency answers; 503 naming the ones that do not."""
    results = {}
    for name, check in readiness_checks().items():
        try:
            check()
        except Exception as exc:  # a probe reports any failure rather than raising it
            logger.warning("readiness check %s failed: %s", name, exc.__class__.__name__)
            results[name] = f"error: {exc.__class__.__name__}"
        else:
            results[name] = "ok"
    failing = sorted(name for name, result in results.items() if result != "ok")
    body = {"status": "fail" if failing else "ok", "checks": results}
    body["warehouse_lag_seconds"] = _warehouse_lag()
    if failing:
        body["failing"] = failing
    return JsonResponse(body, status=503 if failing else 200)
