"""Helpers of the integrations' service tests: the providers' fixture bodies as they come,
and records built from them with the fields a test needs changed."""

import copy
import json
import zoneinfo
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from django.utils import timezone

from loyalty.models import BonusAccount, LedgerEntry, Transaction

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MOSCOW = zoneinfo.ZoneInfo("Europe/Moscow")
PHONE = "+79161234567"  # the customer of the YCLIENTS, iiko and 1C fixtures (and the amoCRM fake's contact)
# The day after the fixtures' sales of 2026-02-14 (iiko, 1C); YCLIENTS' visit of 2025-07-13 is
# within LOYALTY_MAX_BACKDATE_DAYS of it too.
FIXTURE_NOW = datetime(2026, 2, 15, 12, 0, tzinfo=MOSCOW)
YCLIENTS_RECORD = "record:596792980"
IIKO_TABLE_ORDER = "order:eeee1111-2222-3333-4444-555566667777"
IIKO_DELIVERY = "order:aaaa1111-2222-3333-4444-555566667777"
ONEC_SALE = "sale:5b2f8a3e-1c2d-11ef-8b4a-00155d010203"
AMO_LEAD = 10701093  # the lead of webhook_lead_status.form.txt


def D(value) -> Decimal:
    return Decimal(str(value))


def fixture_bytes(provider: str, name: str) -> bytes:
    return (FIXTURES / provider / name).read_bytes()


def fixture_json(provider: str, name: str):
    return json.loads(fixture_bytes(provider, name).decode("utf-8"))


def as_body(payload) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode("utf-8")


def recent(days: float = 1) -> datetime:
    """A time `days` ago, in whole seconds (as a CRM writes it)."""
    return (timezone.now() - timedelta(days=days)).replace(microsecond=0)


def yclients_record(record_id: int = 596792980, *, at: datetime | None = None, phone=PHONE, cost=4000, **changes):
    """The fixture's paid, attended visit with another id, time, phone or cost."""
    record = copy.deepcopy(fixture_json("yclients", "records_list_page1.json")["data"][0])
    local = (at or recent()).astimezone(MOSCOW)
    record.update(id=record_id, datetime=local.isoformat(), date=f"{local:%Y-%m-%d %H:%M:%S}")
    record["services"][0].update(cost=cost, cost_to_pay=cost)
    if phone is None:
        record["client"] = None
    else:
        record["client"]["phone"] = phone
    record.update(changes)
    return record


def yclients_webhook(record: dict, status: str = "update") -> bytes:
    """A record webhook (webhook_record_<status>.json's envelope) carrying `record`."""
    return as_body(
        {"company_id": 4564, "resource": "record", "resource_id": record["id"], "status": status, "data": record}
    )


def onec_sale(**changes) -> dict:
    event = fixture_json("onec", "http_service_sale_event.json")
    event.update(changes)
    return event


def onec_return(total, *, document_id="9c1d7e52-1c2d-11ef-8b4a-00155d010203", **changes) -> dict:
    event = {
        "event": "return.closed",
        "document_id": document_id,
        "sale_document_id": ONEC_SALE.removeprefix("sale:"),
        "date": "2026-02-15T10:00:00+03:00",
        "total": total,
    }
    event.update(changes)
    return event


def balance_of(phone: str) -> Decimal:
    return BonusAccount.objects.get(user__phone=phone).balance


def accruals() -> list[Decimal]:
    return list(LedgerEntry.objects.filter(kind=LedgerEntry.Kind.ACCRUAL).values_list("amount", flat=True))


def purchase(external_id: str) -> Transaction:
    return Transaction.objects.select_related("customer").get(external_id=external_id)
