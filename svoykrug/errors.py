"""One error shape for every door: {"error": {"code", "message", "fields"?}}.

Domain code raises subclasses of `svoykrug.exceptions.DomainError`; DRF's own exceptions
(validation, authentication, throttling, parsing) are mapped to the same shape here, and
the 400/404/500 handlers answer API paths in JSON too.
"""

import logging

from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpResponse, JsonResponse
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from svoykrug.exceptions import DomainError, error_body

logger = logging.getLogger(__name__)


def _flatten_fields(detail) -> dict:
    """DRF's nested ValidationError detail → {"field": ["message", ...]} with dotted paths."""
    fields: dict[str, list[str]] = {}

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, list):
            if all(not isinstance(item, dict | list) for item in node):
                fields.setdefault(path or "non_field_errors", []).extend(str(item) for item in node)
            else:
                for index, item in enumerate(node):
                    walk(item, f"{path}.{index}" if path else str(index))
        else:
            fields.setdefault(path or "non_field_errors", []).append(str(node))

    walk(detail, "")
    return fields


_DRF_CODES = {
    Http404: "not_found",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.ParseError: "malformed_request",
    exceptions.Throttled: "rate_limited",
}


def _nested_too_deeply(exc) -> bool:
    """A body of `[[[[…` thousands deep: Python's json gives up with a RecursionError, which
    DRF's parsers (they catch ValueError) let through. Only one raised inside a parser counts."""
    if not isinstance(exc, RecursionError):
        return False
    frame = exc.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code.co_filename.endswith(("rest_framework/parsers.py", "rest_framework\\parsers.py")):
            return True
        frame = frame.tb_next
    return False


def api_exception_handler(exc, context):
    """DRF's EXCEPTION_HANDLER: every error leaves in the one shape."""
    if isinstance(exc, DomainError):
        response = Response(exc.as_body(), status=exc.status_code)
        for header, value in exc.headers.items():
            response[header] = value
        return response
    if _nested_too_deeply(exc):
        exc = exceptions.ParseError(_("JSON parse error - the body is nested too deeply."))

    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # an unexpected exception: Django's 500 handler logs it and answers

    if isinstance(exc, exceptions.ValidationError):
        fields = _flatten_fields(exc.detail)
        non_field = fields.pop("non_field_errors", None)
        message = non_field[0] if non_field else _("Some fields are not valid.")
        response.data = error_body("invalid", message, fields=fields or None)
        return response

    code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), None)
    detail = getattr(exc, "detail", "")
    own_code = getattr(detail, "code", None)
    if own_code and own_code != getattr(exc, "default_code", None):
        code = own_code  # raised with a code of its own, e.g. AuthenticationFailed(code="invalid_api_key")
    code = code or "error"
    if isinstance(exc, exceptions.AuthenticationFailed | exceptions.NotAuthenticated) and isinstance(detail, dict):
        # simplejwt puts its message under "detail" and its own code under "code".
        code = str(detail.get("code") or code)
        detail = detail.get("detail", detail)
    extra = {}
    if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
        extra["retry_after"] = int(exc.wait)
    response.data = error_body(code, detail, extra=extra)
    return response


def _is_api_path(request) -> bool:
    return request.path.startswith("/api/")


def handler404(request, exception=None):
    if _is_api_path(request):
        return JsonResponse(error_body("not_found", _("Not found.")), status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception or Http404())


def handler500(request):
    if _is_api_path(request):
        return JsonResponse(error_body("server_error", _("Something went wrong on our side.")), status=500)
    from django.views.defaults import server_error

    return server_error(request)


def handler400(request, exception=None):
    if isinstance(exception, RequestDataTooBig):
        # A form body over DATA_UPLOAD_MAX_MEMORY_SIZE (Django raises it as a "suspicious" 400).
        message = _("The request body is too large.")
        if _is_api_path(request):
            return JsonResponse(error_body("too_large", message), status=413)
        return HttpResponse(message, status=413, content_type="text/plain; charset=utf-8")
    if _is_api_path(request):
        return JsonResponse(error_body("bad_request", _("Bad request.")), status=400)
    from django.views.defaults import bad_request

    return bad_request(request, exception)
