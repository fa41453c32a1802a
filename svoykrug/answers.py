"""Cached answers of the mobile app's busiest reads (balance, history, coupons, events).

The app asks for the same card again and again while nothing on it has changed, so each
customer's answer is kept in the cache (Redis in production), rendered, and served without
touching the database until something it shows changes.

What an answer depends on is named by *scopes*: `loyalty:<user id>` (the customer's bonuses
and ledger), `coupons:<user id>`, `events` (every event, registration and vote, as seats and
counts are shown to everyone), `tiers`. Each scope has a version in the cache, a random
token. The code that changes what a scope covers calls `changed(scope)`, which gives the
scope a new token at once and again when the transaction commits. An answer is stored with
the tokens its scopes had *before* it was computed, so an answer computed while a write was
in flight is never served after that write: its tokens are already stale.

An answer that changes with time alone (bonuses coming off hold, a coupon lapsing, an
event's registration closing) is stored with the moment it stops being right and is not
served after it. Names and descriptions shown beside the money (a partner's name, a chain's
wording) are not scopes: an answer lives at most ANSWER_CACHE_SECONDS, which bounds how long
they can lag.

A cache that is down or slow costs one request the cache's timeout: the process then leaves
the cache alone for CACHE_RETRY_SECONDS, computing every answer from the database and keeping
the scopes it could not renew, which it renews before it serves from the cache again (past
MAX_UNRENEWED of them, the scope every answer has, retiring them all).
ANSWER_CACHE_SECONDS=0 turns caching off (the default without Redis: a cache local to each
process could not be renewed by the others).
"""

import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.http import HttpResponse
from django.utils import timezone, translation
from rest_framework.renderers import JSONRenderer

logger = logging.getLogger(__name__)

# How much longer a scope's version outlives the answers stored under it.
VERSION_MARGIN_SECONDS = 3600
# After the cache failed, how long this process leaves it alone.
CACHE_RETRY_SECONDS = 5
# Scopes kept for renewal past this many are replaced by EVERYTHING.
MAX_UNRENEWED = 10_000
# A scope of every answer: renewing it retires them all.
EVERYTHING = "everything"


def _version_key(scope: str) -> str:
    return f"answer-version:{scope}"


def _version_timeout() -> int:
    return settings.ANSWER_CACHE_SECONDS + VERSION_MARGIN_SECONDS


def enabled() -> bool:
    return bool(settings.ANSWER_CACHE_SECONDS)


def changed(*scopes: str) -> None:
    """What these scopes cover changed (or is about to, in the current transaction): no
    answer computed before this call is served again. Renewed even where the cache is
    turned off, so that processes that keep answers never serve one from before it.
    Outside a transaction the renewal is immediate: call it after the write."""
    if not scopes:
        return
    _renew(scopes)
    # Again after the commit: a reader that computed between the first renewal and the
    # commit read the rows as they were before the write. One renewal for all the scopes a
    # transaction changed (a purchase changes the card and the coupons): each call adds its
    # scopes to the thread's pending set and registers a hook, and the first hook that runs
    # renews the whole set. A hook dropped with a rolled-back savepoint loses nothing, as a
    # later one (or the next transaction's) renews its scopes too; renewing a scope that did
    # not change after all costs only a recomputed answer.
    _pending.scopes.update(scopes)
    transaction.on_commit(_renew_pending)


class _Pending(threading.local):
    def __init__(self):
        self.scopes: set[str] = set()


_pending = _Pending()


def _renew_pending() -> None:
    scopes, _pending.scopes = _pending.scopes, set()
    if scopes:
        _renew(scopes)


def customers_changed(kind: str, user_ids: Iterable) -> None:
    """`changed` for one kind of scope of many customers at once (bulk writes)."""
    changed(*(f"{kind}:{user_id}" for user_id in user_ids))


def track(model, scopes_of: Callable[[object], Iterable[str]]) -> None:
    """Renew `scopes_of(instance)` whenever a row of `model` is saved or deleted, wherever
    from (the services, the admin). Queryset `update()`s send no signal: the services that
    use them call `changed` themselves."""

    def renew(sender, instance, **kwargs):
        changed(*scopes_of(instance))

    post_save.connect(renew, sender=model, weak=False, dispatch_uid=f"answers:{model._meta.label}:save")
    post_delete.connect(renew, sender=model, weak=False, dispatch_uid=f"answers:{model._meta.label}:delete")


# Scopes this process could not renew (the cache refused the write or was left alone):
# renewed before this process next serves from the cache, so an answer from before the write
# is not served once the cache answers again. Another process may serve one until then.
_unrenewed: set[str] = set()
_lock = threading.Lock()
_left_alone_until = 0.0  # on _clock
_clock = time.monotonic


def _cache_failed(what: str) -> None:
    """Leave the cache alone for a while; say so once per outage, not once per request."""
    global _left_alone_until
    now = _clock()
    first = now >= _left_alone_until
    _left_alone_until = now + CACHE_RETRY_SECONDS
    if first:
        logger.warning("%s; leaving the cache alone for %d s", what, CACHE_RETRY_SECONDS, exc_info=True)


def _cache_usable() -> bool:
    return _clock() >= _left_alone_until


def forget_failures() -> None:
    """Start afresh (tests): no scope waiting for renewal, the cache not left alone."""
    global _left_alone_until
    with _lock:
        _unrenewed.clear()
        _left_alone_until = 0.0


def _renew(scopes: Iterable[str]) -> None:
    with _lock:
        scopes = {*scopes, *_unrenewed}
        _unrenewed.clear()
    if not scopes:
        return
    if _cache_usable():
        try:
            cache.set_many({_version_key(scope): secrets.token_hex(8) for scope in scopes}, _version_timeout())
            return
        except Exception:
            _cache_failed(f"Could not renew cached answers of {len(scopes)} scope(s)")
    with _lock:
        _unrenewed.update(scopes)
        if len(_unrenewed) > MAX_UNRENEWED:
            _unrenewed.clear()
            _unrenewed.add(EVERYTHING)


def _answer_key(name: str, request, *, per_customer: bool = True) -> str:
    # In the key: the language (answers carry translated labels), the page size, and the host
    # (pages link to each other by absolute URL).
    query = hashlib.blake2b(request.get_full_path().encode(), digest_size=12).hexdigest()
    whose = f"{request.user.pk}:" if per_customer else ""
    return f"answer:{name}:{whose}{request.get_host()}:{translation.get_language()}:{settings.API_PAGE_SIZE}:{query}"


Compute = Callable[[], tuple[object, datetime | Callable[[], datetime | None] | None]]


def cached_answer(request, *, name: str, scopes: list[str], compute: Compute):
    """The customer's answer to this request from the cache, or `compute()`d and stored.

    `compute` returns (response, valid_until): the view's own Response, and the moment it
    stops being right by time alone (None: only a change to its scopes makes it wrong), or
    a function giving that moment, called only when the answer is stored. Only 200 answers
    are stored, rendered as JSON; an answer in any other form (the browsable API) is never
    cached."""
    if getattr(request, "accepted_media_type", "application/json") != "application/json":
        return compute()[0]
    hit, response = _cached(
        _answer_key(name, request),
        scopes,
        compute,
        keep=lambda response: JSONRenderer().render(response.data) if response.status_code == 200 else None,
    )
    if hit:
        response = HttpResponse(response, content_type="application/json")
    # Tells the app's developers and the load test which answers came from the cache.
    response["X-Cache"] = "hit" if hit else "miss"
    return response


def cached_data(request, *, name: str, scopes: list[str], compute: Compute):
    """Data the same for every customer asking this request (a view adds each one's own
    part), from the cache or `compute()`d and stored; `compute` as for `cached_answer`,
    returning the data instead of a response."""
    return _cached(_answer_key(name, request, per_customer=False), scopes, compute, keep=lambda data: data)[1]


def cached_value(key: str, *, scopes: list[str], compute: Compute):
    """Any value kept under `key` until its scopes change; `compute` as for `cached_answer`,
    returning the value. The value must not be None."""
    return _cached(f"value:{key}", scopes, compute, keep=lambda value: value)[1]


def _cached(key: str, scopes: list[str], compute: Compute, *, keep: Callable) -> tuple[bool, object]:
    """(True, what was kept) from the cache, or (False, what compute() gave), storing
    keep(it) unless that is None."""
    if not settings.ANSWER_CACHE_SECONDS or not _cache_usable():
        return False, compute()[0]
    scopes = [*scopes, EVERYTHING]
    if _unrenewed:
        _renew(())
        if _unrenewed.intersection(scopes):  # not renewed yet: the cache's answers may be stale
            return False, compute()[0]
    version_keys = [_version_key(scope) for scope in scopes]
    try:
        found = cache.get_many([*version_keys, key])
        versions = [found.get(version_key) for version_key in version_keys]
        stored = found.get(key)
        now = timezone.now()
        if None not in versions and stored is not None:
            stored_versions, valid_until, kept = stored
            if stored_versions == versions and (valid_until is None or now < valid_until):
                return True, kept
        versions = _current_versions(version_keys, versions)
    except Exception:
        _cache_failed("Cached answers unavailable")
        return False, compute()[0]
    result, valid_until = compute()
    kept = keep(result)
    if kept is not None:
        if callable(valid_until):
            valid_until = valid_until()
        timeout = settings.ANSWER_CACHE_SECONDS
        if valid_until is not None:
            timeout = min(timeout, max(1, int((valid_until - now).total_seconds()) + 1))
        try:
            cache.set(key, (versions, valid_until, kept), timeout)
        except Exception:
            _cache_failed("Could not store a cached answer")
    return False, result


def _current_versions(version_keys: list[str], versions: list) -> list:
    """The versions as they are now, giving a scope that has none its first one."""
    missing = {
        key: secrets.token_hex(8) for key, version in zip(version_keys, versions, strict=True) if version is None
    }
    if not missing:
        return versions
    for key, token in missing.items():
        cache.add(key, token, _version_timeout())
    # Another reader or a writer may have set some first: theirs is the version.
    current = cache.get_many(version_keys)
    return [current.get(key) for key in version_keys]
