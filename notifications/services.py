"""The Notification service. For now the SMS channel; push and email join it in their issue.

The catalogue's `send_sms(phone, message) -> bool` answers yes or no; callers that must
tell the person why an SMS failed (the login code) use `deliver_sms`, which raises.
"""

import logging

from accounts.phones import mask_phone
from notifications.channels.sms import SmsError, SmsReceipt, get_sms_backend

logger = logging.getLogger(__name__)


def deliver_sms(phone: str, message: str, *, purpose: str = "general") -> SmsReceipt:
    """Send one SMS now through the configured backend; raises SmsError and its kinds."""
    receipt = get_sms_backend().send(phone, message)
    logger.info("SMS %s to %s sent via %s", purpose, mask_phone(phone), receipt.provider)
    return receipt


def send_sms(phone: str, message: str) -> bool:
    """Send one SMS; True if the provider accepted it. Failures are logged, never raised."""
    try:
        deliver_sms(phone, message)
    except SmsError as exc:
        logger.warning("SMS to %s failed: %s", mask_phone(phone), exc)
        return False
    return True
