"""Rate limits on the public doors, as DRF throttles counted in the cache (Redis in production).

Each scope's rate is `REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"][scope]`, set from a THROTTLE_*
variable (settings.py); `None` ("off") lets everything through. A refused request answers 429
in the API's error shape with `Retry-After`, before the view has done anything.

The count is a fixed window aligned on the clock (a minute, an hour…), one atomic `incr` per
request, so parallel workers cannot overshoot and a busy key costs one small integer in the
cache (DRF's stock throttles keep and rewrite a list of every request's time). A window lets
at most twice the rate through across its boundary, which is fine for a flood guard.

DRF views declare `throttle_classes = [...]`; plain Django views (the webhooks) use the
`throttle(...)` decorator, which answers in the same shape.
"""

import logging
import math
from functools import wraps
from types import SimpleNamespace

from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.core.cache import cache as default_cache
from django.core.cache.backends.redis import RedisCache
from django.core.exceptions import ImproperlyConfigured
from django.http import JsonResponse
from rest_framework.exceptions import Throttled
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from svoykrug.exceptions import error_body

logger = logging.getLogger(__name__)


class WindowRateThrottle(SimpleRateThrottle):
    """At most N requests per period for one key; subclasses say what the key is."""

    cache_format = "throttle:%(scope)s:%(ident)s"

    def get_rate(self):
        # Read at each request (DRF's own reads a class attribute once), so a settings override works.
        try:
            return api_settings.DEFAULT_THROTTLE_RATES[self.scope]
        except KeyError:
            raise ImproperlyConfigured(f"No throttle rate set for the {self.scope!r} scope.") from None

    def get_ident(self, request):
        """The client's address, with TRUSTED_PROXY_COUNT proxies taken into account (as the OTP limits)."""
        from accounts.services import client_ip

        return client_ip(request)

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        now = self.timer()
        window = int(now // self.duration)
        self.remaining = (window + 1) * self.duration - now
        key = f"{key}:{window}"
        timeout = math.ceil(self.remaining) + 1
        try:
            count = _count(self.cache, key, timeout)
        except Exception:
            # The cache is down: let the request through rather than refuse everyone.
            logger.warning("Rate limit %s not checked: the cache does not answer", self.scope, exc_info=True)
            return True
        return count <= self.num_requests

    def wait(self):
        return max(1, math.ceil(self.remaining))


def _count(cache, key: str, timeout: int) -> int:
    """Add one to the window's counter and return it. On Redis, one round trip (SET NX with
    the expiry, then INCR, pipelined); elsewhere the cache API's add and incr."""
    if cache is default_cache:  # the proxy DRF's throttles hold: the backend behind it
        cache = caches[DEFAULT_CACHE_ALIAS]
    if isinstance(cache, RedisCache):
        full_key = cache.make_and_validate_key(key)
        pipe = cache._cache.get_client(full_key, write=True).pipeline(transaction=False)
        pipe.set(full_key, 0, ex=timeout, nx=True)
        pipe.incr(full_key)
        return pipe.execute()[1]
    cache.add(key, 0, timeout)
    try:
        return cache.incr(key)
    except ValueError:  # expired between add and incr: a new window
        cache.add(key, 0, timeout)
        return cache.incr(key)


class ClientIpThrottle(WindowRateThrottle):
    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class OtpRequestThrottle(ClientIpThrottle):
    """POST /auth/otp/ per client address (the OTP service adds its own per-phone and per-address limits)."""

    scope = "otp"


class OtpVerifyThrottle(ClientIpThrottle):
    """POST /auth/otp/verify/ per client address."""

    scope = "otp_verify"


class SmsCallbackThrottle(ClientIpThrottle):
    """SMS.ru's delivery callback per sending address."""

    scope = "sms_callback"


class PartnerApiKeyThrottle(WindowRateThrottle):
    """The partner API per API key (authentication runs first, so request.auth is the key)."""

    scope = "partner"

    def get_cache_key(self, request, view):
        key_id = getattr(request.auth, "pk", None)
        if key_id is None:
            return None
        return self.cache_format % {"scope": self.scope, "ident": key_id}


class WebhookThrottle(WindowRateThrottle):
    """A CRM's webhook per integration (the id in its URL). Webhooks refused here are not lost
    for good: the scheduled sync reads the CRM's changes again."""

    scope = "webhook"

    def get_cache_key(self, request, view):
        integration_id = view.kwargs.get("integration_id")
        if integration_id is None:
            return None
        return self.cache_format % {"scope": self.scope, "ident": integration_id}


def throttled_response(wait: int) -> JsonResponse:
    """The 429 of a plain Django view, the same as DRF's through svoykrug.errors."""
    exc = Throttled(wait=wait)
    response = JsonResponse(
        error_body("rate_limited", exc.detail, extra={"retry_after": int(exc.wait)}), status=exc.status_code
    )
    response["Retry-After"] = str(int(exc.wait))
    return response


def throttle(*throttle_classes):
    """`@throttle(WebhookThrottle)` on a plain Django view: the throttles run before the view
    (with its URL kwargs as `view.kwargs`); a refusal answers 429 with Retry-After."""

    def decorator(view_func):
        @wraps(view_func)
        def wrapped(request, *args, **kwargs):
            view = SimpleNamespace(args=args, kwargs=kwargs)
            throttles = [cls() for cls in throttle_classes]
            waits = [t.wait() for t in throttles if not t.allow_request(request, view)]
            if waits:
                return throttled_response(max(waits))
            return view_func(request, *args, **kwargs)

        return wrapped

    return decorator
