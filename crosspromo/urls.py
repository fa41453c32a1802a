from django.urls import path

from crosspromo import api

urlpatterns = [
    path("me/coupons/", api.CouponListView.as_view(), name="me-coupons"),
    path("me/coupons/<int:pk>/", api.CouponDetailView.as_view(), name="me-coupon"),
    path("me/referral/", api.ReferralView.as_view(), name="me-referral"),
]
