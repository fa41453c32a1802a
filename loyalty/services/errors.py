"""Refusals of the Loyalty service, each with its code and HTTP status."""

from django.utils.translation import gettext_lazy as _
from rest_framework import status

from svoykrug.exceptions import DomainError


class InsufficientBonuses(DomainError):
    code = "insufficient_bonuses"
    status_code = status.HTTP_409_CONFLICT
    message = _("Not enough bonuses to spend.")


class RedemptionOverLimit(DomainError):
    code = "redemption_over_limit"
    status_code = status.HTTP_409_CONFLICT
    message = _("This check cannot be paid with that many bonuses.")


class IdempotencyConflict(DomainError):
    code = "idempotency_conflict"
    status_code = status.HTTP_409_CONFLICT
    message = _("This id was already used for a request with different data.")


class InvalidPurchase(DomainError):
    code = "invalid_purchase"
    message = _("The purchase is not valid.")


class TransactionNotFound(DomainError):
    code = "transaction_not_found"
    status_code = status.HTTP_404_NOT_FOUND
    message = _("No purchase with this id at this business.")


class RefundNotPossible(DomainError):
    code = "refund_not_possible"
    status_code = status.HTTP_409_CONFLICT
    message = _("This refund is larger than what is left of the purchase.")


class RefundIdRequired(DomainError):
    code = "refund_id_required"
    message = _("A partial refund needs a refund_id, so that a retry cannot refund twice.")
