"""The mobile app's loyalty API: the customer's card, histories, and the circle's partners.

`/me/…` answers for the logged-in customer only (JWT, the default authentication) and
never shows anyone else's rows. `/businesses/…` is public: the app shows the partners
before the customer logs in, and nothing in it depends on who asks.
"""

from django.conf import settings
from django.http import Http404
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import generics, serializers
from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination, PageNumberPagination
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api import error_response
from accounts.models import Business
from loyalty import selectors
from loyalty.models import LedgerEntry, LoyaltyProgram, Transaction
from svoykrug import answers

MONEY = {"max_digits": 12, "decimal_places": 2}
PERCENT = {"max_digits": 5, "decimal_places": 2}

# --- Pagination -------------------------------------------------------------------------


class HistoryPagination(CursorPagination):
    """Newest first, by time with the id as tiebreak, so a page boundary inside a run of
    rows with the same time neither repeats nor skips a row."""

    page_size_query_param = None

    def get_page_size(self, request):
        return settings.API_PAGE_SIZE


class LedgerPagination(HistoryPagination):
    ordering = ("-created_at", "-id")


class PurchasePagination(HistoryPagination):
    ordering = ("-occurred_at", "-id")


class BusinessPagination(PageNumberPagination):
    """Page numbers: the partner list is short, ordered by name, and the app shows its count."""

    def get_page_size(self, request):
        return settings.API_PAGE_SIZE


# --- The customer's card ----------------------------------------------------------------


class TierSerializer(serializers.Serializer):
    name = serializers.CharField()
    accrual_uplift = serializers.DecimalField(help_text=_("Percentage points added to every accrual."), **PERCENT)
    extra_redeem_share = serializers.DecimalField(
        help_text=_("Percentage points added to the share of a check payable with bonuses."), **PERCENT
    )


class NextTierSerializer(serializers.Serializer):
    name = serializers.CharField()
    threshold = serializers.DecimalField(help_text=_("Spend over 365 days that reaches it."), **MONEY)


class ExpirySerializer(serializers.Serializer):
    amount = serializers.DecimalField(**MONEY)
    expires_at = serializers.DateTimeField()
    business = serializers.SerializerMethodField(help_text=_("The issuing partner; null for the circle's own bonuses."))

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_business(self, expiry) -> str | None:
        return expiry.business_name or None


class LoyaltySerializer(serializers.Serializer):
    balance = serializers.DecimalField(help_text=_("All bonuses on the account."), **MONEY)
    spendable = serializers.DecimalField(help_text=_("Bonuses that can be spent now."), **MONEY)
    pending = serializers.DecimalField(help_text=_("Bonuses still on hold."), **MONEY)
    lifetime_earned = serializers.DecimalField(**MONEY)
    clawback_due = serializers.DecimalField(
        help_text=_("Bonuses a refund could not take back; the next bonuses credited pay them first."), **MONEY
    )
    tier = TierSerializer(allow_null=True)
    next_tier = NextTierSerializer(allow_null=True)
    spend_365 = serializers.DecimalField(help_text=_("Spend at all partners over the last 365 days."), **MONEY)
    spend_to_next_tier = serializers.DecimalField(allow_null=True, **MONEY)
    expiries = ExpirySerializer(many=True, help_text=_("Every coming expiry, one per batch, soonest first."))


class LoyaltyView(APIView):
    @extend_schema(
        tags=["loyalty"],
        summary="The customer's bonuses: balance, hold, tier, next tier and coming expiries",
        responses={200: LoyaltySerializer, 401: error_response("Not logged in")},
    )
    def get(self, request):
        def compute():
            summary = selectors.account_summary(request.user)
            return Response(LoyaltySerializer(summary).data), summary.changes_at

        scopes = [f"loyalty:{request.user.pk}", "tiers"]
        return answers.cached_answer(request, name="loyalty", scopes=scopes, compute=compute)


# --- Histories --------------------------------------------------------------------------


class LedgerEntrySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=LedgerEntry.Kind.choices)
    kind_display = serializers.CharField(source="get_kind_display")
    amount = serializers.DecimalField(help_text=_("Positive credits, negative debits."), **MONEY)
    business = serializers.CharField(
        source="business.name", allow_null=True, read_only=True, help_text=_("Where it happened, if at a partner.")
    )
    transaction_id = serializers.UUIDField(allow_null=True, help_text=_("The purchase it belongs to, if any."))
    reason = serializers.CharField()
    created_at = serializers.DateTimeField()


class PurchaseBusinessSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()


class CustomerPurchaseSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    business = PurchaseBusinessSerializer()
    gross_amount = serializers.DecimalField(help_text=_("The whole check."), **MONEY)
    bonuses_redeemed = serializers.DecimalField(**MONEY)
    coupon_discount = serializers.DecimalField(**MONEY)
    paid_amount = serializers.DecimalField(help_text=_("Paid in money."), **MONEY)
    bonuses_accrued = serializers.DecimalField(**MONEY)
    refunded_amount = serializers.DecimalField(help_text=_("Part of the check refunded."), **MONEY)
    status = serializers.ChoiceField(choices=Transaction.Status.choices)
    status_display = serializers.CharField(source="get_status_display")
    occurred_at = serializers.DateTimeField()


class LedgerView(generics.ListAPIView):
    serializer_class = LedgerEntrySerializer
    pagination_class = LedgerPagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return LedgerEntry.objects.none()
        return selectors.customer_ledger(self.request.user)

    @extend_schema(
        tags=["loyalty"],
        summary="The customer's bonus movements, newest first",
        responses={
            200: LedgerEntrySerializer(many=True),
            401: error_response("Not logged in"),
            404: error_response("The cursor is not valid"),
        },
    )
    def get(self, request, *args, **kwargs):
        # Entries are only ever added, each by a write that renews the customer's scope.
        return answers.cached_answer(
            request,
            name="ledger",
            scopes=[f"loyalty:{request.user.pk}"],
            compute=lambda: (super(LedgerView, self).get(request, *args, **kwargs), None),
        )


class PurchaseHistoryView(generics.ListAPIView):
    serializer_class = CustomerPurchaseSerializer
    pagination_class = PurchasePagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Transaction.objects.none()
        return selectors.customer_transactions(self.request.user)

    @extend_schema(
        tags=["loyalty"],
        summary="The customer's purchases at every partner, newest first",
        responses={
            200: CustomerPurchaseSerializer(many=True),
            401: error_response("Not logged in"),
            404: error_response("The cursor is not valid"),
        },
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


# --- The circle's partners --------------------------------------------------------------


class ProgramTermsSerializer(serializers.Serializer):
    accrual_rate = serializers.DecimalField(
        help_text=_("Bonuses per 100 roubles paid, before the tier's uplift."), **PERCENT
    )
    max_redeem_share = serializers.DecimalField(
        help_text=_("Percent of a check payable with bonuses, before the tier's extra."), **PERCENT
    )
    bonus_lifetime_days = serializers.IntegerField()
    hold_days = serializers.IntegerField(help_text=_("Days before bonuses earned here can be spent."))
    welcome_bonus = serializers.DecimalField(help_text=_("Granted on the first purchase in the circle."), **MONEY)
    birthday_bonus = serializers.DecimalField(**MONEY)


class BusinessSerializer(serializers.ModelSerializer):
    category_display = serializers.CharField(source="get_category_display")
    program = serializers.SerializerMethodField(
        help_text=_("The terms in force; null when the partner's program is switched off.")
    )

    class Meta:
        model = Business
        fields = [
            "id",
            "name",
            "slug",
            "category",
            "category_display",
            "address",
            "latitude",
            "longitude",
            "time_zone",
            "program",
        ]
        read_only_fields = fields

    @extend_schema_field(ProgramTermsSerializer(allow_null=True))
    def get_program(self, business):
        try:
            program = business.loyalty_program
        except LoyaltyProgram.DoesNotExist:
            # No row yet: the service applies the default terms on the first purchase.
            program = LoyaltyProgram(business=business)
        if not program.is_active:
            return None
        return ProgramTermsSerializer(program).data


class BusinessQuerySerializer(serializers.Serializer):
    category = serializers.ChoiceField(choices=Business.Category.choices, required=False)
    search = serializers.CharField(required=False, allow_blank=True, max_length=100, help_text=_("Part of the name."))


def active_businesses():
    return Business.objects.filter(is_active=True).select_related("loyalty_program").order_by("name", "id")


class PublicView:
    """Public: the app shows the partners before login. No token is needed, and one sent is not read."""

    authentication_classes: list = []
    permission_classes = [AllowAny]


class BusinessListView(PublicView, generics.ListAPIView):
    serializer_class = BusinessSerializer
    pagination_class = BusinessPagination

    def get_queryset(self):
        businesses = active_businesses()
        if getattr(self, "swagger_fake_view", False):
            return businesses
        query = BusinessQuerySerializer(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        if category := query.validated_data.get("category"):
            businesses = businesses.filter(category=category)
        if search := query.validated_data.get("search", "").strip():
            businesses = businesses.filter(name__icontains=search)
        return businesses

    @extend_schema(
        tags=["businesses"],
        summary="The circle's active partners, by name; filter by category, search by name",
        parameters=[BusinessQuerySerializer],
        responses={
            200: BusinessSerializer(many=True),
            400: error_response("Unknown category, or a search over 100 characters"),
            404: error_response("No such page"),
        },
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class BusinessDetailView(PublicView, generics.RetrieveAPIView):
    serializer_class = BusinessSerializer

    def get_queryset(self):
        return active_businesses()

    def get_object(self):
        # Say what was not found, rather than Django's bare "Not found.".
        try:
            return super().get_object()
        except Http404 as exc:
            raise NotFound(_("No active partner with this id.")) from exc

    @extend_schema(
        tags=["businesses"],
        summary="One active partner with its program terms",
        responses={200: BusinessSerializer, 404: error_response("No active partner with this id")},
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)
