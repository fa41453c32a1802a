"""How callers prove who they are: customers with a JWT, partners' systems with an API key."""

from datetime import UTC, datetime

from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ValidationError
from django.utils.functional import SimpleLazyObject
from django.utils.translation import gettext_lazy as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt import authentication
from rest_framework_simplejwt.exceptions import InvalidToken
from rest_framework_simplejwt.settings import api_settings

from accounts.models import User
from accounts.services import access_token_revoked, authenticate_api_key
from svoykrug import answers


class KnownUser(SimpleLazyObject):
    """A user known to be active by id: the row is read from the database only when the view
    reads more than the id (a cached answer never does)."""

    def __init__(self, pk):
        super().__init__(lambda: User.objects.get(pk=pk))
        # Set on the proxy itself (LazyObject's __setattr__ would load the row).
        self.__dict__.update(pk=pk, id=pk, is_authenticated=True, is_anonymous=False, is_active=True)

    def __bool__(self):  # `request.user and request.user.is_authenticated` (DRF's permissions)
        return True


class JWTAuthentication(authentication.JWTAuthentication):
    """simplejwt's Bearer authentication, refusing access tokens issued before the user
    logged out everywhere or closed the account.

    What the check needs of an active user (when its tokens became valid) is kept in the
    cache under the scope `user:<id>`, renewed by every save of the user (closing the
    account, staff deactivating it) and by logging out everywhere (svoykrug.answers), so a
    request answered from the cache reads nothing from the database."""

    def get_user(self, validated_token):
        try:
            pk = User._meta.pk.to_python(validated_token[api_settings.USER_ID_CLAIM])
        except (KeyError, ValueError, TypeError, ValidationError) as exc:
            raise InvalidToken(_("Token contained no recognizable user identification")) from exc
        loaded = None

        def load():
            nonlocal loaded
            loaded = super(JWTAuthentication, self).get_user(validated_token)  # refuses a missing or inactive user
            return {"tokens_valid_after": loaded.tokens_valid_after}, None

        facts = answers.cached_value(f"auth:{pk}", scopes=[f"user:{pk}"], compute=load)
        issued_at = datetime.fromtimestamp(int(validated_token.get("iat", 0)), tz=UTC)
        if access_token_revoked(facts["tokens_valid_after"], issued_at):
            raise InvalidToken(_("Token has been revoked"), code="token_revoked")
        return loaded if loaded is not None else KnownUser(pk)


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
