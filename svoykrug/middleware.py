"""Request middleware: the request id and access log, and the API's body size limit."""

import logging
import re
import time
import uuid

from django.conf import settings
from django.http import JsonResponse
from django.utils.functional import SimpleLazyObject, empty
from django.utils.translation import gettext as _

from svoykrug import logs
from svoykrug.exceptions import error_body

access_logger = logging.getLogger("svoykrug.access")

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Probes answer often and say nothing: their successes are not logged.
_QUIET_PATHS = {"/healthz", "/readyz"}


def incoming_request_id(value: str | None) -> str | None:
    """The caller's X-Request-ID when it is a sane one (≤ 64 of A-Z a-z 0-9 . _ -)."""
    if value and _SANE_REQUEST_ID.fullmatch(value):
        return value
    return None


class RequestContextMiddleware:
    """First in MIDDLEWARE. Takes the caller's X-Request-ID or makes one, keeps it for the logs
    of this request and returns it; logs queries slower than SLOW_QUERY_MS; writes one access
    line per request (not for the probes' successes)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = incoming_request_id(request.headers.get(REQUEST_ID_HEADER)) or uuid.uuid4().hex
        request.request_id = request_id
        token = logs.bind(request_id=request_id)
        started = time.monotonic()
        response = None
        watched = logs.watch_queries()
        try:
            response = self.get_response(request)
            response[REQUEST_ID_HEADER] = request_id
            return response
        finally:
            logs.unwatch_queries(watched)
            try:
                self.log_access(request, response, (time.monotonic() - started) * 1000)
            finally:
                logs.unbind(token)

    def log_access(self, request, response, took_ms: float) -> None:
        status = response.status_code if response is not None else 500
        if request.path in _QUIET_PATHS and status < 400:
            return
        path = logs.mask_path(request.path)  # the path only: query strings may hold phones
        fields = {
            "method": request.method,
            "path": path,
            "status": status,
            "duration_ms": round(took_ms, 1),
        }
        user_id = _user_id(request)
        if user_id:
            fields["user_id"] = user_id
        key_prefix = getattr(getattr(request, "auth", None), "prefix", None)
        if isinstance(key_prefix, str):
            fields["api_key"] = key_prefix
        access_logger.info("%s %s %s %dms", request.method, path, status, took_ms, extra=fields)


def _user_id(request) -> str | None:
    """The logged-in user's id, without loading a session nobody looked at."""
    user = getattr(request, "user", None)
    if user is None:
        return None
    if isinstance(user, SimpleLazyObject) and user._wrapped is empty:
        known = user.__dict__.get("pk")  # accounts.authentication.KnownUser: the id without the row
        return str(known) if known is not None else None
    if getattr(user, "is_authenticated", False):
        return str(user.pk)
    return None


class BodySizeLimitMiddleware:
    """A body over DATA_UPLOAD_MAX_MEMORY_SIZE sent to the API answers 413 in the error shape.

    DRF's JSON parser reads the stream itself, which Django's own limit does not watch; this
    refuses by Content-Length before the view reads anything. (Without Content-Length Django
    reads no body at all.) The CRM webhook keeps its own limit, INTEGRATIONS_WEBHOOK_MAX_BYTES."""

    own_limit_views = {"integrations:webhook"}

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is None or not request.path.startswith("/api/"):
            return None
        if request.resolver_match is not None and request.resolver_match.view_name in self.own_limit_views:
            return None
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return None
        if length > limit:
            body = error_body(
                "too_large",
                _("The request body is too large (at most %(limit)d bytes).") % {"limit": limit},
                extra={"max_bytes": limit},
            )
            return JsonResponse(body, status=413)
        return None
