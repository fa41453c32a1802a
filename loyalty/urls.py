from django.urls import path

from loyalty.api import partner

urlpatterns = [
    path("partner/transactions/", partner.PurchaseView.as_view(), name="partner-transactions"),
    path(
        "partner/transactions/<str:external_id>/refund/",
        partner.RefundView.as_view(),
        name="partner-transaction-refund",
    ),
    path("partner/customers/<str:phone>/", partner.CustomerView.as_view(), name="partner-customer"),
    path("partner/redemptions/quote/", partner.QuoteView.as_view(), name="partner-redemption-quote"),
]
