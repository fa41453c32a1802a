"""The domain's exceptions and the API's one error shape, free of DRF so models may import it."""

from django.utils.translation import gettext_lazy as _
from rest_framework import status


class DomainError(Exception):
    """A refusal the caller can act on. Subclasses set code, status and message."""

    code = "error"
    status_code = status.HTTP_400_BAD_REQUEST
    message = _("The request could not be completed.")

    def __init__(self, message=None, *, fields: dict | None = None, extra: dict | None = None, headers=None):
        super().__init__(str(message or self.message))
        self.message = message or self.message
        self.fields = fields
        self.extra = extra or {}
        self.headers = headers or {}

    def as_body(self) -> dict:
        return error_body(self.code, self.message, fields=self.fields, extra=self.extra)


def error_body(code: str, message, *, fields: dict | None = None, extra: dict | None = None) -> dict:
    error = {"code": code, "message": str(message)}
    if fields:
        error["fields"] = fields
    if extra:
        error.update(extra)
    return {"error": error}
