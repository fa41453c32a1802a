"""The CRM webhook endpoint: `POST /api/v1/integrations/<id>/webhook/<secret>/`.

It answers fast: the body is stored as it came and processed in a task. 404 for an unknown
integration, a wrong secret or a request without the provider's own credential (nothing
is stored); 400 for a body it cannot read (stored for staff to see), a body whose numbers
no money can hold (1e30) or nested too deeply to parse among them; 413 for a body over
INTEGRATIONS_WEBHOOK_MAX_BYTES; 503 (retry later) when storing fails; never a 500."""

import logging

from django.conf import settings
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from integrations import services
from svoykrug.exceptions import error_body
from svoykrug.throttling import WebhookThrottle, throttle

logger = logging.getLogger(__name__)


@csrf_exempt
@require_POST
@throttle(WebhookThrottle)
def crm_webhook(request, integration_id, secret):
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > settings.INTEGRATIONS_WEBHOOK_MAX_BYTES:
        return JsonResponse(error_body("too_large", "The webhook body is too large."), status=413)
    try:
        body = request.read(settings.INTEGRATIONS_WEBHOOK_MAX_BYTES + 1)
        if len(body) > settings.INTEGRATIONS_WEBHOOK_MAX_BYTES:
            return JsonResponse(error_body("too_large", "The webhook body is too large."), status=413)
        delivery = services.receive_webhook(
            integration_id,
            secret,
            body=body,
            content_type=request.content_type or request.META.get("CONTENT_TYPE", ""),
            headers=request.headers,
        )
    except services.WebhookNotFound:
        return JsonResponse(error_body("not_found", "Not found."), status=404)
    except (ArithmeticError, RecursionError) as exc:
        # The provider's parser gave up on a body that passed the checks: unreadable like any
        # other, and no reason for the CRM to send it again and again as a 503 would ask.
        return _unreadable(integration_id, body, request, exc)
    except Exception:
        logger.exception("Webhook for integration %s could not be stored", integration_id)
        return JsonResponse(error_body("unavailable", "Temporarily unavailable, please retry."), status=503)
    if delivery.status == delivery.Status.REJECTED:
        return JsonResponse(
            error_body("bad_webhook", delivery.error, extra={"delivery_id": delivery.pk}),
            status=400,
        )
    return JsonResponse({"status": "accepted", "delivery_id": delivery.pk})


def _unreadable(integration_id, body: bytes, request, exc: Exception) -> JsonResponse:
    """Keep the body as a rejected delivery, as `services.receive_webhook` keeps the bodies
    its parsers refuse, and answer 400 with the reason."""
    from integrations.models import CRMIntegration, WebhookDelivery

    if isinstance(exc, RecursionError):
        reason = "The body cannot be read: it is nested too deeply."
    else:
        reason = "The body cannot be read: a number in it is out of range for an amount."
    try:
        delivery = WebhookDelivery.objects.create(
            integration=CRMIntegration.objects.get(pk=integration_id),
            content_type=(request.content_type or "")[:200],
            body=body.decode("utf-8", errors="replace").replace("\x00", "\ufffd"),
            status=WebhookDelivery.Status.REJECTED,
            error=reason,
            processed_at=timezone.now(),
        )
    except Exception:
        logger.exception("Webhook for integration %s could not be stored", integration_id)
        return JsonResponse(error_body("unavailable", "Temporarily unavailable, please retry."), status=503)
    logger.warning("Webhook for integration %s rejected: %s (%s)", integration_id, reason, type(exc).__name__)
    return JsonResponse(error_body("bad_webhook", reason, extra={"delivery_id": delivery.pk}), status=400)
