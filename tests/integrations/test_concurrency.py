"""One visit heard of many times at once, on PostgreSQL with real connections (one per thread):
ten deliveries of the same webhook through the endpoint, then a sync, make one purchase; ten
deliveries of its deletion make one refund."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from django.test import Client

from integrations import services
from integrations.models import CrmRecord, WebhookDelivery
from loyalty.models import BonusAccount, LedgerEntry, Refund, Transaction
from loyalty.selectors import ledger_mismatches
from tests.integrations.support import PHONE, D, recent, yclients_record, yclients_webhook

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

TIMES = 10


def post_at_once(path: str, body: bytes) -> list:
    """POST the body TIMES times from TIMES threads released together, each with its own connection."""
    start = threading.Barrier(TIMES)

    def post(_index):
        try:
            start.wait()
            return Client().post(path, data=body, content_type="application/json")
        except Exception as exc:  # what each thread got is what the test counts
            return exc
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=TIMES) as pool:
        return list(pool.map(post, range(TIMES)))


def statuses(responses) -> list:
    return [getattr(response, "status_code", response) for response in responses]


@pytest.fixture
def visit():
    return yclients_record(596792980, at=recent(days=1), cost=4000)


def test_the_same_visit_by_webhook_ten_times_at_once_and_by_sync_is_one_purchase(tiers, yclients, yclients_api, visit):
    responses = post_at_once(yclients.webhook_path(), yclients_webhook(visit))

    assert statuses(responses) == [200] * TIMES, [r for r in responses if getattr(r, "status_code", 0) != 200]
    assert len({response.json()["delivery_id"] for response in responses}) == TIMES
    deliveries = WebhookDelivery.objects.all()
    assert sorted(deliveries.values_list("status", "attempts")) == [("processed", 1)] * TIMES
    counts = [delivery.result["counts"] for delivery in deliveries]
    assert sorted(counts, key=str) == [{"duplicate": 1}] * (TIMES - 1) + [{"recorded": 1}]

    yclients_api.records = [visit]
    outcome = services.sync_integration(yclients)

    assert outcome.counts == {"duplicate": 1}
    (purchase,) = Transaction.objects.all()
    assert (purchase.external_id, purchase.source, purchase.gross_amount) == (
        "yclients:record:596792980",
        "webhook",
        D(4000),
    )
    (accrual,) = LedgerEntry.objects.filter(kind=LedgerEntry.Kind.ACCRUAL)
    assert (accrual.transaction, accrual.amount) == (purchase, D(200))
    assert LedgerEntry.objects.count() == 1
    account = BonusAccount.objects.get(user__phone=PHONE)
    assert account.balance == accrual.amount
    record = CrmRecord.objects.get()
    assert (record.status, record.transaction, record.times_seen, record.via) == (
        "recorded",
        purchase,
        TIMES + 1,
        "sync",
    )
    assert ledger_mismatches() == []


def test_the_deletion_of_a_visit_delivered_ten_times_at_once_is_one_refund(tiers, yclients, visit):
    first = Client().post(yclients.webhook_path(), data=yclients_webhook(visit), content_type="application/json")
    assert first.status_code == 200
    assert Transaction.objects.count() == 1

    responses = post_at_once(yclients.webhook_path(), yclients_webhook(visit, status="delete"))

    assert statuses(responses) == [200] * TIMES
    deletions = WebhookDelivery.objects.filter(body__contains='"status": "delete"')
    assert sorted(deletions.values_list("status", flat=True)) == ["processed"] * TIMES
    counts = [delivery.result["counts"] for delivery in deletions]
    assert sorted(counts, key=str) == [{"duplicate": 1}] * (TIMES - 1) + [{"refunded": 1}]
    (refund,) = Refund.objects.all()
    assert (refund.refund_id, refund.amount, refund.accrual_reversed) == (
        "yclients:record:596792980:deleted",
        D(4000),
        D(200),
    )
    purchase = Transaction.objects.get()
    assert (purchase.status, purchase.refunded_amount) == ("refunded", D(4000))
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.REFUND_REVERSAL).count() == 1
    assert BonusAccount.objects.get(user__phone=PHONE).balance == D(0)
    refund_record = CrmRecord.objects.get(kind=CrmRecord.Kind.REFUND)
    assert (refund_record.status, refund_record.times_seen) == ("recorded", TIMES)
    assert ledger_mismatches() == []


def test_workers_refreshing_one_amocrm_token_at_once_spend_the_refresh_token_once(shop, amocrm_api):
    """amoCRM's refresh tokens work once: four workers finding the access token expired at
    the same moment make one refresh; the others wait for it and use the new pair."""
    from datetime import timedelta

    from django.utils import timezone

    from integrations.models import CRMIntegration
    from integrations.providers import get_provider
    from tests.factories import CRMIntegrationFactory

    integration = CRMIntegrationFactory(
        business=shop,
        provider="amocrm",
        config={"subdomain": "example", "base_url": amocrm_api.url},
        credentials={
            "access_token": "access-0",
            "refresh_token": "refresh-0",
            "expires_at": (timezone.now() - timedelta(minutes=1)).isoformat(),
        },
    )
    amocrm_api.refresh_tokens.add("refresh-0")
    workers = 4
    start = threading.Barrier(workers)

    def connect(_index):
        try:
            provider = get_provider(CRMIntegration.objects.get(pk=integration.pk))
            start.wait()
            return provider.test_connection()
        except Exception as exc:
            return exc
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(connect, range(workers)))

    assert all(isinstance(result, str) for result in results), results
    assert len(amocrm_api.token_requests()) == 1
    stored = CRMIntegration.objects.get(pk=integration.pk).credentials
    assert (stored["access_token"], stored["refresh_token"]) == ("access-1", "refresh-1")
