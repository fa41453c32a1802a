"""`POST /api/v1/integrations/<id>/webhook/<secret>/` with the providers' own bodies: stored as
they came, processed by the (eager) task into purchases with their accruals; refused without
storing anything when it is not for us; rejected (and kept) when it cannot be read."""

import uuid
from datetime import datetime
from decimal import Decimal

import pytest
from celery.exceptions import Retry

from integrations import services
from integrations.models import CrmRecord, WebhookDelivery
from loyalty.models import LedgerEntry, Transaction
from loyalty.selectors import ledger_mismatches
from tests.factories import CRMIntegrationFactory
from tests.fakes.amocrm import CONTACT_ID, load_text
from tests.integrations.support import (
    AMO_LEAD,
    IIKO_DELIVERY,
    IIKO_TABLE_ORDER,
    MOSCOW,
    ONEC_SALE,
    PHONE,
    YCLIENTS_RECORD,
    D,
    accruals,
    as_body,
    balance_of,
    fixture_bytes,
    fixture_json,
    purchase,
)

pytestmark = pytest.mark.django_db

FORM = "application/x-www-form-urlencoded"


def accepted(response) -> WebhookDelivery:
    """The 200 answer's delivery, checked to be the one stored."""
    assert response.status_code == 200, response.content
    delivery = WebhookDelivery.objects.get(pk=response.json()["delivery_id"])
    assert response.json() == {"status": "accepted", "delivery_id": delivery.pk}
    return delivery


def assert_purchase(external_id, *, amount, accrued, occurred_at, via="webhook", phone=PHONE):
    txn = purchase(external_id)
    assert (txn.gross_amount, txn.paid_amount, txn.bonuses_accrued) == (D(amount), D(amount), D(accrued))
    assert (txn.source, txn.customer.phone, txn.status) == (via, phone, Transaction.Status.COMPLETED)
    assert txn.occurred_at == occurred_at
    entry = LedgerEntry.objects.get(transaction=txn, kind=LedgerEntry.Kind.ACCRUAL)
    assert entry.amount == D(accrued)
    assert entry.account.user.phone == phone
    return txn


# --- Every provider's body, end to end --------------------------------------------------------------


def test_a_yclients_record_update_becomes_a_purchase(fixture_time, yclients, send_webhook):
    body = fixture_bytes("yclients", "webhook_record_update.json")

    delivery = accepted(send_webhook(yclients, body))

    delivery.refresh_from_db()
    assert delivery.body == body.decode("utf-8")
    assert delivery.content_type == "application/json"
    assert (delivery.status, delivery.attempts, delivery.error) == (WebhookDelivery.Status.PROCESSED, 1, "")
    assert delivery.result == {"counts": {"recorded": 1}, "notes": []}
    assert delivery.processed_at is not None
    occurred = datetime(2025, 7, 13, 12, 10, tzinfo=MOSCOW)
    txn = assert_purchase(f"yclients:{YCLIENTS_RECORD}", amount="4000.00", accrued="200.00", occurred_at=occurred)
    assert balance_of(PHONE) == D("200.00")
    record = CrmRecord.objects.get()
    assert (record.kind, record.external_id, record.status, record.transaction) == (
        "purchase",
        YCLIENTS_RECORD,
        "recorded",
        txn,
    )
    assert (record.phone, record.customer_name, record.amount, record.via) == (PHONE, "Вячеслав", D(4000), "webhook")


def test_a_yclients_record_created_unpaid_is_nothing_to_count(fixture_time, yclients, send_webhook):
    delivery = accepted(send_webhook(yclients, fixture_bytes("yclients", "webhook_record_create.json")))

    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.PROCESSED
    assert delivery.result["counts"] == {"skipped": 1}
    assert Transaction.objects.count() == 0
    assert CrmRecord.objects.count() == 0


def test_a_yclients_record_deleted_after_its_update_refunds_the_purchase(fixture_time, yclients, send_webhook):
    accepted(send_webhook(yclients, fixture_bytes("yclients", "webhook_record_update.json")))

    delivery = accepted(send_webhook(yclients, fixture_bytes("yclients", "webhook_record_delete.json")))

    delivery.refresh_from_db()
    assert (delivery.status, delivery.result["counts"]) == (WebhookDelivery.Status.PROCESSED, {"refunded": 1})
    txn = purchase(f"yclients:{YCLIENTS_RECORD}")
    assert (txn.status, txn.refunded_amount, txn.money_refunded) == ("refunded", D(4000), D(4000))
    (refund,) = txn.refunds.all()
    assert (refund.refund_id, refund.amount, refund.accrual_reversed) == (
        f"yclients:{YCLIENTS_RECORD}:deleted",
        D(4000),
        D(200),
    )
    reversal = LedgerEntry.objects.get(kind=LedgerEntry.Kind.REFUND_REVERSAL)
    assert reversal.amount == D("-200.00")
    assert balance_of(PHONE) == D(0)
    refund_record = CrmRecord.objects.get(kind=CrmRecord.Kind.REFUND)
    assert (refund_record.external_id, refund_record.status, refund_record.transaction) == (
        f"{YCLIENTS_RECORD}:deleted",
        "recorded",
        txn,
    )
    assert ledger_mismatches() == []

    again = accepted(send_webhook(yclients, fixture_bytes("yclients", "webhook_record_delete.json")))

    again.refresh_from_db()
    assert again.result["counts"] == {"duplicate": 1}
    assert txn.refunds.count() == 1
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.REFUND_REVERSAL).count() == 1
    refund_record.refresh_from_db()
    assert refund_record.times_seen == 2


def test_a_yclients_finance_operation_of_a_visit_or_another_company_is_ignored(fixture_time, yclients, send_webhook):
    body = fixture_bytes("yclients", "webhook_finances_operation_create.json")

    delivery = accepted(send_webhook(yclients, body))

    delivery.refresh_from_db()
    assert delivery.body == body.decode("utf-8")
    assert delivery.status == WebhookDelivery.Status.PROCESSED
    assert delivery.result["counts"] == {"ignored": 1}
    (note,) = delivery.result["notes"]
    assert note == "finances_operation:199254095: for company 28103, not the connected company 4564"
    assert Transaction.objects.count() == 0


def test_a_yclients_sale_without_a_visit_is_a_purchase_of_its_own(fixture_time, yclients, send_webhook):
    payload = fixture_json("yclients", "webhook_finances_operation_create.json")
    payload["company_id"] = 4564
    payload["data"].update(record_id=0, visit_id=0, date="2026-02-14T12:30:00+0400")

    accepted(send_webhook(yclients, as_body(payload)))

    occurred = datetime(2026, 2, 14, 11, 30, tzinfo=MOSCOW)
    assert_purchase(
        "yclients:finance:199254095", amount="100.00", accrued="5.00", occurred_at=occurred, phone="+79996373955"
    )


def test_an_iiko_table_order_closed_with_the_auth_token_is_a_purchase(fixture_time, iiko, send_webhook):
    body = fixture_bytes("iiko", "webhook_table_order_closed.json")

    delivery = accepted(send_webhook(iiko, body, Authorization=iiko.webhook_secret))

    delivery.refresh_from_db()
    assert (delivery.body, delivery.status) == (body.decode(), WebhookDelivery.Status.PROCESSED)
    occurred = datetime(2026, 2, 14, 12, 35, tzinfo=MOSCOW)
    assert_purchase(f"iiko:{IIKO_TABLE_ORDER}", amount="1450.00", accrued="72.50", occurred_at=occurred)


def test_an_iiko_delivery_closed_with_a_bearer_auth_token_is_a_purchase(fixture_time, iiko, send_webhook):
    body = fixture_bytes("iiko", "webhook_delivery_order_closed.json")

    accepted(send_webhook(iiko, body, Authorization=f"Bearer {iiko.webhook_secret}"))

    occurred = datetime(2026, 2, 14, 13, 26, tzinfo=MOSCOW)
    assert_purchase(f"iiko:{IIKO_DELIVERY}", amount="2100.00", accrued="105.00", occurred_at=occurred)
    assert balance_of(PHONE) == D("105.00")


def test_an_iiko_error_event_is_accepted_and_changes_nothing(fixture_time, iiko, send_webhook):
    body = fixture_bytes("iiko", "webhook_delivery_order_error.json")

    delivery = accepted(send_webhook(iiko, body, Authorization=iiko.webhook_secret))

    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.PROCESSED
    assert delivery.result == {
        "counts": {"ignored": 1},
        "notes": ["order:dddd2222-2222-3333-4444-555566667777: iiko reported DeliveryOrderError: Product not found"],
    }
    assert Transaction.objects.count() == 0


@pytest.mark.parametrize("authorization", [None, "wrong-token", "Bearer wrong-token", ""])
def test_an_iiko_webhook_without_our_auth_token_is_not_found_and_not_stored(iiko, send_webhook, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}

    response = send_webhook(iiko, fixture_bytes("iiko", "webhook_table_order_closed.json"), **headers)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert WebhookDelivery.objects.count() == 0
    assert Transaction.objects.count() == 0


def test_an_amocrm_lead_won_is_completed_from_amocrm_and_becomes_a_purchase(
    fixture_time, amocrm, amocrm_api, send_webhook
):
    body = load_text("webhook_lead_status.form.txt").encode()

    delivery = accepted(send_webhook(amocrm, body, FORM))

    delivery.refresh_from_db()
    assert (delivery.body, delivery.content_type) == (body.decode(), FORM)
    assert (delivery.status, delivery.result["counts"]) == (WebhookDelivery.Status.PROCESSED, {"recorded": 1})
    occurred = datetime(2026, 2, 15, 9, 30, tzinfo=MOSCOW)
    assert_purchase(f"amocrm:lead:{AMO_LEAD}", amount="22500.00", accrued="1125.00", occurred_at=occurred)
    assert [(r.path, r.bearer) for r in amocrm_api.api_requests()] == [
        (f"/api/v4/leads/{AMO_LEAD}", "access-0"),
        (f"/api/v4/contacts/{CONTACT_ID}", "access-0"),
    ]
    assert CrmRecord.objects.get().customer_name == "Иван Петров"


def test_a_1c_sale_event_is_a_purchase(fixture_time, onec, send_webhook):
    body = fixture_bytes("onec", "http_service_sale_event.json")

    delivery = accepted(send_webhook(onec, body))

    delivery.refresh_from_db()
    assert (delivery.body, delivery.status) == (body.decode(), WebhookDelivery.Status.PROCESSED)
    occurred = datetime(2026, 2, 14, 12, 35, tzinfo=MOSCOW)
    assert_purchase(f"onec:{ONEC_SALE}", amount="1450.00", accrued="72.50", occurred_at=occurred)
    assert ledger_mismatches() == []


# --- Not for us: 404, nothing stored ---------------------------------------------------------------


def test_an_unknown_integration_is_not_found(client, yclients):
    response = client.post(
        f"/api/v1/integrations/{uuid.uuid4()}/webhook/{yclients.webhook_secret}/",
        data=fixture_bytes("yclients", "webhook_record_update.json"),
        content_type="application/json",
    )

    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "Not found."}}
    assert WebhookDelivery.objects.count() == 0


def test_a_wrong_secret_is_not_found(yclients, send_webhook):
    other = CRMIntegrationFactory(provider="yclients")

    for secret in ("wrong-secret", other.webhook_secret, yclients.webhook_secret[:-1], "секрет"):
        response = send_webhook(yclients, fixture_bytes("yclients", "webhook_record_update.json"), secret=secret)
        assert response.status_code == 404

    assert WebhookDelivery.objects.count() == 0


def test_an_inactive_integration_is_not_found(fixture_time, yclients, send_webhook):
    yclients.is_active = False
    yclients.save()

    response = send_webhook(yclients, fixture_bytes("yclients", "webhook_record_update.json"))

    assert response.status_code == 404
    assert WebhookDelivery.objects.count() == 0
    assert Transaction.objects.count() == 0


# --- Unreadable bodies: 400, kept as rejected ------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "body", "content_type", "message"),
    [
        ("yclients", b"<xml>not json</xml>", "application/json", "The body is not JSON"),
        ("yclients", b'[{"company_id": 4564}]', "application/json", "YCLIENTS webhook: expected an object with"),
        ("iiko", b'{"eventType": "TableOrderUpdate"}', "application/json", "iiko webhook: expected a JSON array"),
        ("amocrm", b'{"leads": {"status": []}}', FORM, "amoCRM: the body is JSON"),
        ("amocrm", b"account[id]=17769199", FORM, "amoCRM: the body has no leads section"),
        ("amocrm", b"\xff\xfe not text", FORM, "amoCRM: the body is not UTF-8 text"),
        ("onec", b'"sale.closed"', "application/json", "1C: the body must be a JSON object or an array"),
        ("onec", as_body({"event": "sale.closed", "total": 10}), "application/json", "1C: event [0]: `document_id`"),
    ],
)
def test_an_unreadable_body_is_rejected_with_400_and_kept(
    request, send_webhook, provider, body, content_type, message, amocrm_api
):
    integration = request.getfixturevalue(provider)
    headers = {"Authorization": integration.webhook_secret} if provider == "iiko" else {}

    response = send_webhook(integration, body, content_type, **headers)

    assert response.status_code == 400
    delivery = WebhookDelivery.objects.get()
    error = response.json()["error"]
    assert (error["code"], error["delivery_id"]) == ("bad_webhook", delivery.pk)
    assert error["message"].startswith(message), error["message"]
    assert (delivery.status, delivery.error) == (WebhookDelivery.Status.REJECTED, error["message"])
    assert delivery.body == body.decode("utf-8", errors="replace")
    assert delivery.attempts == 0  # never queued
    assert Transaction.objects.count() == 0
    assert amocrm_api.requests == []


def test_a_body_over_the_limit_is_too_large(settings, yclients, send_webhook):
    body = fixture_bytes("yclients", "webhook_record_update.json")
    settings.INTEGRATIONS_WEBHOOK_MAX_BYTES = len(body) - 1

    response = send_webhook(yclients, body)

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"
    assert WebhookDelivery.objects.count() == 0


def test_a_body_at_the_limit_is_taken(settings, fixture_time, yclients, send_webhook):
    body = fixture_bytes("yclients", "webhook_record_update.json")
    settings.INTEGRATIONS_WEBHOOK_MAX_BYTES = len(body)

    accepted(send_webhook(yclients, body))


def test_get_is_not_allowed(client, yclients):
    response = client.get(f"/api/v1/integrations/{yclients.pk}/webhook/{yclients.webhook_secret}/")

    assert response.status_code == 405
    assert WebhookDelivery.objects.count() == 0


# --- Processing failures: never the endpoint's 500 ---------------------------------------------------


def test_the_endpoint_answers_before_processing_so_a_crm_down_fails_the_delivery_only(
    fixture_time, client, amocrm, amocrm_api, django_capture_on_commit_callbacks
):
    amocrm_api.fail_status = 500
    body = load_text("webhook_lead_status.form.txt").encode()

    with django_capture_on_commit_callbacks() as queued:
        response = client.post(amocrm.webhook_path(), data=body, content_type=FORM)

    delivery = accepted(response)
    assert (delivery.status, len(queued)) == (WebhookDelivery.Status.RECEIVED, 1)
    with pytest.raises(Retry):  # the task (run here as a worker would) asks to be retried later
        queued[0]()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (WebhookDelivery.Status.FAILED, 1)
    assert delivery.error.startswith("amoCRM: server error 500 from 127.0.0.1:")
    assert Transaction.objects.count() == 0

    amocrm_api.fail_status = None
    services.process_delivery(delivery.pk)

    delivery.refresh_from_db()
    assert (delivery.status, delivery.error, delivery.attempts) == ("processed", "", 2)
    assert delivery.result["counts"] == {"recorded": 1}
    assert purchase(f"amocrm:lead:{AMO_LEAD}").gross_amount == D(22500)
    assert accruals() == [D("1125.00")]


def unavailable(response) -> WebhookDelivery:
    """A 503 (never a 500): the body is stored, the CRM is asked to send it again."""
    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "unavailable"
    return WebhookDelivery.objects.get()


@pytest.mark.django_db(transaction=True)
def test_with_eager_celery_a_crm_down_is_a_503_and_a_failed_delivery(tiers, fixture_time, client, amocrm, amocrm_api):
    """Without a broker (development) the task runs inside the request: its failure reaches the
    endpoint, which answers 503, never 500; the delivery is stored and failed."""
    amocrm_api.fail_status = 500

    response = client.post(
        amocrm.webhook_path(), data=load_text("webhook_lead_status.form.txt").encode(), content_type=FORM
    )

    delivery = unavailable(response)
    assert (delivery.status, delivery.attempts) == (WebhookDelivery.Status.FAILED, 1)
    assert delivery.error.startswith("amoCRM: server error 500 from 127.0.0.1:")

    amocrm_api.fail_status = None
    assert services.process_delivery(delivery.pk).status == "processed"
    assert purchase(f"amocrm:lead:{AMO_LEAD}").gross_amount == D(22500)


@pytest.mark.django_db(transaction=True)
def test_an_unexpected_error_in_processing_fails_the_delivery_and_is_no_500(
    tiers, fixture_time, client, onec, monkeypatch
):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(services, "apply_events", broken)

    response = client.post(
        onec.webhook_path(), data=fixture_bytes("onec", "http_service_sale_event.json"), content_type="application/json"
    )

    delivery = unavailable(response)
    assert (delivery.status, delivery.error) == (WebhookDelivery.Status.FAILED, "internal error: RuntimeError")
    monkeypatch.undo()

    services.process_delivery(delivery.pk)

    delivery.refresh_from_db()
    assert delivery.status == WebhookDelivery.Status.PROCESSED
    assert purchase(f"onec:{ONEC_SALE}").bonuses_accrued == Decimal("72.50")
