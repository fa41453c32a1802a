"""The Redis cache backend (svoykrug/cache.py) keeps one redis-py client per connection pool,
and the rate limits count a request in one round trip on it (svoykrug/throttling.py)."""

import pytest
from django.core.cache import cache, caches

from svoykrug.cache import RedisCache
from svoykrug.throttling import _count

pytestmark = pytest.mark.redis


def test_the_production_cache_is_the_backend_that_keeps_its_clients():
    assert isinstance(caches["default"], RedisCache)


def test_one_client_serves_every_call_and_it_works():
    client = cache._cache.get_client("a", write=True)

    assert cache._cache.get_client("b") is client
    cache.set("answer", {"balance": "10.00"}, 30)
    assert cache.get("answer") == {"balance": "10.00"}
    assert cache._cache.get_client("c", write=True) is client


def test_a_window_counts_in_one_round_trip_and_expires_with_the_window(monkeypatch):
    client = cache._cache.get_client(write=True)
    round_trips = []
    real_pipeline = client.pipeline
    monkeypatch.setattr(client, "pipeline", lambda **kw: round_trips.append(kw) or real_pipeline(**kw))

    assert [_count(cache, "throttle:test:1", 30) for _ in range(3)] == [1, 2, 3]

    assert len(round_trips) == 3
    full_key = cache.make_and_validate_key("throttle:test:1")
    assert 0 < client.ttl(full_key) <= 30
    assert cache.get("throttle:test:1") == 3  # Django's cache reads the same counter
