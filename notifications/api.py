"""The mobile app's devices and notification preferences."""

from drf_spectacular.utils import extend_schema
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
        responses={200: DeviceSerializer, 400: error_response("Invalid fields")},
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
        responses={204: None, 404: error_response("No such token of this user")},
    )
    def delete(self, request, token):
        if not services.unregister_device(user=request.user, token=token):
            raise NotFound()
        return Response(status=status.HTTP_204_NO_CONTENT)


class PreferencesSerializer(serializers.ModelSerializer):
    class Meta:
        model = NotificationPreferences
        fields = list(services.PREFERENCE_FIELDS)

    def validate_time_zone(self, value):
        from accounts.models import validate_time_zone

        validate_time_zone(value)
        return value


class PreferencesView(APIView):
    @extend_schema(
        tags=["notifications"], summary="What the customer hears about, and how", responses=PreferencesSerializer
    )
    def get(self, request):
        return Response(PreferencesSerializer(services.get_preferences(request.user)).data)

    @extend_schema(
        tags=["notifications"],
        summary="Change notification preferences",
        request=PreferencesSerializer,
        responses={200: PreferencesSerializer, 400: error_response("Invalid fields")},
    )
    def patch(self, request):
        serializer = PreferencesSerializer(services.get_preferences(request.user), data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        prefs = services.update_preferences(user=request.user, **serializer.validated_data)
        return Response(PreferencesSerializer(prefs).data)
