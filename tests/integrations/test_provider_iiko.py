"""The iiko provider against a local fake iiko Cloud: real requests over HTTP on 127.0.0.1,
the documented payloads from tests/fixtures/iiko/."""

import json
import logging
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from integrations.providers import get_provider
from integrations.providers.base import (
    CrmEvent,
    ProviderAuthError,
    ProviderConfigError,
    ProviderUnavailable,
    WebhookRejected,
    WebhookUnauthorized,
)
from integrations.providers.iiko import IikoProvider
from tests.factories import CRMIntegrationFactory
from tests.fakes.iiko import FakeIiko, closed_delivery, load_fixture

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "iiko"
API_LOGIN = "api-login-123"
ORGANIZATION = "7bc05553-4b68-44e8-b7bc-37be63c6d9e9"
TABLE_ORDER = "order:eeee1111-2222-3333-4444-555566667777"
DELIVERY = "order:aaaa1111-2222-3333-4444-555566667777"
SINCE = datetime(2026, 2, 14, 9, 0, tzinfo=UTC)  # 12:00 in Moscow, the business's zone
UNTIL = datetime(2026, 2, 14, 11, 0, tzinfo=UTC)

ORGANIZATIONS = "/api/1/organizations"
TOKEN = "/api/1/access_token"
DELIVERIES = "/api/1/deliveries/by_delivery_date_and_status"


@pytest.fixture
def fake_iiko():
    with FakeIiko(api_logins=[API_LOGIN], slow_delay=2.0) as fake:
        yield fake


@pytest.fixture
def iiko_settings(settings, fake_iiko):
    settings.IIKO_BASE_URL = fake_iiko.url
    return settings


def make_provider(api_login=API_LOGIN, **config) -> IikoProvider:
    integration = CRMIntegrationFactory(provider="iiko", config=config, credentials={"api_login": api_login})
    return get_provider(integration)


@pytest.fixture
def provider(iiko_settings) -> IikoProvider:
    return make_provider()


def fixture_body(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def table_order_webhook(**changes) -> bytes:
    events = load_fixture("webhook_table_order_closed.json")
    events[0]["eventInfo"]["order"].update(changes)
    return json.dumps(events, ensure_ascii=False).encode()


def all_events(provider, since=SINCE, until=UNTIL) -> list[CrmEvent]:
    return [event for page in provider.fetch_changes(since, until) for event in page]


# --- Connection and tokens -------------------------------------------------------------------------


def test_connection_gets_a_token_and_names_the_organisations(provider, fake_iiko):
    assert provider.test_connection() == "Кафе на Ленина"

    token, organizations = fake_iiko.requests
    assert (token.method, token.path, token.json) == ("POST", TOKEN, {"apiLogin": API_LOGIN})
    assert (organizations.method, organizations.path) == ("POST", ORGANIZATIONS)
    assert organizations.json == load_fixture("organizations_request.json")
    assert organizations.headers["Authorization"].startswith("Bearer token-")
    assert organizations.headers["Authorization"].removeprefix("Bearer ") in fake_iiko.tokens


def test_a_wrong_api_login_is_an_auth_error_that_does_not_repeat_it(iiko_settings, fake_iiko):
    provider = make_provider(api_login="wrong-login-42")

    with pytest.raises(ProviderAuthError) as caught:
        provider.test_connection()

    assert caught.value.message.startswith("iiko")
    assert "is not authorized" in caught.value.message
    assert "wrong-login-42" not in caught.value.message  # iiko quotes the login; we do not
    assert fake_iiko.paths() == [TOKEN]


def test_an_organisation_the_login_cannot_see_is_a_config_error(iiko_settings, fake_iiko):
    provider = make_provider(organization_ids=f"{ORGANIZATION}, 00000000-0000-0000-0000-000000000000")

    with pytest.raises(ProviderConfigError) as caught:
        provider.test_connection()

    assert "00000000-0000-0000-0000-000000000000" in caught.value.message
    assert fake_iiko.requests[1].json["organizationIds"] == [ORGANIZATION, "00000000-0000-0000-0000-000000000000"]


def test_the_token_is_kept_between_calls(provider, fake_iiko):
    provider.test_connection()
    get_provider(provider.integration).test_connection()

    assert fake_iiko.paths() == [TOKEN, ORGANIZATIONS, ORGANIZATIONS]


def test_an_expired_token_is_renewed_once_and_the_call_succeeds(provider, fake_iiko):
    provider.test_connection()
    fake_iiko.expire_tokens()

    assert provider.test_connection() == "Кафе на Ленина"

    assert fake_iiko.paths() == [TOKEN, ORGANIZATIONS, ORGANIZATIONS, TOKEN, ORGANIZATIONS]
    assert fake_iiko.requests[-1].headers["Authorization"] != fake_iiko.requests[1].headers["Authorization"]


def test_a_fresh_token_refused_too_is_an_auth_error_after_one_renewal(provider, fake_iiko):
    fake_iiko.reject_tokens = True

    with pytest.raises(ProviderAuthError):
        provider.test_connection()

    assert fake_iiko.paths() == [TOKEN, ORGANIZATIONS, TOKEN, ORGANIZATIONS]


def test_a_server_error_is_unavailable_after_the_retries(provider, fake_iiko):
    provider.test_connection()  # the token is cached
    fake_iiko.fail_with = 500

    with pytest.raises(ProviderUnavailable):
        all_events(provider)

    assert fake_iiko.paths()[2:] == [ORGANIZATIONS] * 3  # INTEGRATIONS_HTTP_RETRIES = 2


def test_a_timeout_is_unavailable_after_the_retries(provider, fake_iiko, settings):
    settings.INTEGRATIONS_READ_TIMEOUT_SECONDS = 0.2
    fake_iiko.slow = True

    with pytest.raises(ProviderUnavailable):
        provider.test_connection()

    assert fake_iiko.paths() == [TOKEN] * 3


# --- Sync ------------------------------------------------------------------------------------------


def test_a_closed_delivery_is_a_purchase(provider, fake_iiko):
    (event,) = all_events(provider)

    assert event.kind == CrmEvent.PURCHASE
    assert event.external_id == DELIVERY
    assert event.amount == Decimal("2100.00")
    assert event.phone == "+79161234567"
    assert event.customer_name == "Иван Петров"
    assert event.occurred_at == datetime(2026, 2, 14, 10, 26, tzinfo=UTC)  # 13:26 at the terminal (Moscow)
    request = fake_iiko.requests[-1]
    assert request.path == DELIVERIES
    assert request.json == {
        "organizationIds": [ORGANIZATION],
        "deliveryDateFrom": "2026-02-14 00:00:00.000",  # 12 hours before the window, local time
        "deliveryDateTo": "2026-02-14 14:00:00.000",
        "statuses": ["Closed", "Cancelled"],
    }


def test_configured_organisations_are_read_without_asking_for_them(iiko_settings, fake_iiko):
    provider = make_provider(organization_ids=[ORGANIZATION])

    all_events(provider)

    assert fake_iiko.paths() == [TOKEN, DELIVERIES]


def test_a_cancelled_delivery_is_a_refund(provider, fake_iiko):
    fake_iiko.deliveries = [
        closed_delivery(
            status="Cancelled",
            whenClosed=None,
            cancelInfo={
                "whenCancelled": "2026-02-14 13:10:00.000",
                "cause": {"id": "5b2bd5f3-0000-4000-8000-000000000001", "name": "Гость передумал"},
                "comment": None,
            },
        )
    ]

    (event,) = all_events(provider)

    assert event.kind == CrmEvent.REFUND
    assert (event.external_id, event.refund_id) == (DELIVERY, f"{DELIVERY}:cancelled")
    assert event.amount is None
    assert event.occurred_at == datetime(2026, 2, 14, 10, 10, tzinfo=UTC)


def test_fetch_changes_reads_the_window_one_day_at_a_time(provider, fake_iiko):
    fake_iiko.deliveries = []
    for day in (11, 12, 13, 14):
        delivery = closed_delivery(completeBefore=f"2026-02-{day} 13:30:00.000")
        delivery["id"] = f"aaaa1111-2222-3333-4444-0000000000{day}"
        fake_iiko.deliveries.append(delivery)
    fake_iiko.deliveries.append(closed_delivery(completeBefore="2026-02-14 13:30:00.000", status="Delivered"))

    pages = list(provider.fetch_changes(datetime(2026, 2, 11, 9, 0, tzinfo=UTC), UNTIL))

    assert [[event.external_id for event in page] for page in pages] == [
        [f"order:aaaa1111-2222-3333-4444-0000000000{day}"] for day in (11, 12, 13, 14)
    ]
    windows = [
        (r.json["deliveryDateFrom"], r.json["deliveryDateTo"]) for r in fake_iiko.requests if r.path == DELIVERIES
    ]
    assert windows == [
        ("2026-02-11 00:00:00.000", "2026-02-12 00:00:00.000"),
        ("2026-02-12 00:00:00.000", "2026-02-13 00:00:00.000"),
        ("2026-02-13 00:00:00.000", "2026-02-14 00:00:00.000"),
        ("2026-02-14 00:00:00.000", "2026-02-14 14:00:00.000"),
    ]


# --- Webhooks --------------------------------------------------------------------------------------


def test_webhook_closed_table_order_is_a_purchase(provider):
    (event,) = provider.parse_webhook(fixture_body("webhook_table_order_closed.json"), "application/json")

    assert event.kind == CrmEvent.PURCHASE
    assert event.external_id == TABLE_ORDER
    assert event.amount == Decimal("1450.00")
    assert event.phone == "+79161234567"
    assert event.occurred_at == datetime(2026, 2, 14, 9, 35, tzinfo=UTC)  # 12:35 at the terminal


def test_webhook_closed_delivery_is_the_same_purchase_as_a_sync(provider):
    (event,) = provider.parse_webhook(fixture_body("webhook_delivery_order_closed.json"), "application/json")

    assert event.kind == CrmEvent.PURCHASE
    assert (event.external_id, event.amount) == (DELIVERY, Decimal("2100.00"))
    assert event == all_events(provider)[0]


def test_webhook_delivery_error_is_ignored_and_logged(provider, caplog):
    with caplog.at_level(logging.WARNING, logger="integrations.providers.iiko"):
        (event,) = provider.parse_webhook(fixture_body("webhook_delivery_order_error.json"), "application/json")

    assert event.kind == CrmEvent.IGNORED
    assert event.external_id == "order:dddd2222-2222-3333-4444-555566667777"
    assert "Product not found" in event.reason
    assert "DeliveryOrderError" in caplog.text
    assert "f333de0b-8550-6e17-70b2-bbba152bcbd3" in caplog.text


def test_webhook_update_without_an_order_is_ignored_and_logged(provider, caplog):
    events = load_fixture("webhook_table_order_closed.json")
    events[0]["eventInfo"].update(creationStatus="Error", order=None)

    with caplog.at_level(logging.WARNING, logger="integrations.providers.iiko"):
        (event,) = provider.parse_webhook(json.dumps(events).encode(), "application/json")

    assert event.kind == CrmEvent.IGNORED
    assert "c090de0b-8550-6e17-70b2-bbba152bced4" in caplog.text


def test_webhook_table_order_without_a_phone_is_a_purchase_without_one(provider):
    (event,) = provider.parse_webhook(table_order_webhook(phone=None, customer=None), "application/json")

    assert event.kind == CrmEvent.PURCHASE
    assert (event.phone, event.customer_name, event.amount) == ("", "", Decimal("1450.00"))


def test_webhook_deleted_table_order_is_a_refund(provider):
    (event,) = provider.parse_webhook(table_order_webhook(status="Deleted"), "application/json")

    assert event.kind == CrmEvent.REFUND
    assert (event.external_id, event.refund_id) == (TABLE_ORDER, f"{TABLE_ORDER}:cancelled")


def test_webhook_open_table_order_is_ignored(provider):
    (event,) = provider.parse_webhook(table_order_webhook(status="Bill", whenClosed=None), "application/json")

    assert event.kind == CrmEvent.IGNORED
    assert "not closed yet" in event.reason


def test_webhook_of_other_events_and_organisations_is_ignored(iiko_settings):
    provider = make_provider(organization_ids=["11111111-1111-4111-8111-111111111111"])
    events = load_fixture("webhook_table_order_closed.json") + [
        {"eventType": "StopListUpdate", "eventTime": "2026-02-14 09:35:00.512", "organizationId": ORGANIZATION,
         "correlationId": "0d0d0d0d-0000-4000-8000-000000000000", "eventInfo": {"terminalGroupsStopListsUpdates": []}},
    ]  # fmt: skip

    order_event, stop_list = provider.parse_webhook(json.dumps(events).encode(), "application/json")

    assert (order_event.kind, stop_list.kind) == (CrmEvent.IGNORED, CrmEvent.IGNORED)
    assert ORGANIZATION in order_event.reason
    assert "StopListUpdate" in stop_list.reason


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"{}",
        json.dumps(load_fixture("webhook_table_order_closed.json")[0]).encode(),  # an object, not an array
        b"[1]",
        b'[{"eventInfo": {}}]',
        b'[{"eventType": "TableOrderUpdate", "eventInfo": null}]',
        table_order_webhook(sum="a lot"),
        table_order_webhook(whenClosed="2026-02-14T12:35:00+03:00"),
    ],
)
def test_unreadable_webhooks_are_rejected(provider, body):
    with pytest.raises(WebhookRejected):
        provider.parse_webhook(body, "application/json")


def test_webhook_auth_token_is_accepted_raw_and_as_bearer(provider):
    secret = provider.integration.webhook_secret

    provider.check_webhook({"Authorization": secret})
    provider.check_webhook({"Authorization": f"Bearer {secret}"})


@pytest.mark.parametrize("headers", [{}, {"Authorization": ""}, {"Authorization": "Bearer wrong"}, {"X-Token": "x"}])
def test_webhook_without_our_auth_token_is_unauthorized(provider, headers):
    with pytest.raises(WebhookUnauthorized):
        provider.check_webhook(headers)


def test_register_webhook_sets_our_url_and_token_per_organisation(provider, fake_iiko):
    url = "https://svoykrug.example/api/v1/integrations/x/webhook/secret/"

    assert provider.register_webhook(url) is True

    expected = load_fixture("update_webhook_settings_request.json")
    expected.update(webHooksUri=url, authToken=provider.integration.webhook_secret)
    assert fake_iiko.paths() == [TOKEN, ORGANIZATIONS, "/api/1/webhooks/update_settings"]
    assert fake_iiko.webhook_settings == [expected]
