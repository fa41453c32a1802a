"""Phone numbers: the customer's identity. Parsed and normalised to E.164 with phonenumbers."""

import phonenumbers
from django.conf import settings
from django.utils.translation import gettext_lazy as _

from svoykrug.exceptions import DomainError


class InvalidPhone(DomainError):
    code = "invalid_phone"
    message = _("This is not a valid phone number.")


class PhoneCountryNotAllowed(DomainError):
    code = "phone_country_not_supported"
    message = _("Phone numbers of this country are not supported yet.")


def normalize_phone(raw: str) -> str:
    """Parse a phone written any usual way (`8 912 345-67-89`, `+7 (912) 345 67 89`) into E.164.

    A number without a country code is read in PHONE_DEFAULT_REGION. Raises InvalidPhone."""
    if not isinstance(raw, str) or not raw.strip() or len(raw) > 64:
        raise InvalidPhone()
    try:
        parsed = phonenumbers.parse(raw, settings.PHONE_DEFAULT_REGION)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhone() from exc
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidPhone()
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def phone_region(phone_e164: str) -> str | None:
    """The ISO region of a normalised phone number (`RU`, `KZ`, …)."""
    return phonenumbers.region_code_for_number(phonenumbers.parse(phone_e164, None))


def mask_phone(phone: str | None) -> str:
    """`+79123456789` → `+7912***6789`: enough to recognise in a log line, not to reuse."""
    if not phone:
        return "-"
    return f"{phone[:5]}***{phone[-4:]}" if len(phone) > 9 else "***"
