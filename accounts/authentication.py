"""JWT authentication that also honours logout-everywhere for access tokens."""

from datetime import UTC, datetime

from django.utils.translation import gettext_lazy as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework_simplejwt import authentication
from rest_framework_simplejwt.exceptions import InvalidToken

from accounts.services import access_token_revoked


class JWTAuthentication(authentication.JWTAuthentication):
    """simplejwt's Bearer authentication, refusing access tokens issued before the user
    logged out everywhere or closed the account."""

    def get_user(self, validated_token):
        user = super().get_user(validated_token)
        issued_at = datetime.fromtimestamp(int(validated_token.get("iat", 0)), tz=UTC)
        if access_token_revoked(user, issued_at):
            raise InvalidToken(_("Token has been revoked"), code="token_revoked")
        return user


class JWTAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.JWTAuthentication"
    name = "jwtAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
