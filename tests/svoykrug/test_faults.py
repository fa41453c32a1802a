"""Faults (issue 9), made deterministic in-process:

- Redis down (the cache and the Celery broker on a port nothing listens on): login answers
  503 `service_unavailable` with Retry-After and lets nobody in, and does not burn a code
  sent before the outage; purchases, refunds, balances, histories and token refreshes work on.
- ClickHouse down (CLICKHOUSE_URL on a closed port, the real server backend): the portal's
  home says the analytics are unavailable (200: the live overview on it still works) while
  every other portal page and the API work; the export fails without moving its watermark,
  also half-way through a run, and catches up once the warehouse is back, every purchase
  made meanwhile in it exactly once.
- A worker killed mid-task (acks_late: the task runs again): bonus expiry, referral rewards,
  finishing events and delivering a notification are each killed at a statement half-way
  (a BaseException, which no `except Exception` catches, as a SIGKILL runs no handler:
  only the open transaction rolls back), then run again, and again; nothing happens twice.

A real worker killed with SIGKILL is `bench/faults.py kill-worker`."""

import contextlib
import re
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core.cache import cache
from django.db import connection
from django.test import Client, override_settings
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import Membership, User
from accounts.portal import SESSION_BUSINESS
from analytics import export, schema
from analytics.models import ExportState
from analytics.warehouse import WarehouseError, get_warehouse, reset_warehouse
from loyalty import services as loyalty
from loyalty.models import BonusAccount, BonusLot, LedgerEntry, Transaction
from loyalty.selectors import ledger_mismatches
from tests.factories import ApiKeyFactory, BusinessFactory, LoyaltyProgramFactory, MembershipFactory, UserFactory

D = Decimal
NOTHING_LISTENS = "127.0.0.1:1"  # port 1: connections are refused at once
REDIS_DOWN = f"redis://{NOTHING_LISTENS}/0"
CLICKHOUSE_DOWN = f"clickhouse://default@{NOTHING_LISTENS}/svoykrug"
OTP_URL, VERIFY_URL = "/api/v1/auth/otp/", "/api/v1/auth/otp/verify/"


# --- Redis down -----------------------------------------------------------------------------------


def _forget_broker_connections(app) -> None:
    """Celery keeps its broker connections in pools made on first use: drop them, so the
    next publish connects to the broker the configuration names now."""
    app._pool = None
    with contextlib.suppress(AttributeError, KeyError):
        app.__dict__["amqp"]._producer_pool = None


@contextlib.contextmanager
def redis_outage():
    """Redis is gone: the cache and the Celery broker point at a port nothing listens on,
    and tasks are published to the broker (as in production), not run in this process."""
    from svoykrug.celery import app

    before = (app.conf.broker_url, app.conf.task_always_eager)
    app.conf.broker_url, app.conf.task_always_eager = REDIS_DOWN, False
    _forget_broker_connections(app)
    try:
        caches = {"default": {"BACKEND": "svoykrug.cache.RedisCache", "LOCATION": REDIS_DOWN}}  # as in production
        with override_settings(CACHES=caches):
            with pytest.raises(Exception, match="onnect"):
                cache.get("anything")  # it really is down
            yield
    finally:
        app.conf.broker_url, app.conf.task_always_eager = before
        _forget_broker_connections(app)


def assert_unavailable(response) -> None:
    assert response.status_code == 503, response.content
    assert response["Retry-After"] == "30"
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == "service_unavailable"
    assert body["error"]["retry_after"] == 30
    assert body["error"]["message"]
    assert "access" not in body and "refresh" not in body


@pytest.mark.django_db
def test_with_redis_down_login_answers_503_lets_nobody_in_and_burns_no_code(api_client, sms):
    before = api_client.post(OTP_URL, {"phone": "+79161230001"}, format="json")
    assert before.status_code == 201
    code_sent_before = {"code_id": before.json()["code_id"], "code": sms.last_code()}

    with redis_outage():
        asked = api_client.post(OTP_URL, {"phone": "+79161230002"}, format="json")
        verified = api_client.post(VERIFY_URL, code_sent_before, format="json")
        guessed = api_client.post(VERIFY_URL, {"code_id": uuid.uuid4().hex, "code": "000000"}, format="json")

    for response in (asked, verified, guessed):
        assert_unavailable(response)
    assert len(sms.sent) == 1  # no SMS for the code that could not be stored
    assert not User.objects.filter(phone__in=["+79161230001", "+79161230002"]).exists()

    # Redis is back: the code sent before the outage still works, its tries untouched.
    after = api_client.post(VERIFY_URL, code_sent_before, format="json")
    assert after.status_code == 200, after.content
    assert after.json()["user"]["phone"] == "+79161230001"


@pytest.mark.django_db
def test_with_redis_down_the_portal_login_says_so_and_lets_nobody_in(sms):
    owner = MembershipFactory(role=Membership.Role.OWNER, user=UserFactory(phone="+79161230003")).user
    client = Client(headers={"Accept-Language": "en"})

    with redis_outage():
        page = client.post("/portal/login/", {"phone": owner.phone})
        home = client.get("/portal/")

    assert page.status_code == 200
    assert "Login is unavailable for a moment" in page.content.decode()
    assert sms.sent == []
    assert home.status_code == 302 and home["Location"].startswith("/portal/login/")


@pytest.fixture
def shop(tiers):
    business = LoyaltyProgramFactory(
        business=BusinessFactory(name="Кофейня", slug="faults-cafe"), accrual_rate=D(10), max_redeem_share=D(50)
    ).business
    return business, ApiKeyFactory(business=business)[1]


@pytest.mark.django_db
def test_with_redis_down_purchases_refunds_and_balances_work(shop, django_capture_on_commit_callbacks, caplog):
    business, raw_key = shop
    partner = APIClient(HTTP_AUTHORIZATION=f"Api-Key {raw_key}")
    phone = "+79161230010"
    first = partner.post(
        "/api/v1/partner/transactions/", {"external_id": "t-1", "phone": phone, "amount": "1000.00"}, format="json"
    )
    assert first.status_code == 201
    customer = User.objects.get(phone=phone)
    refresh = RefreshToken.for_user(customer)
    mobile = APIClient(HTTP_AUTHORIZATION=f"Bearer {refresh.access_token}")

    with redis_outage(), django_capture_on_commit_callbacks(execute=True):
        bought = partner.post(
            "/api/v1/partner/transactions/",
            {"external_id": "t-2", "phone": phone, "amount": "500.00", "redeem": "50.00"},
            format="json",
        )
        again = partner.post(
            "/api/v1/partner/transactions/",
            {"external_id": "t-2", "phone": phone, "amount": "500.00", "redeem": "50.00"},
            format="json",
        )
        refunded = partner.post("/api/v1/partner/transactions/t-1/refund/", {"refund_id": "r-1"}, format="json")
        card = mobile.get("/api/v1/me/loyalty/")
        ledger = mobile.get("/api/v1/me/ledger/")
        purchases = mobile.get("/api/v1/me/transactions/")
        refreshed = APIClient().post("/api/v1/auth/token/refresh/", {"refresh": str(refresh)}, format="json")

    assert bought.status_code == 201, bought.content
    assert bought.json()["bonuses_redeemed"] == "50.00"
    assert again.status_code == 200 and again.json()["transaction_id"] == bought.json()["transaction_id"]
    assert refunded.status_code in (200, 201), refunded.content
    account = BonusAccount.objects.get(user=customer)
    assert card.status_code == 200 and D(card.json()["balance"]) == account.balance
    assert ledger.status_code == 200 and len(ledger.json()["results"]) == LedgerEntry.objects.count()
    assert purchases.status_code == 200 and len(purchases.json()["results"]) == 2
    assert refreshed.status_code == 200  # an app already logged in stays logged in
    assert Transaction.objects.filter(customer=customer).count() == 2
    assert ledger_mismatches() == []
    # The notifications could not be queued: logged, and the purchase went through regardless.
    assert "Could not enqueue" in caplog.text


# --- ClickHouse down ------------------------------------------------------------------------------


@pytest.fixture
def chdb(settings, tmp_path):
    """A working warehouse: chDB in a folder of this test."""
    reset_warehouse()
    settings.CLICKHOUSE_URL = ""
    settings.CHDB_PATH = str(tmp_path / "chdb")
    schema.migrate(get_warehouse(), reset_export=False)
    yield get_warehouse()
    reset_warehouse()


@contextlib.contextmanager
def clickhouse_outage(settings):
    """The warehouse is a ClickHouse server that refuses connections; afterwards the one the
    settings named before (chDB here) is back, with whatever it held."""
    before = (settings.CLICKHOUSE_URL, settings.CHDB_PATH)
    reset_warehouse()
    settings.CLICKHOUSE_URL = CLICKHOUSE_DOWN
    try:
        with pytest.raises(WarehouseError):
            get_warehouse().execute("SELECT 1")  # it really is down
        yield
    finally:
        reset_warehouse()
        settings.CLICKHOUSE_URL, settings.CHDB_PATH = before


def buy(business, external_id, amount, phone, **kwargs):
    return loyalty.record_transaction(
        business=business, external_id=external_id, amount=D(amount), phone=phone, **kwargs
    ).transaction


@pytest.mark.django_db
def test_with_clickhouse_down_the_dashboard_says_so_and_every_other_page_and_api_works(shop, settings):
    from events import services as events

    business, raw_key = shop
    owner = MembershipFactory(business=business, role=Membership.Role.OWNER).user
    purchase = buy(business, "t-1", "1234.50", "+79161230020")
    customer = purchase.customer
    event = events.create_event(
        events.EventCreate(
            business=business,
            title="Дегустация",
            starts_at=timezone.now() + timedelta(days=3),
            ends_at=timezone.now() + timedelta(days=3, hours=2),
            capacity=10,
        ),
        owner,
    )
    portal = Client(headers={"Accept-Language": "en"})
    portal.force_login(owner)
    session = portal.session
    session[SESSION_BUSINESS] = str(business.pk)
    session.save()
    mobile = APIClient(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(customer).access_token}")
    partner = APIClient(HTTP_AUTHORIZATION=f"Api-Key {raw_key}")

    with clickhouse_outage(settings):
        home = portal.get("/portal/")
        pages = {
            url: portal.get(url)
            for url in [
                "/portal/cashier/",
                "/portal/program/",
                "/portal/customers/",
                f"/portal/customers/{customer.pk}/",
                "/portal/transactions/",
                f"/portal/transactions/{purchase.pk}/",
                "/portal/settlement/",
                "/portal/api-keys/",
                "/portal/integrations/",
                "/portal/imports/",
                "/portal/campaigns/",
                "/portal/campaigns/new/",
                "/portal/crosspromo/",
                "/portal/crosspromo/new/",
                "/portal/crosspromo/recommendations/",
                "/portal/events/",
                "/portal/events/new/",
                f"/portal/events/{event.pk}/",
            ]
        }
        api = {
            url: mobile.get(url)
            for url in [
                "/api/v1/me/loyalty/",
                "/api/v1/me/ledger/",
                "/api/v1/me/transactions/",
                "/api/v1/me/coupons/",
                "/api/v1/me/tickets/",
                "/api/v1/events/",
                "/api/v1/businesses/",
            ]
        }
        bought = partner.post(
            "/api/v1/partner/transactions/",
            {"external_id": "t-2", "phone": customer.phone, "amount": "100.00"},
            format="json",
        )
        ready = Client().get("/readyz")

    # 200, not 503: the page is the portal's home and most of it works (the live overview
    # from PostgreSQL, the period picker, the way to every other page); only the analytics
    # part is missing, and the page says so. The outage is for operators to see: /readyz.
    assert home.status_code == 200
    html = home.content.decode()
    assert "the analytics warehouse does not answer" in html
    assert 'id="warehouse-down"' in html
    assert "<svg" not in html
    assert "1,234.50" in html  # today's figures and the latest purchases, from PostgreSQL
    assert {url: response.status_code for url, response in pages.items()} == dict.fromkeys(pages, 200)
    assert "Segments are unavailable right now" in pages["/portal/customers/"].content.decode()
    assert {url: response.status_code for url, response in api.items()} == dict.fromkeys(api, 200)
    assert bought.status_code == 201
    assert ready.status_code == 503 and ready.json()["failing"] == ["clickhouse"]


def warehouse_purchases(warehouse) -> dict:
    """{purchase id: (times it is read, paid amount)} as the dashboards read the warehouse (FINAL)."""
    rows = warehouse.execute("SELECT id, count(), any(paid_amount) FROM purchases FINAL GROUP BY id")
    return {purchase_id: (count, paid) for purchase_id, count, paid in rows}


def postgres_purchases() -> dict:
    return {pk: (1, paid) for pk, paid in Transaction.objects.values_list("pk", "paid_amount")}


@pytest.mark.django_db
def test_the_export_keeps_its_watermark_while_clickhouse_is_down_and_catches_up(shop, chdb, settings):
    business, _key = shop
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        buy(business, "before-1", "100.00", "+79161230030")
    with time_machine.travel(start + timedelta(seconds=1), tick=False):
        assert export.aggregate_transactions_to_clickhouse() > 0
    watermarks = dict(ExportState.objects.values_list("name", "watermark"))
    assert watermarks["purchases"] == start + timedelta(seconds=1)

    # Two hours of outage, far beyond the export's overlap: purchases, a refund, every
    # minute's export failing.
    with clickhouse_outage(settings):
        for minute in range(1, 121, 30):
            with time_machine.travel(start + timedelta(minutes=minute), tick=False):
                buy(business, f"during-{minute}", f"{200 + minute}.00", f"+7916123{minute:04d}")
                with pytest.raises(WarehouseError):
                    export.aggregate_transactions_to_clickhouse()
        with time_machine.travel(start + timedelta(minutes=100), tick=False):
            loyalty.refund_transaction(business=business, external_id="before-1", refund_id="r-1")
    states = {state.name: state for state in ExportState.objects.all()}
    assert {name: state.watermark for name, state in states.items()} == watermarks  # not moved
    assert all("refused" in state.last_error for state in states.values())  # the admin shows why
    assert cache.get("warehouse-export") is None  # the failed runs let go of their lock

    with time_machine.travel(start + timedelta(minutes=130), tick=False):
        assert export.aggregate_transactions_to_clickhouse() > 0
    warehouse = get_warehouse()  # chDB again, with what it held before the outage
    assert warehouse_purchases(warehouse) == postgres_purchases()  # each purchase once, the refund read
    ((status,),) = warehouse.execute("SELECT status FROM purchases FINAL WHERE external_id = 'before-1'")
    assert status == "refunded"
    ((entries, distinct),) = warehouse.execute("SELECT count(), uniqExact(id) FROM ledger_entries FINAL")
    assert entries == distinct == LedgerEntry.objects.count()
    states = {state.name: state for state in ExportState.objects.all()}
    assert all(state.last_error == "" for state in states.values())
    assert states["purchases"].watermark == start + timedelta(minutes=130)


class FailingOn:
    """The working warehouse, except that inserts into one table fail: a warehouse that goes
    away half-way through an export run."""

    def __init__(self, warehouse, table):
        self.warehouse, self.table = warehouse, table

    def __getattr__(self, name):
        return getattr(self.warehouse, name)

    def _check(self, table):
        if table == self.table:
            raise WarehouseError("Connection reset by peer")

    def insert(self, table, *args, **kwargs):
        self._check(table)
        return self.warehouse.insert(table, *args, **kwargs)

    def insert_tsv(self, table, *args, **kwargs):
        self._check(table)
        return self.warehouse.insert_tsv(table, *args, **kwargs)


@pytest.mark.django_db
def test_an_export_that_fails_half_way_catches_up_and_counts_nothing_twice(shop, chdb, monkeypatch):
    business, _key = shop
    start = timezone.now()
    with time_machine.travel(start - timedelta(seconds=1), tick=False):
        buy(business, "p-1", "100.00", "+79161230040")
    with time_machine.travel(start, tick=False):
        export.aggregate_transactions_to_clickhouse()
    with time_machine.travel(start + timedelta(hours=1) - timedelta(seconds=1), tick=False):
        buy(business, "p-2", "300.00", "+79161230041")
    with time_machine.travel(start + timedelta(hours=1), tick=False):
        monkeypatch.setattr(export, "get_warehouse", lambda: FailingOn(chdb, "ledger_entries"))
        with pytest.raises(WarehouseError):
            export.aggregate_transactions_to_clickhouse()
    states = dict(ExportState.objects.values_list("name", "watermark"))
    assert states["purchases"] == start + timedelta(hours=1)  # its stream went through
    assert states["ledger_entries"] == start  # the failed stream keeps its place
    assert states["coupons"] == start  # and so do the streams after it

    monkeypatch.setattr(export, "get_warehouse", lambda: chdb)
    with time_machine.travel(start + timedelta(hours=2), tick=False):
        export.aggregate_transactions_to_clickhouse()
    assert warehouse_purchases(chdb) == postgres_purchases()
    ((entries, distinct, accrued),) = chdb.execute(
        "SELECT count(), uniqExact(id), sum(amount) FROM ledger_entries FINAL"
    )
    assert entries == distinct == LedgerEntry.objects.count() == 2
    assert accrued == D("40.00")  # 10% of 100 and of 300, once each


# --- A worker killed mid-task ------------------------------------------------------------------


class WorkerKilled(BaseException):
    """The worker process dying: not an Exception, so no handler in the code runs."""


@contextlib.contextmanager
def killed_at(verb: str, table: str, nth: int = 1):
    """The process dies just before its `nth` `verb` statement on `table` reaches the
    database: what that statement's transaction had done is rolled back, what committed
    before it stays."""
    pattern = re.compile(rf'^\s*{verb}\s+(INTO\s+|FROM\s+)?"?{table}"?\W', re.IGNORECASE)
    seen = 0

    def die(execute, sql, params, many, context):
        nonlocal seen
        if pattern.match(sql) or (verb.upper() == "SELECT" and re.search(rf'FROM\s+"?{table}"?\W', sql)):
            seen += 1
            if seen == nth:
                raise WorkerKilled(sql[:80])
        return execute(sql, params, many, context)

    with connection.execute_wrapper(die), pytest.raises(WorkerKilled):
        yield


def later(days: float):
    return time_machine.travel(timezone.now() + timedelta(days=days), tick=False)


@pytest.mark.django_db(transaction=True)
def test_bonus_expiry_killed_half_way_then_run_again_expires_every_lot_once(tiers, settings):
    from loyalty import tasks

    settings.LOYALTY_BATCH_ACCOUNTS = 3  # ten accounts: batches of 3, 3, 3, 1
    people = [UserFactory() for _ in range(10)]
    for person in people:
        loyalty.adjust_balance(user=person, amount=D(10), reason="test", created_by=None)
        loyalty.adjust_balance(user=person, amount=D("2.50"), reason="test", created_by=None)

    with later(400):
        # Killed in the second batch, after its expiry entries and balances were written.
        with killed_at("UPDATE", "loyalty_bonuslot", nth=2):
            tasks.expire_bonuses()
        assert LedgerEntry.objects.filter(kind="expiry").count() == 6  # the first batch committed
        assert ledger_mismatches() == []  # the second rolled back whole

        assert tasks.expire_bonuses() == 7  # the redelivered task: the rest
        assert tasks.expire_bonuses() == 0  # and once more: nothing

    assert LedgerEntry.objects.filter(kind="expiry").count() == BonusLot.objects.count() == 20
    assert set(BonusAccount.objects.values_list("balance", flat=True)) == {D("0.00")}
    assert ledger_mismatches() == []


@pytest.mark.django_db(transaction=True)
def test_referral_rewards_killed_half_way_then_run_again_pay_each_side_once(tiers, settings):
    from crosspromo import services as crosspromo
    from crosspromo import tasks
    from crosspromo.models import Referral

    settings.REFERRAL_INVITER_BONUS, settings.REFERRAL_FRIEND_BONUS = D("300.00"), D("200.00")
    cafe = LoyaltyProgramFactory(business=BusinessFactory(), accrual_rate=D(5)).business
    for index in range(3):
        inviter = UserFactory(phone=f"+7916124000{index}")
        friend = UserFactory(phone=f"+7916124100{index}")
        crosspromo.register_referral(friend=friend, code=crosspromo.get_referral_code(inviter).code)
        buy(cafe, f"first-{index}", "1000.00", friend.phone)

    with later(settings.REFERRAL_HOLD_DAYS + 1):
        # Killed as the second referral's first credit is written (the first's two are in).
        with killed_at("INSERT", "loyalty_ledgerentry", nth=3):
            tasks.reward_referrals()
        assert Referral.objects.filter(status="rewarded").count() == 1
        assert LedgerEntry.objects.filter(idempotency_key__startswith="referral:").count() == 2

        assert tasks.reward_referrals() == 2
        assert tasks.reward_referrals() == 0

    credits = LedgerEntry.objects.filter(idempotency_key__startswith="referral:")
    assert credits.count() == 6
    assert sorted(credits.values_list("amount", flat=True)) == [D("200.00")] * 3 + [D("300.00")] * 3
    assert Referral.objects.filter(status="rewarded").count() == 3
    assert ledger_mismatches() == []


@pytest.mark.django_db(transaction=True)
def test_finishing_events_killed_half_way_then_run_again_marks_no_shows_once(tiers, settings):
    from events import services as events
    from events import tasks
    from events.models import Event, Registration

    host = LoyaltyProgramFactory(business=BusinessFactory()).business
    manager = MembershipFactory(business=host, role=Membership.Role.MANAGER).user
    starts = timezone.now() + timedelta(days=3)
    event = events.create_event(
        events.EventCreate(
            business=host, title="Ticketed", starts_at=starts, ends_at=starts + timedelta(hours=2), capacity=5
        ),
        manager,
    )
    for _ in range(3):
        events.register_for_event(UserFactory(), event)
    entries = LedgerEntry.objects.count()

    with time_machine.travel(event.ends_at + timedelta(hours=settings.EVENTS_NO_SHOW_AFTER_HOURS), tick=False):
        with killed_at("UPDATE", "events_registration"):
            tasks.finish_events()
        assert Event.objects.get(pk=event.pk).status == Event.Status.FINISHED  # the first statement committed
        assert Registration.objects.filter(status="no_show").count() == 0

        assert tasks.finish_events() == [0, 3]
        assert tasks.finish_events() == [0, 0]

    assert Registration.objects.filter(status="no_show").count() == 3
    assert Event.objects.get(pk=event.pk).registered_count == 3
    assert LedgerEntry.objects.count() == entries  # finishing moves no bonuses


@pytest.fixture
def queued_message(db, sms):
    from notifications import services as notifications

    customer = UserFactory(phone="+79161230050", email="")
    # Inside the test's transaction the delivery task waits for a commit that never comes: queued.
    (log,) = notifications.notify(customer, "bonus_expiring", {"days": 1, "batches": []}, event_key="k1")
    assert log.status == "queued"
    return log


def test_a_delivery_killed_after_the_provider_took_the_message_is_not_sent_again_on_redelivery(queued_message, sms):
    from notifications import tasks

    # The provider accepted the SMS; the worker died before recording it.
    with killed_at("UPDATE", "notifications_notificationlog", nth=2):
        tasks.deliver_notification(queued_message.pk)
    assert len(sms.sent) == 1

    assert tasks.deliver_notification(queued_message.pk) == "not queued"  # the redelivered task
    assert tasks.send_due_notifications() == 0  # the sweeper leaves it alone (not stale yet)
    assert len(sms.sent) == 1


def test_a_delivery_killed_before_the_provider_was_called_is_sent_once_later(queued_message, sms, settings):
    from notifications import tasks

    with killed_at("SELECT", "notifications_notificationlog"):  # right after claiming it
        tasks.deliver_notification(queued_message.pk)
    assert sms.sent == []

    assert tasks.deliver_notification(queued_message.pk) == "not queued"  # redelivered: still claimed
    with later(settings.NOTIFY_STALE_SENDING_MINUTES / (24 * 60) + 1 / (24 * 60)):
        assert tasks.send_due_notifications() == 1  # the sweeper takes it back from the dead worker
        assert tasks.send_due_notifications() == 0
        assert tasks.deliver_notification(queued_message.pk) == "not queued"
    assert len(sms.sent) == 1
    queued_message.refresh_from_db()
    assert queued_message.status == "sent"
