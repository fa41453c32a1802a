"""Helpers the loyalty pages share: keys for forms sent twice, phones as typed, domain errors as form errors."""

import re
import uuid
from datetime import date, datetime, time

from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from accounts.phones import InvalidPhone, normalize_phone
from accounts.portal import money
from loyalty.models import LedgerEntry
from svoykrug.exceptions import DomainError

MONEY_FIELD = {"max_digits": 12, "decimal_places": 2}
ISSUING_KINDS = [LedgerEntry.Kind.ACCRUAL, LedgerEntry.Kind.WELCOME, LedgerEntry.Kind.BIRTHDAY]


def new_key() -> str:
    return uuid.uuid4().hex


def local_midnight(day: date) -> datetime:
    """The start of `day` in the active time zone (the business's, under `portal_view`)."""
    return datetime.combine(day, time.min, tzinfo=timezone.get_current_timezone())


def add_domain_error(form: forms.Form, exc: DomainError, field: str | None = None) -> None:
    """Put a domain error on the form: on the fields it names, else on `field`, with the
    figures it carries (what is available, what is left to refund) spelled out."""
    message = str(exc.message)
    extra = exc.extra or {}
    if "available" in extra:
        message += " " + gettext("Available: %(amount)s.") % {"amount": money(extra["available"])}
    if "max_redeemable" in extra:
        message += " " + gettext("At most %(amount)s can be paid with bonuses.") % {
            "amount": money(extra["max_redeemable"])
        }
    if "refundable" in extra:
        message += " " + gettext("Left to refund: %(amount)s.") % {"amount": money(extra["refundable"])}
    named = [name for name in (exc.fields or {}) if name in form.fields]
    if named:
        for name in named:
            form.add_error(name, message)
    else:
        form.add_error(field if field in form.fields else None, message)


class PhoneSearchField(forms.CharField):
    """A whole phone (normalised to E.164) or a part of one (its digits)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        kwargs.setdefault("max_length", 32)
        kwargs.setdefault("label", _("Phone"))
        super().__init__(**kwargs)

    def clean(self, value):
        value = super().clean(value)
        if not value:
            return ""
        try:
            return normalize_phone(value)
        except InvalidPhone:
            digits = re.sub(r"\D", "", value)
            if not digits:
                raise ValidationError(_("Enter a phone number or a part of it.")) from None
            return digits


class PhoneField(forms.CharField):
    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 32)
        kwargs.setdefault("label", _("Customer's phone"))
        kwargs.setdefault(
            "widget", forms.TextInput(attrs={"inputmode": "tel", "autocomplete": "off", "placeholder": "+7"})
        )
        super().__init__(**kwargs)

    def clean(self, value):
        value = super().clean(value)
        try:
            return normalize_phone(value)
        except InvalidPhone as exc:
            raise ValidationError(exc.message) from exc
