"""The 1C provider: the pushed contract (docs/integrations/1c.md) parsed and checked, and cheques
polled from a local fake of 1C's standard OData interface (tests/fakes/onec.py)."""

import base64
import json
import zoneinfo
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from integrations.providers import get_provider
from integrations.providers.base import (
    ProviderAuthError,
    ProviderConfigError,
    ProviderUnavailable,
    WebhookRejected,
)
from integrations.providers.onec import OneCProvider
from tests.factories import BusinessFactory, CRMIntegrationFactory
from tests.fakes.onec import ENTITY, PASSWORD, USERNAME, FakeOneC, make_cheque

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "onec"
JSON = "application/json"
MOSCOW = zoneinfo.ZoneInfo("Europe/Moscow")
REF = "5b2f8a3e-1c2d-11ef-8b4a-00155d010203"
SINCE = datetime(2026, 2, 14, 0, 0, tzinfo=MOSCOW)
UNTIL = datetime(2026, 2, 15, 0, 0, tzinfo=MOSCOW)


def sale_event(**changes) -> dict:
    event = json.loads((FIXTURES / "http_service_sale_event.json").read_text(encoding="utf-8"))
    event.update(changes)
    return event


def return_event(**changes) -> dict:
    event = {
        "event": "return.closed",
        "document_id": "9c1d7e52-1c2d-11ef-8b4a-00155d010203",
        "sale_document_id": REF,
        "date": "2026-02-15T10:00:00+03:00",
        "total": 250.0,
    }
    event.update(changes)
    return event


def body(payload) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode("utf-8")


@pytest.fixture
def fake_onec():
    fake = FakeOneC(slow_delay=1.0)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def polling(fake, *, credentials=None, **config):
    integration = CRMIntegrationFactory(
        provider="onec",
        config={"base_url": fake.url + "/retail", **config},
        credentials=credentials or {"username": USERNAME, "password": PASSWORD},
    )
    return get_provider(integration)


@pytest.fixture
def onec(db, fake_onec):
    return polling(fake_onec)


@pytest.fixture
def pushed(db):
    """An integration that 1C pushes its sales to (no OData address)."""
    return get_provider(CRMIntegrationFactory(provider="onec"))


def fetch(provider, since=SINCE, until=UNTIL):
    return list(provider.fetch_changes(since, until))


# --- Push: the contract ------------------------------------------------------------------------------


def test_the_sample_sale_is_a_purchase(pushed):
    (event,) = pushed.parse_webhook((FIXTURES / "http_service_sale_event.json").read_bytes(), JSON)
    assert isinstance(pushed, OneCProvider)
    assert (event.kind, event.external_id) == ("purchase", f"sale:{REF}")
    assert event.amount == Decimal("1450.00")
    assert event.occurred_at == datetime(2026, 2, 14, 12, 35, tzinfo=timezone(timedelta(hours=3)))
    assert event.phone == "+79161234567"
    assert not event.needs_details


def test_a_batch_of_a_sale_and_its_return(pushed):
    sale, returned = pushed.parse_webhook(body([sale_event(), return_event()]), JSON)
    assert sale.kind == "purchase"
    assert (returned.kind, returned.external_id, returned.refund_id) == (
        "refund",
        f"sale:{REF}",
        "return:9c1d7e52-1c2d-11ef-8b4a-00155d010203",
    )
    assert returned.amount == Decimal("250.00")
    assert returned.occurred_at == datetime(2026, 2, 15, 7, 0, tzinfo=UTC)


@pytest.mark.django_db
def test_a_time_without_offset_is_the_businesss_local_time():
    business = BusinessFactory(time_zone="Asia/Yekaterinburg")
    provider = get_provider(CRMIntegrationFactory(provider="onec", business=business))
    (event,) = provider.parse_webhook(body(sale_event(date="2026-02-14T12:35:00")), JSON)
    assert event.occurred_at == datetime(2026, 2, 14, 7, 35, tzinfo=UTC)


def test_a_sale_without_a_customer_or_money_is_still_read(pushed):
    event = sale_event(total=0, customer=None)
    (read,) = pushed.parse_webhook(body(event), JSON)
    assert (read.amount, read.phone) == (Decimal("0.00"), "")


def test_an_unknown_event_is_ignored(pushed):
    (event,) = pushed.parse_webhook(body({"event": "shift.closed", "document_id": "Z-1"}), JSON)
    assert (event.kind, event.external_id) == ("ignored", "Z-1")
    assert "shift.closed" in event.reason


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([sale_event(), sale_event(total=-5)], "event [1]: `total` must not be negative"),
        ([sale_event(total=None)], "event [0]: `total` is missing"),
        (sale_event(total="много"), "event [0]: `total` is not a number"),
        (sale_event(bonus_redeemed=100), "event [0]: `bonus_redeemed` must be 0"),
        (sale_event(document_id=""), "event [0]: `document_id` is missing"),
        (sale_event(document_id="x" * 65), "`document_id` is longer than 64"),
        (sale_event(date="14.02.2026"), "event [0]: `date` must be a date"),
        (sale_event(customer="+79161234567"), "`customer` must be an object"),
        ([sale_event(), return_event(sale_document_id=None)], "event [1]: `sale_document_id` is missing"),
        (return_event(total=0), "`total` of a return must be more than 0"),
        ({"document_id": "1"}, "event [0]: `event` is missing"),
        ([sale_event(), 42], "event [1] is not a JSON object"),
        ("sale", "the body must be a JSON object or an array"),
    ],
)
def test_a_body_breaking_the_contract_is_rejected_whole(pushed, payload, message):
    with pytest.raises(WebhookRejected) as caught:
        pushed.parse_webhook(body(payload), JSON)
    assert str(caught.value).startswith("1C: ")
    assert message in str(caught.value)


@pytest.mark.parametrize("raw", [b"", b"not json", b"\xff\xfe{}", b"<xml/>"])
def test_a_body_that_is_not_json_is_rejected(pushed, raw):
    with pytest.raises(WebhookRejected, match="^1C: The body is not JSON"):
        pushed.parse_webhook(raw, JSON)


def test_a_pushing_integration_has_nothing_to_poll(pushed):
    assert pushed.test_connection().startswith("1C: no OData address set")
    assert fetch(pushed) == []


# --- Poll: OData --------------------------------------------------------------------------------------


def test_connection_reads_one_cheque_with_basic_auth_in_utf8(onec, fake_onec):
    assert onec.test_connection() == f"1C: {ENTITY} at {fake_onec.url.removeprefix('http://')}"
    (request,) = fake_onec.requests
    assert request.path == f"/retail/odata/standard.odata/{ENTITY}"
    assert request.query == {"$format": "json", "$top": "1", "$select": "Ref_Key"}
    assert request.authorization == "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()


@pytest.mark.django_db
def test_a_wrong_password_is_an_auth_error(fake_onec):
    provider = polling(fake_onec, credentials={"username": USERNAME, "password": "wrong-secret"})
    with pytest.raises(ProviderAuthError) as caught:
        provider.test_connection()
    assert caught.value.message == "1C: the user name or password was refused (HTTP 401)."
    assert len(fake_onec.requests) == 1


@pytest.mark.django_db
def test_missing_credentials_are_a_config_error(fake_onec):
    with pytest.raises(ProviderConfigError):
        polling(fake_onec, credentials={"username": USERNAME}).test_connection()


def test_a_posted_cheque_is_the_same_purchase_as_its_pushed_sale(onec, fake_onec, pushed):
    (page,) = fetch(onec)
    (event,) = page
    (pushed_sale,) = pushed.parse_webhook(body(sale_event()), JSON)
    assert event.external_id == pushed_sale.external_id == f"sale:{REF}"
    assert (event.kind, event.amount, event.phone) == ("purchase", Decimal("1450.00"), "")
    assert event.occurred_at == datetime(2026, 2, 14, 12, 35, tzinfo=MOSCOW)
    (request,) = fake_onec.requests
    assert request.query == {
        "$format": "json",
        "$filter": "Date ge datetime'2026-02-14T00:00:00' and Date lt datetime'2026-02-15T00:00:00'",
        "$orderby": "Date",
        "$top": "500",
        "$skip": "0",
        "$select": "Ref_Key,Date,Posted,DeletionMark,Number,СуммаДокумента",
    }


@pytest.mark.django_db
def test_configured_amount_and_phone_fields(fake_onec):
    fake_onec.cheques = [make_cheque(СуммаОплаты=1300, ТелефонПокупателя="8 916 123-45-67")]
    provider = polling(fake_onec, amount_field="СуммаОплаты", phone_field="ТелефонПокупателя")
    ((event,),) = fetch(provider)
    assert (event.amount, event.phone) == (Decimal("1300.00"), "8 916 123-45-67")


@pytest.mark.django_db
def test_an_amount_field_1c_does_not_have_is_a_config_error(fake_onec):
    with pytest.raises(ProviderConfigError, match="check the field names"):
        fetch(polling(fake_onec, amount_field="Сумма"))


@pytest.mark.django_db
def test_a_document_1c_does_not_publish_is_a_config_error(fake_onec):
    with pytest.raises(ProviderConfigError, match="not found"):
        polling(fake_onec, document="Document_ЧекККМВозврат").test_connection()


def test_deleted_cheques_are_refunds_and_unposted_ones_are_left_alone(onec, fake_onec):
    fake_onec.cheques = [
        make_cheque(Ref_Key="a-1", DeletionMark=True, Posted=False, Date="2026-02-14T10:00:00"),
        make_cheque(Ref_Key="a-2", Posted=False, Date="2026-02-14T11:00:00"),
        make_cheque(Ref_Key="a-3", Date="2026-02-15T00:00:00"),  # outside [since, until)
    ]
    ((event,),) = fetch(onec)
    assert (event.kind, event.external_id, event.refund_id, event.amount) == (
        "refund",
        "sale:a-1",
        "sale:a-1:deleted",
        None,
    )


def test_pages_are_read_with_skip(onec, fake_onec, monkeypatch):
    monkeypatch.setattr(OneCProvider, "page_size", 2)
    fake_onec.cheques = [make_cheque(Ref_Key=f"r-{n}", Date=f"2026-02-14T1{n}:00:00") for n in range(5)]
    pages = fetch(onec)
    assert [[event.external_id for event in page] for page in pages] == [
        ["sale:r-0", "sale:r-1"],
        ["sale:r-2", "sale:r-3"],
        ["sale:r-4"],
    ]
    assert [(r.query["$top"], r.query["$skip"]) for r in fake_onec.requests] == [("2", "0"), ("2", "2"), ("2", "4")]


def test_an_unreadable_cheque_is_ignored(onec, fake_onec):
    fake_onec.cheques = [make_cheque(СуммаДокумента="n/a")]
    ((event,),) = fetch(onec)
    assert (event.kind, event.external_id) == ("ignored", f"sale:{REF}")


def test_server_errors_are_retried_then_unavailable(onec, fake_onec):
    fake_onec.fail_status = 503
    with pytest.raises(ProviderUnavailable):
        fetch(onec)
    assert len(fake_onec.requests) == 3  # INTEGRATIONS_HTTP_RETRIES = 2


def test_a_slow_answer_is_retried_then_unavailable(onec, fake_onec, settings):
    settings.INTEGRATIONS_READ_TIMEOUT_SECONDS = 0.2  # the fake answers after a second
    fake_onec.slow = True
    with pytest.raises(ProviderUnavailable):
        onec.test_connection()
    assert len(fake_onec.requests) == 3
