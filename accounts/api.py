"""The mobile app's auth and profile API: validate, call a service, serialize."""

from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import services
from accounts.models import User
from svoykrug.throttling import OtpRequestThrottle, OtpVerifyThrottle


class ErrorSerializer(serializers.Serializer):
    """The one error shape of the API."""

    error = inline_serializer(
        "ErrorBody",
        fields={
            "code": serializers.CharField(),
            "message": serializers.CharField(),
            "fields": serializers.DictField(child=serializers.ListField(child=serializers.CharField()), required=False),
            "attempts_left": serializers.IntegerField(required=False),
            "retry_after": serializers.IntegerField(required=False),
        },
    )


def error_response(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


# --- OTP --------------------------------------------------------------------------------


class OtpRequestSerializer(serializers.Serializer):
    phone = serializers.CharField(
        max_length=32, help_text=_("Phone number; without a country code, Russia's is assumed.")
    )


class OtpChallengeSerializer(serializers.Serializer):
    code_id = serializers.CharField()
    expires_in = serializers.IntegerField(help_text=_("Seconds until the code expires."))
    resend_in = serializers.IntegerField(help_text=_("Seconds until a new code may be requested."))


class OtpVerifySerializer(serializers.Serializer):
    code_id = serializers.CharField(max_length=64)
    code = serializers.RegexField(
        r"^\d{1,12}$", max_length=12, error_messages={"invalid": _("Enter the digits of the code.")}
    )
    referral_code = serializers.CharField(
        max_length=200,
        required=False,
        allow_blank=True,
        help_text=_("A friend's invitation code or link; counts at the first login only."),
    )


class TokenUserSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    phone = serializers.CharField()
    is_new = serializers.BooleanField()


class LoginSerializer(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField()
    user = TokenUserSerializer()


class RefreshSerializer(serializers.Serializer):
    refresh = serializers.CharField(max_length=4096)


class TokenPairSerializer(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField()


class OtpRequestView(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []
    throttle_classes = [OtpRequestThrottle]

    @extend_schema(
        tags=["auth"],
        summary="Send a login code by SMS",
        request=OtpRequestSerializer,
        responses={
            201: OtpChallengeSerializer,
            400: error_response("Invalid phone, or a country we do not send SMS to"),
            429: error_response("Too soon or too many codes; see Retry-After"),
            503: error_response(
                "sms_unavailable (the SMS provider failed), or service_unavailable (the code store is down; "
                "see Retry-After)"
            ),
        },
    )
    def post(self, request):
        serializer = OtpRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        challenge = services.send_otp_code(serializer.validated_data["phone"], client=services.client_ip(request))
        return Response(OtpChallengeSerializer(challenge).data, status=status.HTTP_201_CREATED)


class OtpVerifyView(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []
    throttle_classes = [OtpVerifyThrottle]

    @extend_schema(
        tags=["auth"],
        summary="Exchange the SMS code for tokens",
        request=OtpVerifySerializer,
        responses={
            200: LoginSerializer,
            400: error_response(
                "otp_invalid (with attempts_left), otp_expired, otp_used, otp_attempts_exhausted, otp_not_found, "
                "or referral_code_unknown (field referral_code; checked first, the SMS code is not used up)"
            ),
            403: error_response("The account is disabled"),
            429: error_response("rate_limited: too many tries from this address; see Retry-After"),
        },
    )
    def post(self, request):
        serializer = OtpVerifySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        referral_code = serializer.validated_data.get("referral_code")
        if referral_code:
            # The one hook of accounts into crosspromo, imported here so the accounts app
            # still loads without it. An unknown code is refused before the SMS code is
            # checked: nobody is logged in, the code is not used up, and the answer is the
            # same whatever the phone.
            from crosspromo.services import find_referral_code, register_referral

            referral_code = find_referral_code(referral_code).code
        tokens = services.verify_otp_code(serializer.validated_data["code_id"], serializer.validated_data["code"])
        if referral_code and tokens.is_new:
            register_referral(friend=tokens.user, code=referral_code)
        body = {
            "access": tokens.access,
            "refresh": tokens.refresh,
            "user": {"id": tokens.user.pk, "phone": tokens.user.phone, "is_new": tokens.is_new},
        }
        return Response(LoginSerializer(body).data)


class TokenRefreshView(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(
        tags=["auth"],
        summary="Trade a refresh token for a new pair (the old refresh token stops working)",
        request=RefreshSerializer,
        responses={
            200: TokenPairSerializer,
            400: error_response("No refresh token given"),
            401: error_response("Invalid, expired or already used refresh token"),
        },
    )
    def post(self, request):
        serializer = RefreshSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        pair = services.refresh_access_token(serializer.validated_data["refresh"])
        return Response(TokenPairSerializer(pair).data)


class LogoutView(APIView):
    @extend_schema(
        tags=["auth"],
        summary="Log out this device: revoke its refresh token",
        request=RefreshSerializer,
        responses={
            204: None,
            400: error_response("No refresh token given"),
            401: error_response("Not logged in, or the token is not this user's"),
        },
    )
    def post(self, request):
        serializer = RefreshSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        services.revoke_token(serializer.validated_data["refresh"], user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class LogoutAllView(APIView):
    @extend_schema(
        tags=["auth"],
        summary="Log out everywhere: revoke every token of this user",
        request=None,
        responses={204: None, 401: error_response("Not logged in")},
    )
    def post(self, request):
        services.revoke_all_tokens(request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Profile ----------------------------------------------------------------------------


class ProfileSerializer(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = [
            "id",
            "phone",
            "first_name",
            "last_name",
            "email",
            "birth_date",
            "marketing_consent",
            "marketing_consent_at",
            "date_joined",
        ]
        read_only_fields = ["id", "phone", "marketing_consent_at", "date_joined"]

    def validate_birth_date(self, value):
        from django.utils import timezone

        if value and (value > timezone.localdate() or value.year < 1900):
            raise serializers.ValidationError(_("Enter a real birth date."))
        return value


class MeView(APIView):
    @extend_schema(
        tags=["profile"],
        summary="The customer's profile",
        responses={200: ProfileSerializer, 401: error_response("Not logged in")},
    )
    def get(self, request):
        return Response(ProfileSerializer(request.user).data)

    @extend_schema(
        tags=["profile"],
        summary="Change the profile (name, email, birth date, marketing consent)",
        request=ProfileSerializer,
        responses={200: ProfileSerializer, 400: error_response("Invalid fields"), 401: error_response("Not logged in")},
    )
    def patch(self, request):
        serializer = ProfileSerializer(request.user, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        user = services.update_profile(user=request.user, **serializer.validated_data)
        return Response(ProfileSerializer(user).data)

    @extend_schema(
        tags=["profile"],
        summary="Close the account: personal data is wiped, tokens revoked, purchase records kept",
        responses={204: None, 401: error_response("Not logged in")},
    )
    def delete(self, request):
        services.close_account(user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
