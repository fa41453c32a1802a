"""The YCLIENTS provider against a local fake YCLIENTS: real requests over HTTP on 127.0.0.1,
the documented payloads from tests/fixtures/yclients/."""

import copy
import json
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
)
from integrations.providers.yclients import YclientsProvider
from tests.factories import CRMIntegrationFactory
from tests.fakes.yclients import FakeYclients, load_fixture, make_records

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "yclients"
PARTNER_TOKEN = "partner-token"
USER_TOKEN = "user-token"
SINCE = datetime(2025, 7, 13, 6, 0, tzinfo=UTC)
UNTIL = datetime(2025, 7, 13, 12, 0, tzinfo=UTC)


@pytest.fixture
def fake_yclients():
    with FakeYclients(partner_token=PARTNER_TOKEN, user_token=USER_TOKEN, slow_delay=2.0) as fake:
        yield fake


@pytest.fixture
def yclients_settings(settings, fake_yclients):
    settings.YCLIENTS_BASE_URL = fake_yclients.url
    settings.YCLIENTS_PARTNER_TOKEN = PARTNER_TOKEN
    return settings


def make_provider(company_id="4564", **credentials) -> YclientsProvider:
    integration = CRMIntegrationFactory(
        provider="yclients", config={"company_id": company_id}, credentials={"user_token": USER_TOKEN, **credentials}
    )
    return get_provider(integration)


@pytest.fixture
def provider(yclients_settings) -> YclientsProvider:
    return make_provider()


def fixture_body(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def webhook(name: str, **changes) -> bytes:
    payload = load_fixture(name)
    payload["data"].update(changes)
    return json.dumps(payload, ensure_ascii=False).encode()


def all_events(provider, since=SINCE, until=UNTIL) -> list[CrmEvent]:
    return [event for page in provider.fetch_changes(since, until) for event in page]


# --- Connection ------------------------------------------------------------------------------------


def test_connection_makes_one_cheap_records_call_with_both_tokens(provider, fake_yclients):
    description = provider.test_connection()

    assert "4564" in description
    (request,) = fake_yclients.requests
    assert (request.method, request.path) == ("GET", "/records/4564")
    assert request.query == {"page": "1", "count": "1"}
    assert request.headers["Authorization"] == f"Bearer {PARTNER_TOKEN}, User {USER_TOKEN}"
    assert request.headers["Accept"] == "application/vnd.api.v2+json"


def test_the_partners_own_partner_token_comes_before_the_platforms(yclients_settings, fake_yclients):
    fake_yclients.partner_token = "their-own-partner-token"
    provider = make_provider(partner_token="their-own-partner-token")

    provider.test_connection()

    assert fake_yclients.requests[0].headers["Authorization"] == f"Bearer their-own-partner-token, User {USER_TOKEN}"


def test_wrong_user_token_is_an_auth_error_with_yclients_message(yclients_settings, fake_yclients):
    provider = make_provider(user_token="wrong-user-token")

    with pytest.raises(ProviderAuthError) as caught:
        provider.test_connection()

    assert caught.value.message.startswith("YCLIENTS")
    assert "Authentication needed." in caught.value.message
    assert "wrong-user-token" not in caught.value.message


def test_an_expired_licence_403_is_an_auth_error_with_the_message(provider, fake_yclients):
    fake_yclients.forbidden_message = "Необходимо продлить лицензию в филиале"

    with pytest.raises(ProviderAuthError) as caught:
        provider.test_connection()

    assert "Необходимо продлить лицензию в филиале" in caught.value.message
    assert caught.value.message.startswith("YCLIENTS")


def test_an_unknown_company_is_a_config_error(yclients_settings):
    with pytest.raises(ProviderConfigError) as caught:
        make_provider(company_id="999").test_connection()

    assert "Филиал не найден." in caught.value.message


def test_without_any_partner_token_nothing_is_sent(yclients_settings, fake_yclients):
    yclients_settings.YCLIENTS_PARTNER_TOKEN = ""

    with pytest.raises(ProviderConfigError):
        make_provider().test_connection()

    assert fake_yclients.requests == []


def test_a_server_error_is_unavailable_after_the_retries(provider, fake_yclients):
    fake_yclients.fail_with = 500

    with pytest.raises(ProviderUnavailable):
        provider.test_connection()

    assert len(fake_yclients.requests) == 3  # INTEGRATIONS_HTTP_RETRIES = 2


def test_a_timeout_is_unavailable_after_the_retries(provider, fake_yclients, settings):
    settings.INTEGRATIONS_READ_TIMEOUT_SECONDS = 0.2
    fake_yclients.slow = True

    with pytest.raises(ProviderUnavailable):
        all_events(provider)

    assert len(fake_yclients.requests) == 3


# --- Sync ------------------------------------------------------------------------------------------


def test_fetch_changes_follows_the_pages_to_a_short_page(provider, fake_yclients):
    fake_yclients.records = make_records(120)

    pages = list(provider.fetch_changes(SINCE, UNTIL))

    assert [len(page) for page in pages] == [50, 50, 20]
    assert [event.external_id for page in pages for event in page] == [f"record:{700000000 + n}" for n in range(120)]
    assert [request.query["page"] for request in fake_yclients.requests] == ["1", "2", "3"]
    first = fake_yclients.requests[0].query
    assert first == {
        "changed_after": "2025-07-13T09:00:00",  # the company's local time (Moscow)
        "changed_before": "2025-07-13T15:00:00",
        "with_deleted": "1",
        "count": "50",
        "page": "1",
    }


def test_fetch_changes_stops_when_the_total_is_reached(provider, fake_yclients):
    fake_yclients.records = make_records(100)

    events = all_events(provider)

    assert len(events) == 100
    assert len(fake_yclients.requests) == 2  # no third, empty page


def test_a_paid_attended_record_is_a_purchase_and_an_unpaid_one_a_refund(provider):
    paid, unpaid = all_events(provider)  # records_list_page1.json

    assert paid.kind == CrmEvent.PURCHASE
    assert paid.external_id == "record:596792980"
    assert paid.amount == Decimal("4000.00")
    assert paid.phone == "+79161234567"
    assert paid.customer_name == "Вячеслав"
    assert paid.occurred_at == datetime(2025, 7, 13, 9, 10, tzinfo=UTC)
    assert unpaid.kind == CrmEvent.REFUND
    assert (unpaid.external_id, unpaid.refund_id) == ("record:596792981", "record:596792981:unpaid")
    assert unpaid.amount is None


def test_a_paid_record_without_a_client_is_a_purchase_without_a_phone(provider, fake_yclients):
    (record,) = make_records(1)
    record["client"] = None
    fake_yclients.records = [record]

    (event,) = all_events(provider)

    assert event.kind == CrmEvent.PURCHASE
    assert event.phone == ""
    assert event.amount == Decimal("4000.00")


def test_the_amount_adds_services_and_goods(provider, fake_yclients):
    (record,) = make_records(1)
    service = record["services"][0]
    record["services"] = [
        {**service, "cost_to_pay": 3600, "cost": 4000},
        {key: value for key, value in service.items() if key != "cost_to_pay"} | {"cost": "1 500,50"},
    ]
    record["goods_transactions"] = [{"id": "2168657", "amount": "-1.000000000", "price": "15.00", "cost": "12.00"}]
    fake_yclients.records = [record]

    (event,) = all_events(provider)

    assert event.amount == Decimal("5112.50")


def test_a_deleted_record_is_a_refund(provider, fake_yclients):
    (record,) = make_records(1)
    record["deleted"] = True
    fake_yclients.records = [record]

    (event,) = all_events(provider)

    assert event.kind == CrmEvent.REFUND
    assert (event.external_id, event.refund_id) == ("record:700000000", "record:700000000:deleted")


def test_an_unreadable_record_is_set_aside_not_the_sync(provider, fake_yclients):
    broken, fine = make_records(2)
    broken["services"][0]["cost_to_pay"] = "a lot"
    fake_yclients.records = [broken, fine]

    first, second = all_events(provider)

    assert first.kind == CrmEvent.IGNORED
    assert first.external_id == "record:700000000"
    assert second.kind == CrmEvent.PURCHASE


# --- Webhooks --------------------------------------------------------------------------------------


def test_webhook_record_create_not_yet_paid_is_an_unpaid_refund(provider):
    (event,) = provider.parse_webhook(fixture_body("webhook_record_create.json"), "application/json")

    assert event.kind == CrmEvent.REFUND
    assert (event.external_id, event.refund_id) == ("record:596792980", "record:596792980:unpaid")


def test_webhook_record_update_paid_is_the_same_purchase_as_a_sync(provider):
    (event,) = provider.parse_webhook(fixture_body("webhook_record_update.json"), "application/json")
    synced = all_events(provider)[0]

    assert event.kind == CrmEvent.PURCHASE
    assert event == synced
    assert (event.external_id, event.amount, event.phone) == ("record:596792980", Decimal("4000.00"), "+79161234567")
    assert event.occurred_at == datetime(2025, 7, 13, 9, 10, tzinfo=UTC)


def test_webhook_record_delete_is_the_deleted_refund(provider):
    (event,) = provider.parse_webhook(fixture_body("webhook_record_delete.json"), "application/json")

    assert event.kind == CrmEvent.REFUND
    assert (event.external_id, event.refund_id) == ("record:596792980", "record:596792980:deleted")


def test_webhook_finances_operation_of_a_visit_is_counted_with_the_visit(yclients_settings):
    provider = make_provider(company_id="28103")

    (event,) = provider.parse_webhook(fixture_body("webhook_finances_operation_create.json"), "application/json")

    assert event.kind == CrmEvent.IGNORED
    assert event.reason == "counted with its visit record"


def test_webhook_finances_operation_without_a_visit_is_a_purchase(yclients_settings):
    provider = make_provider(company_id="28103")
    body = webhook("webhook_finances_operation_create.json", record_id=0, visit_id=0)

    (event,) = provider.parse_webhook(body, "application/json")

    assert event.kind == CrmEvent.PURCHASE
    assert event.external_id == "finance:199254095"
    assert event.amount == Decimal("100.00")
    assert event.phone == "+79996373955"
    assert event.occurred_at == datetime(2020, 9, 21, 8, 30, tzinfo=UTC)


@pytest.mark.parametrize("amount", [0, -100])
def test_webhook_finances_operation_without_income_is_ignored(yclients_settings, amount):
    provider = make_provider(company_id="28103")
    body = webhook("webhook_finances_operation_create.json", record_id=0, amount=amount)

    (event,) = provider.parse_webhook(body, "application/json")

    assert event.kind == CrmEvent.IGNORED


def test_webhook_of_another_company_is_ignored(provider):
    (event,) = provider.parse_webhook(fixture_body("webhook_finances_operation_create.json"), "application/json")

    assert event.kind == CrmEvent.IGNORED
    assert "28103" in event.reason


def test_webhook_of_another_resource_is_ignored(provider):
    payload = load_fixture("webhook_record_update.json")
    payload["resource"] = "client"

    (event,) = provider.parse_webhook(json.dumps(payload).encode(), "application/json")

    assert event.kind == CrmEvent.IGNORED
    assert event.external_id == "client:596792980"


def record_without(key: str) -> bytes:
    payload = load_fixture("webhook_record_update.json")
    del payload[key]
    return json.dumps(payload).encode()


def record_with_data(data) -> bytes:
    payload = load_fixture("webhook_record_update.json")
    payload["data"] = data
    return json.dumps(payload).encode()


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'"record"',
        record_without("resource"),
        record_without("data"),
        record_with_data("596792980"),
        record_with_data({**copy.deepcopy(load_fixture("webhook_record_update.json")["data"]), "datetime": "soon"}),
    ],
)
def test_unreadable_webhooks_are_rejected(provider, body):
    with pytest.raises(WebhookRejected):
        provider.parse_webhook(body, "application/json")


def test_check_webhook_accepts_any_headers(provider):
    provider.check_webhook({})  # YCLIENTS sends no credential: the URL's secret is the check


# --- Webhook registration --------------------------------------------------------------------------


def test_register_webhook_adds_our_url_and_keeps_the_others(provider, fake_yclients):
    hooks = "/hooks_settings/4564"
    ours = f"https://svoykrug.example/api/v1/integrations/{provider.integration.pk}/webhook/"
    fake_yclients.hooks["urls"].append(ours + "old-secret/")

    assert provider.register_webhook(ours + "new-secret/") is True

    get, post = fake_yclients.requests
    assert [(get.method, get.path), (post.method, post.path)] == [("GET", hooks), ("POST", hooks)]
    assert post.json["urls"] == ["https://dev.tools.test.com/test/Hooks", ours + "new-secret/"]
    assert (post.json["active"], post.json["record"], post.json["finances_operation"]) == (1, 1, 1)
    assert post.json["client"] == 1  # the other switches are kept
