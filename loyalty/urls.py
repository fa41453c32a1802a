from django.urls import path

from loyalty.api import mobile, partner

urlpatterns = [
    path("partner/transactions/", partner.PurchaseView.as_view(), name="partner-transactions"),
    path(
        "partner/transactions/<str:external_id>/refund/",
        partner.RefundView.as_view(),
        name="partner-transaction-refund",
    ),
    path("partner/customers/<str:phone>/", partner.CustomerView.as_view(), name="partner-customer"),
    path("partner/redemptions/quote/", partner.QuoteView.as_view(), name="partner-redemption-quote"),
    path("partner/coupons/<str:code>/", partner.CouponCheckView.as_view(), name="partner-coupon"),
    path("partner/coupons/<str:code>/redeem/", partner.CouponRedeemView.as_view(), name="partner-coupon-redeem"),
    path("me/loyalty/", mobile.LoyaltyView.as_view(), name="me-loyalty"),
    path("me/ledger/", mobile.LedgerView.as_view(), name="me-ledger"),
    path("me/transactions/", mobile.PurchaseHistoryView.as_view(), name="me-transactions"),
    path("businesses/", mobile.BusinessListView.as_view(), name="businesses"),
    path("businesses/<uuid:pk>/", mobile.BusinessDetailView.as_view(), name="business-detail"),
]
