"""Integrations tests: provider calls go to local fakes, quickly. Timeouts are short and
retries have no backoff, so a test of a timeout or a 5xx takes a fraction of a second."""

from datetime import datetime
from decimal import Decimal

import pytest
import time_machine

from accounts.models import Membership
from tests.factories import (
    BusinessFactory,
    CRMIntegrationFactory,
    LoyaltyProgramFactory,
    MembershipFactory,
    UserFactory,
)
from tests.integrations.support import AMO_LEAD, FIXTURE_NOW, MOSCOW


@pytest.fixture(autouse=True)
def _fast_provider_http(settings):
    settings.INTEGRATIONS_CONNECT_TIMEOUT_SECONDS = 1.0
    settings.INTEGRATIONS_READ_TIMEOUT_SECONDS = 0.5
    settings.INTEGRATIONS_HTTP_RETRIES = 2
    settings.INTEGRATIONS_HTTP_BACKOFF_SECONDS = 0
    settings.INTEGRATIONS_RATE_LIMITS = {}


# --- The services' tests: a partner, its owner, its integrations and the fakes they call ---------


@pytest.fixture
def fixture_time():
    """Now is FIXTURE_NOW (ticking), so the fixtures' dated sales are recent enough to count."""
    with time_machine.travel(FIXTURE_NOW, tick=True) as traveller:
        yield traveller


@pytest.fixture
def shop(db):
    """A partner with a 5% program (and no welcome bonus)."""
    return LoyaltyProgramFactory(
        business=BusinessFactory(name="Барбершоп", slug="barbershop"), accrual_rate=Decimal("5.00")
    ).business


@pytest.fixture
def owner(shop):
    return MembershipFactory(business=shop, user=UserFactory(phone="+79990000001"), role=Membership.Role.OWNER).user


@pytest.fixture
def yclients_api(settings):
    from tests.fakes.yclients import FakeYclients

    with FakeYclients(partner_token="partner-token", user_token="user-token", slow_delay=1.0) as fake:
        settings.YCLIENTS_BASE_URL = fake.url
        settings.YCLIENTS_PARTNER_TOKEN = "partner-token"
        yield fake


@pytest.fixture
def iiko_api(settings):
    from tests.fakes.iiko import FakeIiko

    with FakeIiko(api_logins=["api-login-123"], slow_delay=1.0) as fake:
        settings.IIKO_BASE_URL = fake.url
        yield fake


@pytest.fixture
def amocrm_api(settings):
    """The amoCRM fake, with the lead of webhook_lead_status.form.txt won on FIXTURE_NOW's morning."""
    from tests.fakes.amocrm import CLIENT, CONTACT_ID, FakeAmoCrm, make_lead

    settings.AMOCRM_CLIENT_ID = CLIENT["client_id"]
    settings.AMOCRM_CLIENT_SECRET = CLIENT["client_secret"]
    settings.AMOCRM_REDIRECT_URI = CLIENT["redirect_uri"]
    closed = int(datetime(2026, 2, 15, 9, 30, tzinfo=MOSCOW).timestamp())
    with FakeAmoCrm(slow_delay=1.0) as fake:
        fake.leads = [make_lead(id=AMO_LEAD, price=22500, status_id=142, closed_at=closed, updated_at=closed)]
        fake.lead_contacts = {AMO_LEAD: [CONTACT_ID]}
        yield fake


@pytest.fixture
def yclients(shop, yclients_api):
    return CRMIntegrationFactory(
        business=shop, provider="yclients", config={"company_id": "4564"}, credentials={"user_token": "user-token"}
    )


@pytest.fixture
def iiko(shop):
    return CRMIntegrationFactory(business=shop, provider="iiko", credentials={"api_login": "api-login-123"})


@pytest.fixture
def amocrm(shop, amocrm_api):
    return CRMIntegrationFactory(
        business=shop,
        provider="amocrm",
        config={"subdomain": "example", "base_url": amocrm_api.url},
        credentials={
            "access_token": "access-0",
            "refresh_token": "refresh-0",
            "expires_at": "2100-01-01T00:00:00+00:00",
        },
    )


@pytest.fixture
def onec(shop):
    """1C pushing its sales (no OData address)."""
    return CRMIntegrationFactory(business=shop, provider="onec")


@pytest.fixture
def send_webhook(client, django_capture_on_commit_callbacks):
    """POST a body to an integration's webhook URL as the CRM would; the processing task,
    queued on commit, runs (eagerly) before this returns."""

    def send(integration, body: bytes, content_type="application/json", *, secret=None, **headers):
        path = f"/api/v1/integrations/{integration.pk}/webhook/{secret or integration.webhook_secret}/"
        with django_capture_on_commit_callbacks(execute=True):
            return client.post(path, data=body, content_type=content_type, headers=headers)

    return send
