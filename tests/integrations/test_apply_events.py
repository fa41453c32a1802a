"""What a CRM's events do to the circle (`services.apply_events`): each record is kept with
what became of it; a purchase is recorded once however often it is heard of; refunds undo
what was counted and nothing else."""

from decimal import Decimal

import pytest
from django.utils.translation import gettext

from integrations import services
from integrations.models import CrmRecord
from integrations.providers.base import ignored, purchase, refund
from loyalty import services as loyalty
from loyalty.models import LedgerEntry, Refund, Transaction
from loyalty.selectors import ledger_mismatches
from tests.factories import CRMIntegrationFactory
from tests.integrations.support import (
    PHONE,
    D,
    accruals,
    balance_of,
    fixture_bytes,
    onec_return,
    onec_sale,
    recent,
)
from tests.integrations.support import as_body as json_body
from tests.integrations.support import purchase as txn_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def crm(shop):
    return CRMIntegrationFactory(business=shop, provider="yclients", config={"company_id": "4564"})


@pytest.fixture
def when():
    return recent(days=2)


def apply(integration, *events, via="webhook") -> services.Outcome:
    return services.apply_events(integration, list(events), via=via)


def record(external_id="record:1", kind=CrmRecord.Kind.PURCHASE) -> CrmRecord:
    return CrmRecord.objects.get(kind=kind, external_id=external_id)


# --- Purchases ---------------------------------------------------------------------------------------


def test_a_purchase_is_recorded_with_its_accrual(crm, when):
    outcome = apply(crm, purchase("record:1", D(1000), when, phone="8 (916) 123-45-67", customer_name="Вячеслав"))

    assert outcome.counts == {"recorded": 1}
    txn = txn_of("yclients:record:1")
    assert (txn.gross_amount, txn.bonuses_accrued, txn.source, txn.occurred_at) == (D(1000), D(50), "webhook", when)
    assert txn.customer.phone == PHONE
    assert outcome.transactions == [txn]
    assert (record().status, record().transaction, record().times_seen, record().reason) == ("recorded", txn, 1, "")
    assert balance_of(PHONE) == D(50)


def test_a_purchase_without_a_phone_is_kept_unmatched(crm, when):
    outcome = apply(crm, purchase("record:1", D(1000), when, phone=""))

    assert outcome.counts == {"unmatched": 1}
    assert outcome.reasons == [("record:1", "the CRM has no phone for this customer")]
    assert Transaction.objects.count() == 0
    kept = record()
    assert (kept.status, kept.amount, kept.occurred_at, kept.transaction) == ("unmatched", D(1000), when, None)


def test_a_purchase_with_an_invalid_phone_is_unmatched_with_the_reason(crm, when):
    outcome = apply(crm, purchase("record:1", D(1000), when, phone="12-34"))

    assert outcome.counts == {"unmatched": 1}
    assert (record().status, record().reason, record().phone) == (
        "unmatched",
        "the phone '12-34' is not a valid number",
        "12-34",
    )
    assert Transaction.objects.count() == 0


def test_an_unmatched_record_heard_again_with_a_phone_is_recorded(crm, when):
    apply(crm, purchase("record:1", D(1000), when, phone=""))

    outcome = apply(crm, purchase("record:1", D(1000), when, phone=PHONE), via="sync")

    assert outcome.counts == {"recorded": 1}
    txn = txn_of("yclients:record:1")
    assert txn.source == "sync"
    kept = record()
    assert (kept.status, kept.reason, kept.transaction, kept.phone, kept.via, kept.times_seen) == (
        "recorded",
        "",
        txn,
        PHONE,
        "sync",
        2,
    )
    assert CrmRecord.objects.count() == 1


@pytest.mark.parametrize("amount", [D(0), None, D("-100")])
def test_a_purchase_of_no_money_is_ignored(crm, when, amount):
    outcome = apply(crm, purchase("record:1", amount, when, phone=PHONE))

    assert outcome.counts == {"ignored": 1}
    assert (record().status, record().reason) == ("ignored", "no money paid")
    assert Transaction.objects.count() == 0


def test_a_purchase_too_old_is_rejected_with_the_reason(settings, crm):
    too_old = recent(days=settings.LOYALTY_MAX_BACKDATE_DAYS + 1)

    outcome = apply(crm, purchase("record:1", D(1000), too_old, phone=PHONE))

    assert outcome.counts == {"rejected": 1}
    assert (record().status, record().reason) == ("rejected", gettext("The purchase is too old to be recorded."))
    assert Transaction.objects.count() == 0


def test_the_same_purchase_twice_is_one_purchase(crm, when):
    event = purchase("record:1", D(1000), when, phone=PHONE)

    first = apply(crm, event)
    second = apply(crm, event, via="sync")

    assert (first.counts, second.counts) == ({"recorded": 1}, {"duplicate": 1})
    assert Transaction.objects.count() == 1
    assert accruals() == [D(50)]
    assert balance_of(PHONE) == D(50)
    assert (record().times_seen, record().status) == (2, "recorded")
    assert second.transactions == first.transactions


def test_a_purchase_changed_after_it_was_counted_keeps_its_first_amount(crm, when):
    apply(crm, purchase("record:1", D(1000), when, phone=PHONE))

    outcome = apply(crm, purchase("record:1", D("1200.50"), when, phone=PHONE))

    assert outcome.counts == {"changed": 1}
    txn = txn_of("yclients:record:1")
    assert (txn.gross_amount, txn.bonuses_accrued) == (D(1000), D(50))
    assert outcome.transactions == [txn]
    kept = record()
    assert kept.status == "recorded"
    assert kept.transaction == txn
    assert kept.reason == "changed in the CRM after it was counted (amount 1000.00 → 1200.50); the first version stands"
    assert kept.times_seen == 2
    assert accruals() == [D(50)]


def test_a_counted_record_stays_counted_when_heard_of_without_its_phone(crm, when):
    apply(crm, purchase("record:1", D(1000), when, phone=PHONE))

    outcome = apply(crm, purchase("record:1", D(1000), when, phone=""))

    assert outcome.counts == {"unmatched": 1}
    kept = record()
    assert (kept.status, kept.transaction, kept.phone) == ("recorded", txn_of("yclients:record:1"), PHONE)


def test_one_bad_event_does_not_stop_the_others(crm, when):
    outcome = apply(
        crm,
        purchase("record:1", D(100), when, phone=""),
        purchase("record:2", D(200), when, phone=PHONE),
        ignored("client:3", "client events are not sales"),
        purchase("record:4", D(0), when, phone=PHONE),
        purchase("record:5", D(500), when, phone=PHONE),
    )

    assert outcome.counts == {"unmatched": 1, "recorded": 2, "ignored": 2}
    assert sorted(Transaction.objects.values_list("external_id", flat=True)) == [
        "yclients:record:2",
        "yclients:record:5",
    ]
    assert outcome.as_dict() == {
        "counts": {"unmatched": 1, "recorded": 2, "ignored": 2},
        "notes": [
            "record:1: the CRM has no phone for this customer",
            "client:3: client events are not sales",
            "record:4: no money paid",
        ],
    }


def test_ids_are_the_providers_so_the_partner_apis_own_id_does_not_collide(shop, crm, when):
    own = loyalty.record_transaction(business=shop, external_id="record:1", amount=D(300), phone=PHONE).transaction
    iiko = CRMIntegrationFactory(business=shop, provider="iiko")

    assert apply(crm, purchase("record:1", D(1000), when, phone=PHONE)).counts == {"recorded": 1}
    assert apply(iiko, purchase("record:1", D(2000), when, phone=PHONE)).counts == {"recorded": 1}

    assert sorted(Transaction.objects.values_list("external_id", "gross_amount")) == [
        ("iiko:record:1", D(2000)),
        ("record:1", D(300)),
        ("yclients:record:1", D(1000)),
    ]
    own.refresh_from_db()
    assert (own.gross_amount, own.source) == (D(300), "api")
    assert CrmRecord.objects.filter(external_id="record:1").count() == 2  # one per integration


# --- Refunds -----------------------------------------------------------------------------------------


def test_a_refund_of_a_counted_purchase_refunds_it_once(crm, when):
    apply(crm, purchase("record:1", D(1000), when, phone=PHONE))
    cancel = refund("record:1", refund_id="record:1:deleted", reason="deleted in YCLIENTS")

    first = apply(crm, cancel)
    again = apply(crm, cancel, via="sync")

    assert (first.counts, again.counts) == ({"refunded": 1}, {"duplicate": 1})
    txn = txn_of("yclients:record:1")
    assert (txn.status, txn.refunded_amount, txn.money_refunded) == ("refunded", D(1000), D(1000))
    (only,) = Refund.objects.all()
    assert (only.refund_id, only.amount, only.accrual_reversed, only.unrecovered) == (
        "yclients:record:1:deleted",
        D(1000),
        D(50),
        D(0),
    )
    assert list(LedgerEntry.objects.filter(kind="refund_reversal").values_list("amount", flat=True)) == [D(-50)]
    assert balance_of(PHONE) == D(0)
    kept = record("record:1:deleted", CrmRecord.Kind.REFUND)
    assert (kept.status, kept.transaction, kept.times_seen) == ("recorded", txn, 2)
    assert record().status == "recorded"  # the purchase's own record is left as it was
    assert ledger_mismatches() == []


def test_a_second_refund_of_a_refunded_purchase_changes_nothing(crm, when):
    apply(crm, purchase("record:1", D(1000), when, phone=PHONE))
    apply(crm, refund("record:1", refund_id="record:1:deleted"))

    outcome = apply(crm, refund("record:1", refund_id="record:1:unpaid"))

    assert outcome.counts == {"duplicate": 1}
    assert outcome.reasons == [("record:1", "already refunded in full")]
    assert Refund.objects.count() == 1
    assert balance_of(PHONE) == D(0)


def test_a_refund_of_a_purchase_never_counted_is_skipped(crm):
    outcome = apply(crm, refund("record:1", refund_id="record:1:deleted"))

    assert outcome.counts == {"skipped": 1}
    assert outcome.reasons == [("record:1", "refund of a purchase never counted")]
    assert Refund.objects.count() == 0
    assert CrmRecord.objects.count() == 0


def test_a_refund_of_an_unmatched_record_closes_it(crm, when):
    apply(crm, purchase("record:1", D(1000), when, phone=""))

    outcome = apply(crm, refund("record:1", refund_id="record:1:deleted"))

    assert outcome.counts == {"closed": 1}
    assert (record().status, record().reason) == ("ignored", "cancelled in the CRM")
    assert Refund.objects.count() == 0 and Transaction.objects.count() == 0


def test_1c_returns_refund_part_of_a_sale_then_the_rest(fixture_time, onec):
    provider_events = services.get_provider(onec).parse_webhook
    sale = provider_events(json_body(onec_sale()), "application/json")
    apply(onec, *sale)

    partial = apply(onec, *provider_events(json_body(onec_return(250.0)), "application/json"))

    assert partial.counts == {"refunded": 1}
    txn = txn_of("onec:sale:5b2f8a3e-1c2d-11ef-8b4a-00155d010203")
    assert (txn.gross_amount, txn.bonuses_accrued) == (D(1450), D("72.50"))
    assert (txn.status, txn.refunded_amount, txn.money_refunded) == ("partially_refunded", D(250), D(250))
    first = Refund.objects.get()
    assert (first.refund_id, first.amount, first.money_refunded, first.accrual_reversed) == (
        "onec:return:9c1d7e52-1c2d-11ef-8b4a-00155d010203",
        D(250),
        D(250),
        D("12.50"),
    )
    assert balance_of(PHONE) == D("60.00")

    rest = apply(onec, *provider_events(json_body(onec_return(1200, document_id="ret-2")), "application/json"))

    assert rest.counts == {"refunded": 1}
    txn.refresh_from_db()
    assert (txn.status, txn.refunded_amount, txn.money_refunded) == ("refunded", D(1450), D(1450))
    assert sorted(Refund.objects.values_list("amount", "accrual_reversed")) == [(D(250), D("12.50")), (D(1200), D(60))]
    assert balance_of(PHONE) == D(0)
    assert ledger_mismatches() == []


def test_a_return_of_more_than_is_left_is_rejected_and_kept_not_a_duplicate(fixture_time, onec):
    parse = services.get_provider(onec).parse_webhook
    apply(onec, *parse(json_body(onec_sale()), "application/json"))
    apply(onec, *parse(json_body(onec_return(250.0)), "application/json"))

    outcome = apply(onec, *parse(json_body(onec_return(1300, document_id="ret-2")), "application/json"))

    too_much = gettext("This refund is larger than what is left of the purchase.")
    assert outcome.counts == {"rejected": 1}
    assert outcome.reasons == [("sale:5b2f8a3e-1c2d-11ef-8b4a-00155d010203", f"{too_much} (1200.00 left)")]
    kept = record("return:ret-2", CrmRecord.Kind.REFUND)
    assert (kept.status, kept.reason, kept.amount) == ("rejected", f"{too_much} (1200.00 left)", D(1300))
    assert Refund.objects.count() == 1
    txn = txn_of("onec:sale:5b2f8a3e-1c2d-11ef-8b4a-00155d010203")
    assert (txn.status, txn.refunded_amount) == ("partially_refunded", D(250))


def test_process_webhook_applies_a_payload_at_once(fixture_time, onec):
    """The catalogue's entry point: the payload as the CRM sends it, the first purchase touched."""
    txn = services.process_webhook(onec.business_id, onec_sale())

    assert txn == txn_of("onec:sale:5b2f8a3e-1c2d-11ef-8b4a-00155d010203")
    assert (txn.source, txn.gross_amount) == ("webhook", D(1450))
    assert services.process_webhook(onec.business_id, fixture_bytes("onec", "http_service_sale_event.json")) == txn
    assert Transaction.objects.count() == 1


def test_process_webhook_without_an_integration_says_so(shop):
    with pytest.raises(services.CRMIntegration.DoesNotExist):
        services.process_webhook(shop.pk, {"event": "sale.closed"})


def test_a_purchase_heard_again_after_its_refund_is_not_counted_again(crm, when):
    event = purchase("record:1", D(1000), when, phone=PHONE)
    apply(crm, event)
    apply(crm, refund("record:1", refund_id="record:1:deleted"))

    outcome = apply(crm, event, via="sync")

    assert outcome.counts == {"duplicate": 1}
    assert txn_of("yclients:record:1").status == "refunded"
    assert balance_of(PHONE) == Decimal(0)
    assert LedgerEntry.objects.filter(kind="accrual").count() == 1
