"""The partner portal's pages, at /portal/. Each app's `portal.py` holds its views."""

from django.urls import path

from accounts import portal as accounts_portal
from analytics import portal as analytics_portal
from analytics import portal_campaigns as campaigns_portal
from crosspromo import portal as crosspromo_portal
from events import portal as events_portal
from integrations import portal as integrations_portal
from loyalty import portal as loyalty_portal

app_name = "portal"

urlpatterns = [
    # The home page: the analytics dashboard (a cashier's: the live overview), its tables as CSV.
    path("", analytics_portal.dashboard, name="dashboard"),
    path("dashboard/figures.csv", analytics_portal.dashboard_csv, {"table": "figures"}, name="dashboard-figures-csv"),
    path("dashboard/series.csv", analytics_portal.dashboard_csv, {"table": "series"}, name="dashboard-series-csv"),
    path(
        "dashboard/segments.csv", analytics_portal.dashboard_csv, {"table": "segments"}, name="dashboard-segments-csv"
    ),
    path("dashboard/at-risk.csv", analytics_portal.dashboard_csv, {"table": "at_risk"}, name="dashboard-at-risk-csv"),
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
    # CRM integrations and the CSV history import.
    path("integrations/", integrations_portal.integration_list, name="integrations"),
    path("integrations/<slug:provider>/connect/", integrations_portal.integration_connect, name="integration-connect"),
    path("integrations/<uuid:integration_id>/test/", integrations_portal.integration_test, name="integration-test"),
    path("integrations/<uuid:integration_id>/sync/", integrations_portal.integration_sync, name="integration-sync"),
    path(
        "integrations/<uuid:integration_id>/active/", integrations_portal.integration_active, name="integration-active"
    ),
    path(
        "integrations/<uuid:integration_id>/records/",
        integrations_portal.integration_records,
        name="integration-records",
    ),
    path(
        "integrations/<uuid:integration_id>/webhooks/",
        integrations_portal.integration_webhooks,
        name="integration-webhooks",
    ),
    path("imports/", integrations_portal.import_list, name="imports"),
    path("imports/<uuid:job_id>/", integrations_portal.import_detail, name="import"),
    path("imports/<uuid:job_id>/preview/", integrations_portal.import_preview, name="import-preview"),
    path("imports/<uuid:job_id>/cancel/", integrations_portal.import_cancel, name="import-cancel"),
    path("imports/<uuid:job_id>/progress.json", integrations_portal.import_progress, name="import-progress"),
    # Segment campaigns: write, preview the reach and the SMS cost, send once, see what followed.
    path("campaigns/", campaigns_portal.campaign_list, name="campaigns"),
    path("campaigns/new/", campaigns_portal.campaign_new, name="campaign-new"),
    path("campaigns/<uuid:campaign_id>/", campaigns_portal.campaign_detail, name="campaign"),
    path("campaigns/<uuid:campaign_id>/edit/", campaigns_portal.campaign_edit, name="campaign-edit"),
    path("campaigns/<uuid:campaign_id>/send/", campaigns_portal.campaign_send, name="campaign-send"),
    # Cross-promo: chains with other partners both ways, proposals and decisions, recommendations.
    path("crosspromo/", crosspromo_portal.chain_list, name="crosspromo"),
    path("crosspromo/new/", crosspromo_portal.chain_new, name="crosspromo-new"),
    path("crosspromo/recommendations/", crosspromo_portal.recommendations, name="crosspromo-recommendations"),
    path("crosspromo/<int:chain_id>/", crosspromo_portal.chain_detail, name="crosspromo-chain"),
    path("crosspromo/<int:chain_id>/change/", crosspromo_portal.chain_change, name="crosspromo-chain-change"),
    # Events: the business's own and co-hosted events, the community's votes on proposals, the door.
    path("events/", events_portal.event_list, name="events"),
    path("events/new/", events_portal.event_new, name="event-new"),
    path("events/<int:event_id>/", events_portal.event_detail, name="event"),
    path("events/<int:event_id>/edit/", events_portal.event_edit, name="event-edit"),
    path("events/<int:event_id>/publish/", events_portal.event_publish, name="event-publish"),
    path("events/<int:event_id>/cancel/", events_portal.event_cancel, name="event-cancel"),
    path("events/<int:event_id>/registrations.csv", events_portal.event_csv, name="event-csv"),
    path("events/<int:event_id>/check-in/", events_portal.event_checkin, name="event-checkin"),
]
