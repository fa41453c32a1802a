"""The partner API: what a POS or a business's own system calls, with `Authorization: Api-Key <key>`.

Every call acts for the key's business and sees nothing of other businesses."""

import uuid
from decimal import Decimal

from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api import ErrorSerializer, error_response
from accounts.authentication import ApiKeyAuthentication
from accounts.models import ApiKey, User
from accounts.phones import normalize_phone
from crosspromo import services as crosspromo
from loyalty import selectors, services
from loyalty.models import Transaction
from loyalty.money import ZERO
from svoykrug.throttling import PartnerApiKeyThrottle

MONEY = {"max_digits": 12, "decimal_places": 2}


class HasPartnerApiKey(BasePermission):
    def has_permission(self, request, view):
        return isinstance(request.auth, ApiKey)


class PartnerView(APIView):
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [HasPartnerApiKey]
    throttle_classes = [PartnerApiKeyThrottle]

    @property
    def business(self):
        return self.request.auth.business


class PhoneField(serializers.CharField):
    """A phone as typed, normalised to E.164 (`invalid_phone` otherwise)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 32)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        return normalize_phone(super().to_internal_value(data))


class PurchaseSerializer(serializers.Serializer):
    external_id = serializers.CharField(max_length=100, help_text=_("The purchase's id in your system."))
    phone = PhoneField()
    amount = serializers.DecimalField(min_value=Decimal("0.01"), help_text=_("The whole check, roubles."), **MONEY)
    occurred_at = serializers.DateTimeField(required=False, help_text=_("When it was paid; now if omitted."))
    redeem = serializers.DecimalField(
        min_value=Decimal("0"), required=False, default=ZERO, help_text=_("Bonuses to spend on it."), **MONEY
    )
    coupon = serializers.CharField(
        max_length=64,
        required=False,
        allow_blank=True,
        help_text=_("A cross-promo coupon's code, typed or scanned, to redeem on this purchase."),
    )


class CouponPurchaseSerializer(PurchaseSerializer):
    coupon = None  # in the URL


class PurchaseResultSerializer(serializers.Serializer):
    transaction_id = serializers.UUIDField(source="transaction.pk")
    external_id = serializers.CharField(source="transaction.external_id")
    amount = serializers.DecimalField(source="transaction.gross_amount", **MONEY)
    bonuses_redeemed = serializers.DecimalField(source="transaction.bonuses_redeemed", **MONEY)
    coupon_discount = serializers.DecimalField(source="transaction.coupon_discount", **MONEY)
    coupon = serializers.SerializerMethodField(help_text=_("The code of the coupon redeemed on it, if any."))
    paid_amount = serializers.DecimalField(source="transaction.paid_amount", **MONEY)
    bonuses_accrued = serializers.DecimalField(source="transaction.bonuses_accrued", **MONEY)
    status = serializers.CharField(source="transaction.status")
    balance = serializers.DecimalField(**MONEY)
    tier = serializers.CharField(source="tier.name", allow_null=True, default=None)

    def get_coupon(self, result) -> str | None:
        return result.coupon_code


class PurchaseView(PartnerView):
    @extend_schema(
        tags=["partner"],
        summary="Record a purchase (and spend bonuses on it)",
        request=PurchaseSerializer,
        responses={
            201: PurchaseResultSerializer,
            200: OpenApiResponse(
                PurchaseResultSerializer, description="The same purchase sent again: the first answer"
            ),
            400: error_response("Invalid fields"),
            401: error_response("Missing or invalid API key"),
            409: error_response(
                "insufficient_bonuses, redemption_over_limit, or idempotency_conflict "
                "(this external_id was used with other data)"
            ),
            429: error_response("rate_limited: too many calls with this key; see Retry-After"),
        },
    )
    def post(self, request):
        serializer = PurchaseSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return self.record(serializer.validated_data, coupon=serializer.validated_data.get("coupon") or None)

    def record(self, data: dict, *, coupon: str | None) -> Response:
        """Record the validated purchase (redeeming `coupon` if given) and answer: 201 the
        first time, 200 with the first answer when it is sent again. A refused purchase
        records nothing, not even the account of a phone new to the circle (the service is
        one transaction)."""
        result = services.record_transaction(
            business=self.business,
            external_id=data["external_id"],
            phone=data["phone"],
            amount=data["amount"],
            redeem=data["redeem"],
            coupon=coupon,
            occurred_at=data.get("occurred_at"),
            source=Transaction.Source.API,
        )
        return Response(
            PurchaseResultSerializer(result).data,
            status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK,
        )


class CouponRedeemView(PurchaseView):
    @extend_schema(
        tags=["partner"],
        summary="Record a purchase that redeems a cross-promo coupon",
        description="The same as recording a purchase with `coupon`: the coupon's discount enters the "
        "purchase as its coupon discount (no bonuses accrue on it), or its extra bonuses are credited. "
        "A coupon works once, only at its target partner, only for its customer, before it expires.",
        request=CouponPurchaseSerializer,
        responses={
            201: PurchaseResultSerializer,
            200: OpenApiResponse(PurchaseResultSerializer, description="The same purchase sent again"),
            400: error_response("Invalid fields, or a coupon that cannot be used (`fields.coupon` says why)"),
            401: error_response("Missing or invalid API key"),
            409: error_response("insufficient_bonuses, redemption_over_limit, or idempotency_conflict"),
            429: error_response("rate_limited: too many calls with this key; see Retry-After"),
        },
    )
    def post(self, request, code):
        serializer = CouponPurchaseSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return self.record(serializer.validated_data, coupon=code)


class CouponCheckSerializer(serializers.Serializer):
    code = serializers.CharField()
    usable = serializers.BooleanField(help_text=_("Whether it can be redeemed here now (on this check)."))
    reason = serializers.CharField(allow_null=True, help_text=_("Why not, in words for the cashier."))
    status = serializers.CharField()
    reward = serializers.CharField(help_text=_("The reward in words."))
    discount = serializers.DecimalField(allow_null=True, help_text=_("What it takes off `amount`."), **MONEY)
    bonus = serializers.DecimalField(allow_null=True, help_text=_("The bonuses it adds."), **MONEY)
    expires_at = serializers.DateTimeField()


class CouponCheckView(PartnerView):
    @extend_schema(
        tags=["partner"],
        summary="Check a cross-promo coupon before the purchase",
        parameters=[
            OpenApiParameter("amount", str, description="The check, to quote the discount on (optional)"),
            OpenApiParameter("phone", str, description="The customer's phone, to check the coupon is theirs"),
        ],
        responses={
            200: CouponCheckSerializer,
            400: error_response("Invalid amount or phone"),
            401: error_response("Missing or invalid API key"),
            404: error_response("No such coupon"),
            429: error_response("rate_limited: too many calls with this key; see Retry-After"),
        },
    )
    def get(self, request, code):
        query = CouponQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        coupon = crosspromo.find_coupon(code)
        if coupon is None or self.business.pk not in (coupon.chain.target_id, coupon.chain.source_id):
            raise NotFound(_("There is no such coupon."))
        customer_id = None
        if query.validated_data.get("phone"):
            customer_id = User.objects.filter(phone=query.validated_data["phone"]).values_list("pk", flat=True).first()
            customer_id = customer_id or uuid.UUID(int=0)  # a phone unknown to the circle owns no coupon
        amount = query.validated_data.get("amount")
        answer = {
            "code": coupon.code,
            "status": coupon.status,
            "reward": crosspromo.describe_reward(coupon.chain),
            "expires_at": coupon.expires_at,
            "usable": True,
            "reason": None,
            "discount": None,
            "bonus": None,
        }
        on = amount or coupon.chain.min_target_purchase  # no check given: whether it works at all
        try:
            claim = crosspromo.quote_coupon(coupon, business=self.business, customer_id=customer_id, amount=on)
        except crosspromo.CouponError as exc:
            answer.update(usable=False, reason=exc.message)
        else:
            if amount is not None:
                answer.update(discount=claim.discount, bonus=claim.bonus)
        return Response(CouponCheckSerializer(answer).data)


class CouponQuerySerializer(serializers.Serializer):
    amount = serializers.DecimalField(min_value=Decimal("0.01"), required=False, **MONEY)
    phone = PhoneField(required=False)


class RefundSerializer(serializers.Serializer):
    amount = serializers.DecimalField(
        min_value=Decimal("0.01"),
        required=False,
        help_text=_("Part of the check refunded; all that is left if omitted."),
        **MONEY,
    )
    refund_id = serializers.CharField(
        max_length=100, required=False, help_text=_("Your id of this refund; required for partial refunds.")
    )


class RefundResultSerializer(serializers.Serializer):
    refund_id = serializers.CharField(source="refund.refund_id")
    amount = serializers.DecimalField(source="refund.amount", **MONEY)
    money_refunded = serializers.DecimalField(source="refund.money_refunded", **MONEY)
    bonuses_taken_back = serializers.DecimalField(source="refund.accrual_reversed", **MONEY)
    bonuses_returned = serializers.DecimalField(source="refund.redeemed_returned", **MONEY)
    bonuses_unrecovered = serializers.DecimalField(source="refund.unrecovered", **MONEY)
    transaction_status = serializers.CharField(source="refund.transaction.status")
    balance = serializers.DecimalField(**MONEY)


class RefundView(PartnerView):
    @extend_schema(
        tags=["partner"],
        summary="Refund a purchase in full or in part",
        request=RefundSerializer,
        responses={
            201: RefundResultSerializer,
            200: OpenApiResponse(RefundResultSerializer, description="The same refund sent again: the first answer"),
            400: error_response("Invalid fields, or a partial refund without refund_id"),
            401: error_response("Missing or invalid API key"),
            404: error_response("No purchase with this external_id at your business"),
            409: error_response("More than what is left of the purchase, or refund_id reused with other data"),
            429: error_response("rate_limited: too many calls with this key; see Retry-After"),
        },
    )
    def post(self, request, external_id):
        serializer = RefundSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        result = services.refund_transaction(
            business=self.business,
            external_id=external_id,
            amount=serializer.validated_data.get("amount"),
            refund_id=serializer.validated_data.get("refund_id"),
        )
        return Response(
            RefundResultSerializer(result).data,
            status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK,
        )


class CustomerSerializer(serializers.Serializer):
    phone = serializers.CharField()
    is_member = serializers.BooleanField(help_text=_("Whether this phone is in the circle yet."))
    balance = serializers.DecimalField(**MONEY)
    spendable = serializers.DecimalField(**MONEY)
    tier = serializers.CharField(allow_null=True)


class CustomerView(PartnerView):
    @extend_schema(
        tags=["partner"],
        summary="A customer's bonuses, by phone",
        parameters=[OpenApiParameter("phone", str, OpenApiParameter.PATH, description="Phone, e.g. +79991234567")],
        responses={
            200: CustomerSerializer,
            400: error_response("Not a phone number"),
            401: error_response("Missing or invalid API key"),
            429: error_response("rate_limited: too many calls with this key; see Retry-After"),
        },
    )
    def get(self, request, phone):
        phone = normalize_phone(phone)
        user = User.objects.filter(phone=phone, is_active=True).first()
        summary = selectors.account_summary(user) if user else None
        body = {
            "phone": phone,
            "is_member": user is not None,
            "balance": summary.balance if summary else ZERO,
            "spendable": summary.spendable if summary else ZERO,
            "tier": summary.tier.name if summary and summary.tier else None,
        }
        return Response(CustomerSerializer(body).data)


class QuoteRequestSerializer(serializers.Serializer):
    phone = PhoneField()
    amount = serializers.DecimalField(min_value=Decimal("0.01"), help_text=_("The whole check, roubles."), **MONEY)


class QuoteSerializer(serializers.Serializer):
    max_redeemable = serializers.DecimalField(help_text=_("The most bonuses that can pay for this check."), **MONEY)


class QuoteView(PartnerView):
    @extend_schema(
        tags=["partner"],
        summary="How much of a check the customer's bonuses can pay",
        request=QuoteRequestSerializer,
        responses={
            200: QuoteSerializer,
            400: OpenApiResponse(ErrorSerializer, description="Invalid fields"),
            401: error_response("Missing or invalid API key"),
            429: error_response("rate_limited: too many calls with this key; see Retry-After"),
        },
    )
    def post(self, request):
        serializer = QuoteRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        quote = services.quote_redemption(
            business=self.business, phone=serializer.validated_data["phone"], amount=serializer.validated_data["amount"]
        )
        return Response(QuoteSerializer({"max_redeemable": quote}).data)
