"""Staff run integrations from the admin: credentials masked and write-only, the raw webhook
log with a reprocess action, a new webhook secret when a URL leaks."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone, translation
from django.utils.translation import gettext

from accounts.models import User
from integrations.models import CRMIntegration, WebhookDelivery
from loyalty.models import Transaction
from tests.factories import CRMIntegrationFactory, LoyaltyProgramFactory

pytestmark = pytest.mark.django_db

INTEGRATIONS = "/admin/integrations/crmintegration/"
WEBHOOKS = "/admin/integrations/webhookdelivery/"
ONEC_SALE = json.dumps(
    {
        "event": "sale.closed",
        "document_id": "5b2f8a3e-1c2d-11ef-8b4a-00155d010203",
        "date": (timezone.now() - timedelta(days=1)).isoformat(),  # within LOYALTY_MAX_BACKDATE_DAYS
        "customer": {"phone": "+79161234567"},
        "total": 1450.0,
    }
)


@pytest.fixture
def staff_client(client):
    client.force_login(User.objects.create_superuser(phone="+79990000001", password="correct horse battery"))
    return client


def test_credentials_are_masked_and_replaced_only_by_what_staff_type(staff_client):
    integration = CRMIntegrationFactory(
        provider="renovatio", credentials={"api_key": "secret-renovatio-key-12345678"}, config={"clinic_id": "1"}
    )
    page = staff_client.get(f"{INTEGRATIONS}{integration.pk}/change/").content.decode()
    assert "secret-renovatio-key-12345678" not in page
    assert "••••5678" in page
    assert integration.webhook_secret in page  # the webhook URL, for staff to give the partner

    form = {
        "business": str(integration.business_id),
        "provider": "renovatio",
        "config": json.dumps({"clinic_id": "2"}),
        "is_active": "on",
        "new_credentials": "",
    }
    assert staff_client.post(f"{INTEGRATIONS}{integration.pk}/change/", form).status_code == 302
    integration.refresh_from_db()
    assert integration.credentials == {"api_key": "secret-renovatio-key-12345678"}  # empty keeps them
    assert integration.config == {"clinic_id": "2"}

    form["new_credentials"] = '{"api_key": "another-key-000011112222"}'
    staff_client.post(f"{INTEGRATIONS}{integration.pk}/change/", form)
    integration.refresh_from_db()
    assert integration.credentials == {"api_key": "another-key-000011112222"}
    assert "another-key" not in integration.credentials_encrypted  # encrypted at rest

    form["new_credentials"] = "[1, 2]"
    response = staff_client.post(f"{INTEGRATIONS}{integration.pk}/change/", form)
    assert response.status_code == 200
    with translation.override("ru"):  # the admin speaks Russian by default
        assert gettext("A JSON object of names to strings.") in response.content.decode()


def test_reprocess_applies_a_stored_webhook_again_and_records_once(staff_client):
    integration = CRMIntegrationFactory(provider="onec")
    LoyaltyProgramFactory(business=integration.business)
    delivery = WebhookDelivery.objects.create(
        integration=integration,
        content_type="application/json",
        body=ONEC_SALE,
        status=WebhookDelivery.Status.FAILED,
        error="amoCRM was down",
    )
    for _attempt in range(2):
        response = staff_client.post(WEBHOOKS, {"action": "reprocess", "_selected_action": [delivery.pk]})
        assert response.status_code == 302
    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.PROCESSED
    assert delivery.error == ""
    assert delivery.attempts == 2
    purchases = Transaction.objects.filter(business=integration.business)
    assert [(p.external_id, str(p.gross_amount), p.source) for p in purchases] == [
        ("onec:sale:5b2f8a3e-1c2d-11ef-8b4a-00155d010203", "1450.00", "webhook")
    ]


def test_a_leaked_webhook_url_is_replaced(staff_client, client):
    integration = CRMIntegrationFactory(provider="onec")
    old_path = integration.webhook_path()
    staff_client.post(INTEGRATIONS, {"action": "new_webhook_secret", "_selected_action": [integration.pk]})
    integration.refresh_from_db()
    assert integration.webhook_path() != old_path
    assert client.post(old_path, ONEC_SALE, content_type="application/json").status_code == 404
    assert client.post(integration.webhook_path(), ONEC_SALE, content_type="application/json").status_code == 200


def test_reset_health_after_the_cause_is_fixed(staff_client):
    integration = CRMIntegrationFactory(provider="onec")
    CRMIntegration.objects.filter(pk=integration.pk).update(health="failing", consecutive_failures=12)
    staff_client.post(INTEGRATIONS, {"action": "reset_health", "_selected_action": [integration.pk]})
    integration.refresh_from_db()
    assert (integration.health, integration.consecutive_failures) == ("ok", 0)


def test_the_admin_lists_load(staff_client):
    CRMIntegrationFactory(provider="yclients", credentials={"user_token": "abcdefghijklmnop"})
    for path in (INTEGRATIONS, WEBHOOKS, "/admin/integrations/crmrecord/", "/admin/integrations/importjob/"):
        response = staff_client.get(path)
        assert response.status_code == 200, path
        assert "abcdefghijklmnop" not in response.content.decode()
