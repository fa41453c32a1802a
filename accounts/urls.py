from django.urls import path

from accounts import api

urlpatterns = [
    path("auth/otp/", api.OtpRequestView.as_view(), name="auth-otp"),
    path("auth/otp/verify/", api.OtpVerifyView.as_view(), name="auth-otp-verify"),
    path("auth/token/refresh/", api.TokenRefreshView.as_view(), name="auth-token-refresh"),
    path("auth/logout/", api.LogoutView.as_view(), name="auth-logout"),
    path("auth/logout-all/", api.LogoutAllView.as_view(), name="auth-logout-all"),
    path("me/", api.MeView.as_view(), name="me"),
]
