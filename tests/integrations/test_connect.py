"""Connecting a CRM from the portal's form (`services.connect_integration`): secrets encrypted,
an empty secret field keeping the stored one, the provider's own connect step."""

import pytest

from integrations import services
from integrations.models import CRMIntegration
from tests.factories import CRMIntegrationFactory

pytestmark = pytest.mark.django_db


def test_a_form_connects_and_an_empty_secret_keeps_the_stored_one(shop):
    first = services.connect_integration(
        business=shop,
        provider="yclients",
        form_data={"company_id": " 4564 ", "user_token": " user-token ", "partner_token": ""},
    )

    assert (first.config, first.credentials, first.is_active) == (
        {"company_id": "4564"},
        {"user_token": "user-token"},
        True,
    )
    assert "user-token" not in first.credentials_encrypted

    CRMIntegration.objects.filter(pk=first.pk).update(is_active=False)
    again = services.connect_integration(
        business=shop, provider="yclients", form_data={"company_id": "4565", "user_token": "", "partner_token": "own"}
    )

    assert again.pk == first.pk
    assert again.config == {"company_id": "4565"}
    assert again.credentials == {"user_token": "user-token", "partner_token": "own"}
    assert again.is_active is False  # editing the settings does not resume a paused integration
    assert CRMIntegration.objects.filter(business=shop).count() == 1


def test_a_refused_oauth_code_changes_nothing(shop, amocrm_api):
    from integrations.providers.base import ProviderAuthError

    existing = CRMIntegrationFactory(
        business=shop, provider="amocrm", config={"base_url": amocrm_api.url}, is_active=False
    )
    with pytest.raises(ProviderAuthError):
        services.connect_integration(
            business=shop, provider="amocrm", form_data={"subdomain": "example", "auth_code": "never-issued"}
        )
    existing.refresh_from_db()
    # The form's values were rolled back with the refused code swap.
    assert (existing.config, existing.credentials, existing.is_active) == ({"base_url": amocrm_api.url}, {}, False)


def test_amocrm_swaps_the_code_for_tokens_and_forgets_the_code(shop, amocrm_api):
    CRMIntegrationFactory(business=shop, provider="amocrm", config={"base_url": amocrm_api.url})

    integration = services.connect_integration(
        business=shop, provider="amocrm", form_data={"subdomain": "example", "auth_code": "good-code"}
    )

    assert integration.config == {"base_url": amocrm_api.url, "subdomain": "example"}
    credentials = integration.credentials
    assert (credentials["access_token"], credentials["refresh_token"]) == ("access-1", "refresh-1")
    assert "auth_code" not in credentials
    assert [r.json["grant_type"] for r in amocrm_api.token_requests()] == ["authorization_code"]
    assert services.test_crm_connection(integration) is True
