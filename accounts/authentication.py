"""How callers prove who they are: customers with a JWT, partners' systems with an API key."""

from datetime import UTC, datetime

from django.contrib.auth.models import AnonymousUser
from django.utils.translation import gettext_lazy as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt import authentication
from rest_framework_simplejwt.exceptions import InvalidToken

from accounts.services import access_token_revoked, authenticate_api_key


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


class ApiKeyAuthentication(BaseAuthentication):
    """`Authorization: Api-Key <key>`: a partner's POS or system acting for its business.

    `request.auth` is the ApiKey (its `.business` scopes every call); `request.user` stays
    anonymous, as no person is behind the call."""

    keyword = "Api-Key"

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        keyword, _space, raw_key = header.partition(" ")
        if keyword != self.keyword:
            return None
        api_key = authenticate_api_key(raw_key.strip())
        if api_key is None:
            raise AuthenticationFailed(_("Invalid or revoked API key."), code="invalid_api_key")
        return AnonymousUser(), api_key

    def authenticate_header(self, request):
        return self.keyword


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.ApiKeyAuthentication"
    name = "partnerApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Api-Key <key>`; keys are made in the partner portal or the admin.",
        }
