"""The mobile app's cross-promo API: the customer's coupons and invitation code.

`/me/coupons/…` answers for the logged-in customer only (JWT, the default authentication)
and never shows another customer's coupon: one that is not theirs is not found.
"""

from datetime import datetime

from django.conf import settings
from django.db.models import Case, CharField, DateTimeField, F, Min, Q, QuerySet, Value, When
from django.http import Http404
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers
from rest_framework.exceptions import NotFound
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api import error_response
from accounts.models import Business, User
from crosspromo import services
from crosspromo.models import Coupon, CrossPromoChain
from svoykrug import answers

MONEY = {"max_digits": 12, "decimal_places": 2}

# --- The customer's coupons, as the app lists them ---------------------------------------------


def customer_coupons(customer: User, *, now: datetime) -> QuerySet[Coupon]:
    """The customer's coupons, those usable now first (soonest expiry first), then the rest
    newest first. `shown_status` is the status the customer sees: an active coupon past its
    expiry reads "expired" before the expiry task has marked it so."""
    lapsed = Q(status=Coupon.Status.ACTIVE, expires_at__lte=now)
    usable = Q(status=Coupon.Status.ACTIVE, expires_at__gt=now)
    return (
        Coupon.objects.filter(customer=customer)
        .select_related("chain__source", "chain__target")
        .annotate(
            shown_status=Case(
                When(lapsed, then=Value(Coupon.Status.EXPIRED.value)),
                default=F("status"),
                output_field=CharField(),
            ),
            usable_until=Case(When(usable, then=F("expires_at")), default=None, output_field=DateTimeField()),
        )
        .order_by(F("usable_until").asc(nulls_last=True), "-issued_at", "-id")
    )


class CouponPagination(PageNumberPagination):
    """Page numbers: a customer has few coupons, and their order (usable first by expiry, the
    rest newest first) changes as coupons lapse, which no single cursor field can follow."""

    def get_page_size(self, request):
        return settings.API_PAGE_SIZE


# --- Serializers --------------------------------------------------------------------------------


class CouponRewardSerializer(serializers.Serializer):
    """The reward of the coupon's chain, read from the chain."""

    kind = serializers.ChoiceField(source="reward_kind", choices=CrossPromoChain.Reward.choices)
    value = serializers.DecimalField(
        source="reward_value", help_text=_("Percent for a percentage discount, roubles or bonuses otherwise."), **MONEY
    )
    max_discount = serializers.DecimalField(
        allow_null=True, help_text=_("For a percentage discount: the most the coupon takes off."), **MONEY
    )
    min_target_purchase = serializers.DecimalField(
        help_text=_("The smallest purchase at the target the coupon applies to."), **MONEY
    )
    description = serializers.SerializerMethodField(help_text=_("The reward in words."))

    def get_description(self, chain) -> str:
        return services.describe_reward(chain)


class CouponTargetSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    category = serializers.ChoiceField(choices=Business.Category.choices)
    address = serializers.CharField()


class CouponSourceSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()


class CouponSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    code = serializers.CharField(help_text=_("What the cashier types."))
    qr_payload = serializers.CharField(help_text=_("What the QR code shown at the till encodes."))
    status = serializers.ChoiceField(
        source="shown_status",
        choices=Coupon.Status.choices,
        help_text=_("An active coupon past its expiry reads expired."),
    )
    issued_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    redeemed_at = serializers.DateTimeField(allow_null=True)
    reward = CouponRewardSerializer(source="chain")
    target = CouponTargetSerializer(source="chain.target", help_text=_("Where the coupon is used."))
    source = CouponSourceSerializer(source="chain.source", help_text=_("Where the coupon was earned."))


class CouponQuerySerializer(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=Coupon.Status.choices, required=False, help_text=_("Only the coupons that read this status.")
    )


# --- Views --------------------------------------------------------------------------------------


class CustomerCouponsMixin:
    serializer_class = CouponSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Coupon.objects.none()
        return customer_coupons(self.request.user, now=timezone.now())


class CouponListView(CustomerCouponsMixin, generics.ListAPIView):
    pagination_class = CouponPagination

    def get_queryset(self):
        coupons = super().get_queryset()
        if getattr(self, "swagger_fake_view", False):
            return coupons
        query = CouponQuerySerializer(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        if shown_status := query.validated_data.get("status"):
            coupons = coupons.filter(shown_status=shown_status)
        return coupons

    @extend_schema(
        tags=["coupons"],
        summary="The customer's coupons: usable ones first, soonest expiry first; then the rest, newest first",
        parameters=[CouponQuerySerializer],
        responses={
            200: CouponSerializer(many=True),
            400: error_response("Unknown status"),
            401: error_response("Not logged in"),
            404: error_response("No such page"),
        },
    )
    def get(self, request, *args, **kwargs):
        def compute():
            now = timezone.now()
            response = super(CouponListView, self).get(request, *args, **kwargs)
            # The list reads differently once a usable coupon lapses.
            lapses = Coupon.objects.filter(customer=request.user, status=Coupon.Status.ACTIVE, expires_at__gt=now)
            return response, lambda: lapses.aggregate(first=Min("expires_at"))["first"]

        return answers.cached_answer(request, name="coupons", scopes=[f"coupons:{request.user.pk}"], compute=compute)


class CouponDetailView(CustomerCouponsMixin, generics.RetrieveAPIView):
    def get_object(self):
        # Another customer's coupon is not found, exactly like one that does not exist.
        try:
            return super().get_object()
        except Http404 as exc:
            raise NotFound(_("You have no coupon with this id.")) from exc

    @extend_schema(
        tags=["coupons"],
        summary="One of the customer's coupons",
        responses={
            200: CouponSerializer,
            401: error_response("Not logged in"),
            404: error_response("The customer has no coupon with this id"),
        },
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


# --- Referrals ----------------------------------------------------------------------------------


class ReferralSerializer(serializers.Serializer):
    code = serializers.CharField(help_text=_("The customer's personal invitation code."))
    link = serializers.CharField(help_text=_("The invitation link to share."))
    inviter_bonus = serializers.DecimalField(help_text=_("Bonuses the customer gets per friend."), **MONEY)
    friend_bonus = serializers.DecimalField(help_text=_("Bonuses the friend gets."), **MONEY)
    invited = serializers.IntegerField(help_text=_("Friends who came with the code."))
    rewarded = serializers.IntegerField(help_text=_("Friends whose first purchase earned the bonuses."))
    pending = serializers.IntegerField(help_text=_("Friends who have not made a qualifying purchase yet."))


class ReferralView(APIView):
    @extend_schema(
        tags=["referrals"],
        summary="The customer's invitation code and link, the bonuses on offer and the invited friends",
        description=(
            "A friend enters the code at their first login (`referral_code` of the OTP verify "
            "request); once the friend's first paid purchase has stood unrefunded for the hold "
            "period, both get their bonuses."
        ),
        responses={200: ReferralSerializer, 401: error_response("Not logged in")},
    )
    def get(self, request):
        return Response(ReferralSerializer(services.referral_summary(request.user)).data)
