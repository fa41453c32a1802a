"""Delivery reports from providers. SMS.ru posts `data[]` lines and a hash; email delivery
reports arrive through anymail's tracking view (notifications/delivery.py), behind
`SendGridTrackingView` here, which answers a body it cannot read with 400."""

import hashlib
import hmac
import logging

from anymail.webhooks.sendgrid import SendGridTrackingWebhookView
from django.conf import settings
from django.http import HttpResponse, HttpResponseForbidden, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from notifications.models import NotificationLog
from svoykrug.exceptions import error_body
from svoykrug.throttling import SmsCallbackThrottle, throttle

logger = logging.getLogger(__name__)

DELIVERED = {103, 110}
UNDELIVERABLE = {104, 105, 106, 107, 108, 150}


def record_sms_status(*, sms_id: str, status_code: int) -> int:
    """Apply one SMS.ru status to the log rows of that SMS; a delivered row never goes back."""
    rows = NotificationLog.objects.filter(channel=NotificationLog.Channel.SMS, provider_message_id=sms_id).exclude(
        status=NotificationLog.Status.DELIVERED
    )
    if status_code in DELIVERED:
        return rows.update(status=NotificationLog.Status.DELIVERED, delivered_at=timezone.now())
    if status_code in UNDELIVERABLE:
        return rows.update(status=NotificationLog.Status.FAILED, reason=f"SMS.ru status {status_code}")
    return 0


@csrf_exempt
@require_POST
@throttle(SmsCallbackThrottle)
def smsru_callback(request):
    """SMS.ru's status callback: `data[N]` entries `sms_status\\n<id>\\n<code>\\n<unix time>`,
    authenticated by `hash = sha256(api_id + data[0] + data[1] + …)`. Answers `100`."""
    entries = [request.POST[key] for key in sorted(request.POST, key=_index) if key.startswith("data[")]
    expected = hashlib.sha256((settings.SMSRU_API_ID + "".join(entries)).encode()).hexdigest()
    if not settings.SMSRU_API_ID or not hmac.compare_digest(expected, request.POST.get("hash", "")):
        return HttpResponseForbidden("bad hash")
    for entry in entries:
        parts = entry.split("\n")
        if len(parts) >= 3 and parts[0] == "sms_status":
            try:
                record_sms_status(sms_id=parts[1], status_code=int(parts[2]))
            except ValueError:
                logger.warning("SMS.ru callback entry with a bad status: %r", entry[:100])
    return HttpResponse("100", content_type="text/plain")


def _index(key: str) -> int:
    try:
        return int(key[5:-1])
    except ValueError:
        return 10**9


class UnreadableEvents(Exception):
    """The ESP's body is not the events anymail can read."""


class SendGridTrackingView(SendGridTrackingWebhookView):
    """Anymail's SendGrid tracking webhook (`/anymail/sendgrid/tracking/`), with one change:
    a body anymail cannot parse (not UTF-8, not JSON, nested too deeply, a timestamp out of
    range) is answered 400 in the one error shape instead of a 500, which SendGrid would
    retry for days. Errors after parsing (the handlers in notifications/delivery.py) stay 500s."""

    def post(self, request, *args, **kwargs):
        try:
            return super().post(request, *args, **kwargs)
        except UnreadableEvents as exc:
            logger.warning("SendGrid tracking webhook rejected: %s", exc)
            return JsonResponse(error_body("bad_webhook", str(exc)), status=400)

    def parse_events(self, request):
        try:
            return super().parse_events(request)
        except RecursionError:
            raise UnreadableEvents("The body cannot be read: it is nested too deeply.") from None
        except (ValueError, TypeError, KeyError, AttributeError, ArithmeticError) as exc:
            # UnicodeDecodeError and JSONDecodeError are ValueErrors; a timestamp of 1e30 an OverflowError.
            raise UnreadableEvents(f"The body is not SendGrid events: {type(exc).__name__}.") from None
