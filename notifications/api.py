"""The mobile app's devices and notification preferences."""

from django.utils.text import capfirst
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api import error_response
from notifications import services
from notifications.models import Device, NotificationPreferences


class DeviceSerializer(serializers.ModelSerializer):
    token = serializers.CharField(max_length=512)  # no uniqueness check: registering again refreshes

    class Meta:
        model = Device
        fields = ["token", "platform", "app_version", "is_active", "last_seen_at"]
        read_only_fields = ["is_active", "last_seen_at"]


class DevicesView(APIView):
    @extend_schema(
        tags=["notifications"],
        summary="Register or refresh this phone's push token (idempotent)",
        request=DeviceSerializer,
        responses={200: DeviceSerializer, 400: error_response("Invalid fields"), 401: error_response("Not logged in")},
    )
    def post(self, request):
        serializer = DeviceSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        device = services.register_device(user=request.user, **serializer.validated_data)
        return Response(DeviceSerializer(device).data)


class DeviceView(APIView):
    @extend_schema(
        tags=["notifications"],
        summary="Forget a push token (the app logs out on this phone)",
        responses={
            204: None,
            401: error_response("Not logged in"),
            404: error_response("No such token of this user"),
        },
    )
    def delete(self, request, token):
        if not services.unregister_device(user=request.user, token=token):
            raise NotFound()
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_field(
    {"type": "string", "pattern": r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?$", "example": "22:00:00"}
)
class LocalTimeField(serializers.TimeField):
    """A wall-clock time in the customer's time zone, "HH:MM[:SS]" without an offset. The schema
    says so with a pattern: OpenAPI's `format: time` is RFC 3339's full-time, which needs one."""


class PreferencesSerializer(serializers.ModelSerializer):
    # The model's own labels, so the schema's titles keep their translations.
    quiet_hours_start = LocalTimeField(required=False, allow_null=True, label=capfirst(_("quiet hours from")))
    quiet_hours_end = LocalTimeField(required=False, allow_null=True, label=capfirst(_("quiet hours until")))

    class Meta:
        model = NotificationPreferences
        fields = list(services.PREFERENCE_FIELDS)

    def validate_time_zone(self, value):
        from accounts.models import validate_time_zone

        validate_time_zone(value)
        return value


class PreferencesView(APIView):
    @extend_schema(
        tags=["notifications"],
        summary="What the customer hears about, and how",
        responses={200: PreferencesSerializer, 401: error_response("Not logged in")},
    )
    def get(self, request):
        return Response(PreferencesSerializer(services.get_preferences(request.user)).data)

    @extend_schema(
        tags=["notifications"],
        summary="Change notification preferences",
        request=PreferencesSerializer,
        responses={
            200: PreferencesSerializer,
            400: error_response("Invalid fields"),
            401: error_response("Not logged in"),
        },
    )
    def patch(self, request):
        serializer = PreferencesSerializer(services.get_preferences(request.user), data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        prefs = services.update_preferences(user=request.user, **serializer.validated_data)
        return Response(PreferencesSerializer(prefs).data)
