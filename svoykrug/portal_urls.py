"""The partner portal's pages, at /portal/. Each app's `portal.py` holds its views."""

from django.urls import path

from accounts import portal as accounts_portal
from loyalty import portal as loyalty_portal

app_name = "portal"

urlpatterns = [
    path("", loyalty_portal.dashboard, name="dashboard"),
    # The frame: login, logout, the business switcher.
    path("login/", accounts_portal.login_phone, name="login"),
    path("login/code/", accounts_portal.login_code, name="login-code"),
    path("logout/", accounts_portal.logout_view, name="logout"),
    path("switch/", accounts_portal.switch_business, name="switch-business"),
    # Loyalty.
    path("cashier/", loyalty_portal.cashier, name="cashier"),
    path("program/", loyalty_portal.program, name="program"),
    path("program/edit/", loyalty_portal.program_update, name="program-update"),
    path("customers/", loyalty_portal.customers, name="customers"),
    path("customers/<uuid:user_id>/", loyalty_portal.customer_detail, name="customer"),
    path("customers/<uuid:user_id>/adjust/", loyalty_portal.adjust, name="customer-adjust"),
    path("transactions/", loyalty_portal.transactions, name="transactions"),
    path("transactions/<uuid:transaction_id>/", loyalty_portal.transaction_detail, name="transaction"),
    path("transactions/<uuid:transaction_id>/refund/", loyalty_portal.transaction_refund, name="transaction-refund"),
    path("settlement/", loyalty_portal.settlement, name="settlement"),
    # Partner API keys.
    path("api-keys/", accounts_portal.api_keys, name="api-keys"),
    path("api-keys/<uuid:key_id>/revoke/", accounts_portal.api_key_revoke, name="api-key-revoke"),
]
