"""Cached answers (svoykrug/answers.py): the card, the ledger, the coupons and the events list are
served from the cache until what they show changes: a write to their scope (inside the
transaction and again on commit), a staff edit of the tiers, a bulk job, or time alone (bonuses
off hold, a coupon lapsing, an event's registration closing). Each test first shows that the
answer is served from the cache, then that it is not once it would be wrong."""

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
import redis
import time_machine
from django.core.cache import caches
from django.db import DatabaseError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from crosspromo import services as crosspromo
from crosspromo.services import ChainConfig
from events import api as events_api
from events import services as events
from events.models import Event, Registration, Vote
from events.services import EventCreate
from events.services import votes as event_votes
from loyalty import selectors
from loyalty import services as loyalty
from loyalty.models import BonusLot, LedgerEntry
from svoykrug import answers
from tests.factories import BusinessFactory, LoyaltyProgramFactory, MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

D = Decimal
CARD = "/api/v1/me/loyalty/"
LEDGER = "/api/v1/me/ledger/"
COUPONS = "/api/v1/me/coupons/"
EVENTS = "/api/v1/events/"
# JWT authentication keeps what it checks of the user in the cache too: a cached answer costs
# no query at all.
AUTH_QUERIES = 0


@pytest.fixture
def cafe(tiers):
    return LoyaltyProgramFactory(business=BusinessFactory(name="Кофейня", slug="cafe"), accrual_rate=D(5)).business


@pytest.fixture
def salon(tiers):
    return LoyaltyProgramFactory(business=BusinessFactory(name="Салон", slug="salon"), accrual_rate=D(10)).business


@pytest.fixture
def anna(db):
    return UserFactory(phone="+79160000001")


@pytest.fixture
def boris(db):
    return UserFactory(phone="+79160000002")


@pytest.fixture
def owner(cafe):
    return MembershipFactory(business=cafe).user


def login(user, language: str = "en") -> APIClient:
    """A client holding the customer's access token. Call it inside a time_machine block that
    moves far: access tokens live 15 minutes."""
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}", HTTP_ACCEPT_LANGUAGE=language
    )
    return client


def ask(client: APIClient, path: str, expect: str | None = None):
    """GET `path`: the response and the queries it ran; `expect` checks the X-Cache header."""
    with CaptureQueriesContext(connection) as queries:
        response = client.get(path)
    assert response.status_code == 200, response.content
    if expect is not None:
        assert response["X-Cache"] == expect
    return response, queries


def buy(business, customer, external_id: str, amount: str):
    return loyalty.record_transaction(business=business, customer=customer, external_id=external_id, amount=D(amount))


def in_hours(hours: float) -> datetime:
    return timezone.now() + timedelta(hours=hours)


def make_event(business, owner, *, title="Дегустация", starts_at=None, capacity=10, **fields) -> Event:
    """A published event made through the service, starting in three days unless told otherwise."""
    starts_at = starts_at or in_hours(72)
    data = EventCreate(
        business=business,
        title=title,
        starts_at=starts_at,
        ends_at=starts_at + timedelta(hours=2),
        capacity=capacity,
        **fields,
    )
    return events.create_event(data, owner)


def coupon_chain(source, target):
    config = ChainConfig(source=source, target=target, reward_kind="fixed", reward_value=D(200), per_customer_limit=10)
    return crosspromo.accept_chain(crosspromo.create_chain(config), business=target)


def listed(response, event) -> dict:
    [item] = [item for item in response.json()["results"] if item["id"] == event.pk]
    return item


# --- Served from the cache ----------------------------------------------------------------------


def test_a_second_read_of_the_card_is_served_from_the_cache_without_the_database(anna, cafe):
    buy(cafe, anna, "p1", "1000.00")
    client = login(anna)

    first, first_queries = ask(client, CARD, expect="miss")
    second, second_queries = ask(client, CARD, expect="hit")

    assert second.content == first.content
    assert second.json()["balance"] == "50.00"
    assert second["Content-Type"] == first["Content-Type"] == "application/json"
    assert len(first_queries) > AUTH_QUERIES
    assert len(second_queries) == AUTH_QUERIES


@pytest.mark.parametrize("path", [LEDGER, COUPONS, EVENTS])
def test_the_ledger_coupons_and_events_are_served_from_the_cache_too(path, anna, cafe, salon, owner):
    coupon_chain(cafe, salon)
    buy(cafe, anna, "p1", "1000.00")
    make_event(cafe, owner)
    client = login(anna)

    first, _ = ask(client, path, expect="miss")
    second, queries = ask(client, path, expect="hit")

    assert second.content == first.content
    assert first.json()["results"]
    assert len(queries) == AUTH_QUERIES


# --- Writes -------------------------------------------------------------------------------------


def test_a_purchase_shows_at_once_in_the_card_and_the_ledger(anna, cafe):
    buy(cafe, anna, "p1", "1000.00")
    client = login(anna)
    for path in (CARD, LEDGER):
        ask(client, path, expect="miss")
        ask(client, path, expect="hit")

    purchase = buy(cafe, anna, "p2", "1000.00").transaction

    card, _ = ask(client, CARD, expect="miss")
    assert card.json()["balance"] == "100.00"
    ledger, _ = ask(client, LEDGER, expect="miss")
    assert [entry["transaction_id"] for entry in ledger.json()["results"]][0] == str(purchase.pk)
    assert len(ledger.json()["results"]) == 2
    # And the new answers are cached in their turn.
    assert ask(client, CARD, expect="hit")[0].json()["balance"] == "100.00"


def test_a_committed_purchase_shows_in_the_card_and_the_ledger(anna, cafe, django_capture_on_commit_callbacks):
    buy(cafe, anna, "p1", "1000.00")
    client = login(anna)
    for path in (CARD, LEDGER):
        ask(client, path, expect="miss")
        ask(client, path, expect="hit")

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        buy(cafe, anna, "p2", "1000.00")

    assert callbacks
    assert ask(client, CARD, expect="miss")[0].json()["balance"] == "100.00"
    assert len(ask(client, LEDGER, expect="miss")[0].json()["results"]) == 2


def test_an_answer_computed_before_a_purchase_commits_is_not_served_after_the_commit(
    anna, cafe, monkeypatch, django_capture_on_commit_callbacks
):
    """A reader on another connection sees the rows as they were until the writer commits: an
    answer it computes after the write's first renewal but before its commit holds the old
    balance and the new version. The renewal on commit is what retires it."""
    buy(cafe, anna, "p1", "1000.00")
    before = selectors.account_summary(anna)
    old_entries = list(LedgerEntry.objects.filter(account__user=anna).values_list("pk", flat=True))
    real_ledger = selectors.customer_ledger
    client = login(anna)

    with django_capture_on_commit_callbacks(execute=True):
        buy(cafe, anna, "p2", "1000.00")
        # The other connection's view: the purchase is not committed yet.
        with monkeypatch.context() as uncommitted:
            uncommitted.setattr(selectors, "account_summary", lambda user, **kwargs: before)
            uncommitted.setattr(selectors, "customer_ledger", lambda user: real_ledger(user).filter(pk__in=old_entries))
            assert ask(client, CARD, expect="miss")[0].json()["balance"] == "50.00"
            assert len(ask(client, LEDGER, expect="miss")[0].json()["results"]) == 1
        # Until the commit, that is the answer (the database says no different to that reader).
        assert ask(client, CARD, expect="hit")[0].json()["balance"] == "50.00"

    assert ask(client, CARD, expect="miss")[0].json()["balance"] == "100.00"
    assert len(ask(client, LEDGER, expect="miss")[0].json()["results"]) == 2


@pytest.mark.parametrize("committed", [False, True], ids=["in-transaction", "committed"])
def test_an_answer_read_before_a_purchase_landed_is_never_served_after_it(
    committed, anna, cafe, monkeypatch, django_capture_on_commit_callbacks
):
    """The stale-write race: the reader reads the versions, then the rows; a purchase lands
    between its reading the rows and storing the answer. The answer holds the old balance
    under the old versions and must not be served."""
    buy(cafe, anna, "p1", "1000.00")
    real_summary = selectors.account_summary

    def read_then_a_purchase_lands(user, **kwargs):
        summary = real_summary(user, **kwargs)
        with django_capture_on_commit_callbacks(execute=committed):
            buy(cafe, anna, "p2", "1000.00")
        return summary

    client = login(anna)
    with monkeypatch.context() as racing:
        racing.setattr(selectors, "account_summary", read_then_a_purchase_lands)
        assert ask(client, CARD, expect="miss")[0].json()["balance"] == "50.00"

    assert ask(client, CARD, expect="miss")[0].json()["balance"] == "100.00"
    assert ask(client, CARD, expect="hit")[0].json()["balance"] == "100.00"


def test_a_shared_events_page_read_before_a_registration_landed_is_never_served_after_it(
    anna, boris, cafe, owner, monkeypatch
):
    """The same race on the page every customer shares: Boris registers while Anna's request
    builds it; the page holds the old seats and must not be served to anyone."""
    event = make_event(cafe, owner, capacity=10)
    real_change = events_api.next_listing_change

    def page_read_then_a_registration_lands(now):
        events.register_for_event(boris, event)
        return real_change(now)

    with monkeypatch.context() as racing:
        racing.setattr(events_api, "next_listing_change", page_read_then_a_registration_lands)
        assert listed(ask(login(anna), EVENTS, expect="miss")[0], event)["seats_left"] == 10

    for customer in (anna, boris):
        assert listed(ask(login(customer), EVENTS, expect="miss")[0], event)["seats_left"] == 9


def test_after_commit_the_scopes_a_purchase_changed_are_renewed_in_one_cache_write(
    anna, cafe, salon, monkeypatch, django_capture_on_commit_callbacks
):
    coupon_chain(cafe, salon)
    writes = []
    real_set_many = answers.cache.set_many
    monkeypatch.setattr(
        answers.cache, "set_many", lambda data, *a, **kw: writes.append(set(data)) or real_set_many(data, *a, **kw)
    )

    with django_capture_on_commit_callbacks() as callbacks:
        buy(cafe, anna, "p1", "1000.00")  # its bonuses and a coupon: two of the customer's scopes
        assert len(writes) >= 2  # each renewed at once
        writes.clear()
    for callback in callbacks:
        callback()

    assert len(writes) == 1
    assert {answers._version_key(f"loyalty:{anna.pk}"), answers._version_key(f"coupons:{anna.pk}")} <= writes[0]


def test_a_coupon_issued_or_redeemed_renews_the_cached_coupon_list(anna, cafe, salon):
    coupon_chain(cafe, salon)
    first = buy(cafe, anna, "p1", "600.00").transaction.coupons_issued.get()
    client = login(anna)
    ask(client, COUPONS, expect="miss")
    assert [item["id"] for item in ask(client, COUPONS, expect="hit")[0].json()["results"]] == [first.pk]

    second = buy(cafe, anna, "p2", "600.00").transaction.coupons_issued.get()

    results = ask(client, COUPONS, expect="miss")[0].json()["results"]
    assert sorted(item["id"] for item in results) == sorted([first.pk, second.pk])
    ask(client, COUPONS, expect="hit")

    loyalty.record_transaction(business=salon, customer=anna, external_id="use", amount=D("1500.00"), coupon=first.code)

    results = ask(client, COUPONS, expect="miss")[0].json()["results"]
    assert {item["id"]: item["status"] for item in results} == {first.pk: "redeemed", second.pk: "active"}


def test_a_vote_renews_the_counts_in_the_cached_events_list(anna, boris, cafe, owner):
    event = make_event(cafe, owner, propose=True, vote_threshold=3, voting_deadline=in_hours(24))
    client = login(anna)
    ask(client, EVENTS, expect="miss")
    assert listed(ask(client, EVENTS, expect="hit")[0], event)["votes"]["up"] == 0

    events.process_vote(boris, event, Vote.Choice.UP)

    item = listed(ask(client, EVENTS, expect="miss")[0], event)
    assert (item["votes"]["up"], item["my_vote"]) == (1, None)


# --- Time alone ---------------------------------------------------------------------------------


@pytest.fixture
def long_lived_answers(locmem_cache, settings):
    """Answers that would live for weeks: only the moment they stop being right retires them."""
    settings.ANSWER_CACHE_SECONDS = 60 * 24 * 3600
    return locmem_cache


def test_bonuses_coming_off_hold_retire_the_cached_card(long_lived_answers, anna, tiers):
    bakery = LoyaltyProgramFactory(business=BusinessFactory(name="Пекарня"), accrual_rate=D(10), hold_days=1).business
    buy(bakery, anna, "p1", "500.00")
    released = BonusLot.objects.get(account__user=anna).spendable_from
    card, _ = ask(login(anna), CARD, expect="miss")
    assert (card.json()["spendable"], card.json()["pending"]) == ("0.00", "50.00")

    with time_machine.travel(released - timedelta(minutes=1), tick=False):
        card, queries = ask(login(anna), CARD, expect="hit")
        assert card.json()["pending"] == "50.00"
        assert len(queries) == AUTH_QUERIES
    with time_machine.travel(released + timedelta(minutes=1), tick=False):
        card, _ = ask(login(anna), CARD, expect="miss")

    assert (card.json()["spendable"], card.json()["pending"]) == ("50.00", "0.00")


def test_a_coupon_lapsing_retires_the_cached_coupon_list(long_lived_answers, anna, cafe, salon):
    coupon_chain(cafe, salon)
    coupon = buy(cafe, anna, "p1", "600.00").transaction.coupons_issued.get()
    [item] = ask(login(anna), COUPONS, expect="miss")[0].json()["results"]
    assert (item["id"], item["status"]) == (coupon.pk, "active")

    with time_machine.travel(coupon.expires_at - timedelta(minutes=1), tick=False):
        [item] = ask(login(anna), COUPONS, expect="hit")[0].json()["results"]
        assert item["status"] == "active"
    with time_machine.travel(coupon.expires_at + timedelta(minutes=1), tick=False):
        [item] = ask(login(anna), COUPONS, expect="miss")[0].json()["results"]

    assert (item["id"], item["status"]) == (coupon.pk, "expired")


def test_registration_closing_retires_the_cached_events_list(long_lived_answers, anna, cafe, owner):
    event = make_event(cafe, owner, registration_deadline=in_hours(48))
    assert listed(ask(login(anna), EVENTS, expect="miss")[0], event)["registration_open"] is True

    with time_machine.travel(event.registration_deadline - timedelta(minutes=1), tick=False):
        assert listed(ask(login(anna), EVENTS, expect="hit")[0], event)["registration_open"] is True
    with time_machine.travel(event.registration_deadline + timedelta(minutes=1), tick=False):
        assert listed(ask(login(anna), EVENTS, expect="miss")[0], event)["registration_open"] is False


# --- The events page shared by everyone ---------------------------------------------------------


def test_another_customers_registration_renews_the_seats_in_a_cached_events_list(anna, boris, cafe, owner):
    event = make_event(cafe, owner, capacity=10)
    as_anna = login(anna)
    ask(as_anna, EVENTS, expect="miss")
    before = listed(ask(as_anna, EVENTS, expect="hit")[0], event)
    assert (before["seats_left"], before["my_registration"]) == (10, None)

    registration = events.register_for_event(boris, event)

    after = listed(ask(as_anna, EVENTS, expect="miss")[0], event)
    assert (after["seats_left"], after["my_registration"]) == (9, None)
    mine = listed(ask(login(boris), EVENTS, expect="miss")[0], event)["my_registration"]
    assert (mine["id"], mine["status"]) == (registration.pk, Registration.Status.REGISTERED)


def test_a_customer_never_sees_another_customers_registration_through_the_shared_page(anna, boris, cafe, owner):
    event = make_event(cafe, owner, capacity=10)
    registration = events.register_for_event(boris, event)
    boris_item = listed(ask(login(boris), EVENTS, expect="miss")[0], event)
    assert boris_item["my_registration"]["id"] == registration.pk

    # Anna's answer is her own (a miss), built on the page Boris's request stored: only her own
    # registration and vote are read (two queries) besides the authentication (her first
    # request: her user row is read once).
    response, queries = ask(login(anna), EVENTS, expect="miss")
    anna_item = listed(response, event)

    assert len(queries) == 1 + 2
    assert (anna_item["my_registration"], anna_item["my_vote"]) == (None, None)
    assert anna_item["seats_left"] == boris_item["seats_left"] == 9
    assert listed(ask(login(anna), EVENTS, expect="hit")[0], event)["my_registration"] is None
    assert listed(ask(login(boris), EVENTS, expect="hit")[0], event)["my_registration"]["id"] == registration.pk


# --- Language, tiers, switched off --------------------------------------------------------------


def test_each_language_gets_its_own_answer(anna, cafe):
    buy(cafe, anna, "p1", "1000.00")
    in_russian, in_english = login(anna, "ru"), login(anna, "en")

    assert ask(in_russian, LEDGER, expect="miss")[0].json()["results"][0]["kind_display"] == "Начисление"
    assert ask(in_english, LEDGER, expect="miss")[0].json()["results"][0]["kind_display"] == "Accrual"
    assert ask(in_russian, LEDGER, expect="hit")[0].json()["results"][0]["kind_display"] == "Начисление"
    assert ask(in_english, LEDGER, expect="hit")[0].json()["results"][0]["kind_display"] == "Accrual"


def test_a_staff_edit_of_a_tier_renews_the_next_tier_on_the_cached_card(anna, cafe, tiers):
    buy(cafe, anna, "p1", "1000.00")
    client = login(anna)
    ask(client, CARD, expect="miss")
    assert ask(client, CARD, expect="hit")[0].json()["next_tier"] == {"name": "Silver", "threshold": "15000.00"}

    silver = tiers["Silver"]
    silver.threshold = D("20000.00")
    silver.save()

    card = ask(client, CARD, expect="miss")[0].json()
    assert card["next_tier"] == {"name": "Silver", "threshold": "20000.00"}
    assert card["spend_to_next_tier"] == "19000.00"


def test_a_deleted_tier_leaves_the_cached_card_too(anna, tiers):
    client = login(anna)
    ask(client, CARD, expect="miss")
    assert ask(client, CARD, expect="hit")[0].json()["next_tier"]["name"] == "Silver"

    tiers["Silver"].delete()

    assert ask(client, CARD, expect="miss")[0].json()["next_tier"]["name"] == "Gold"


@pytest.mark.parametrize("path", [CARD, LEDGER, COUPONS, EVENTS])
def test_answer_cache_seconds_0_turns_the_cache_off(path, settings, anna, cafe, salon, owner):
    settings.ANSWER_CACHE_SECONDS = 0
    coupon_chain(cafe, salon)
    buy(cafe, anna, "p1", "1000.00")
    make_event(cafe, owner)
    client = login(anna)

    first, first_queries = ask(client, path, expect="miss")
    second, second_queries = ask(client, path, expect="miss")

    assert second.content == first.content
    assert len(second_queries) == len(first_queries) > AUTH_QUERIES


# --- The cache down -----------------------------------------------------------------------------


def break_the_cache(monkeypatch, error: Exception, methods=("get", "get_many", "set", "set_many", "add", "incr")):
    backend = type(caches["default"])

    def refuse(*args, **kwargs):
        raise error

    for method in methods:
        monkeypatch.setattr(backend, method, refuse)


@pytest.mark.parametrize("error", [redis.exceptions.ConnectionError("down"), RuntimeError("down")])
def test_with_the_cache_down_every_answer_comes_from_the_database_and_purchases_go_through(
    error, locmem_cache, monkeypatch, anna, cafe, salon, owner, django_capture_on_commit_callbacks
):
    coupon_chain(cafe, salon)
    buy(cafe, anna, "p1", "1000.00")
    event = make_event(cafe, owner)
    client = login(anna)
    break_the_cache(monkeypatch, error)

    assert ask(client, CARD, expect="miss")[0].json()["balance"] == "50.00"
    with django_capture_on_commit_callbacks(execute=True):
        buy(cafe, anna, "p2", "1000.00")

    assert ask(client, CARD, expect="miss")[0].json()["balance"] == "100.00"
    assert ask(client, CARD, expect="miss")[0].json()["balance"] == "100.00"
    assert len(ask(client, LEDGER, expect="miss")[0].json()["results"]) == 2
    assert len(ask(client, COUPONS, expect="miss")[0].json()["results"]) == 2
    assert listed(ask(client, EVENTS, expect="miss")[0], event)["seats_left"] == 10


def test_a_purchase_made_while_the_cache_refused_writes_is_not_hidden_by_an_older_answer(
    locmem_cache, monkeypatch, anna, cafe, django_capture_on_commit_callbacks
):
    """A Redis blip (a timeout, a failover) during the purchase: both renewals fail, but the
    answer stored before it is still there when the cache answers again."""
    buy(cafe, anna, "p1", "1000.00")
    client = login(anna)
    ask(client, CARD, expect="miss")
    ask(client, CARD, expect="hit")

    with monkeypatch.context() as blip:
        break_the_cache(blip, redis.exceptions.TimeoutError("Timeout writing to socket"), methods=("set_many",))
        with django_capture_on_commit_callbacks(execute=True):
            buy(cafe, anna, "p2", "1000.00")

    assert ask(client, CARD)[0].json()["balance"] == "100.00"


def test_after_a_failure_the_cache_is_left_alone_then_used_again_without_a_stale_answer(
    locmem_cache, monkeypatch, anna, cafe, django_capture_on_commit_callbacks
):
    """A hanging Redis must not cost every request its timeout: after one failure the process
    leaves the cache alone for CACHE_RETRY_SECONDS; the scopes written meanwhile are renewed
    before anything is served from the cache again."""
    buy(cafe, anna, "p1", "1000.00")
    client = login(anna)
    ask(client, CARD, expect="miss")
    ask(client, CARD, expect="hit")
    calls = []
    backend = type(caches["default"])
    real_get_many = backend.get_many

    with monkeypatch.context() as outage:

        def hanging(self, *args, **kwargs):
            calls.append("get_many")
            raise redis.exceptions.TimeoutError("Timeout reading from socket")

        outage.setattr(backend, "get_many", hanging)
        outage.setattr(backend, "set_many", hanging)
        ask(client, CARD, expect="miss")
        assert calls == ["get_many"]  # the one request that found out
        with django_capture_on_commit_callbacks(execute=True):
            buy(cafe, anna, "p2", "1000.00")
        assert ask(client, CARD, expect="miss")[0].json()["balance"] == "100.00"
        assert calls == ["get_many"]  # left alone: neither the reads nor the renewals tried it

    monkeypatch.setattr(backend, "get_many", real_get_many)
    later(monkeypatch)
    # The cache holds the card from before p2 with the versions of then: renewed first.
    assert ask(client, CARD, expect="miss")[0].json()["balance"] == "100.00"
    assert ask(client, CARD, expect="hit")[0].json()["balance"] == "100.00"


def test_past_so_many_scopes_waiting_for_renewal_every_answer_is_retired(locmem_cache, monkeypatch, anna, cafe):
    buy(cafe, anna, "p1", "1000.00")
    client = login(anna)
    ask(client, CARD, expect="miss")
    ask(client, CARD, expect="hit")
    monkeypatch.setattr(answers, "MAX_UNRENEWED", 3)

    with monkeypatch.context() as outage:
        break_the_cache(outage, RuntimeError("down"), methods=("set_many",))
        answers.changed("loyalty:someone", "loyalty:another", "coupons:someone", "events")

    assert answers._unrenewed == {answers.EVERYTHING}
    later(monkeypatch)
    assert ask(client, CARD, expect="miss")[0].status_code == 200  # Anna's card was retired too
    assert answers._unrenewed == set()


def later(monkeypatch):
    """Past the time the process leaves a failed cache alone."""
    now = answers._clock()
    monkeypatch.setattr(answers, "_clock", lambda: now + answers.CACHE_RETRY_SECONDS + 1)


# --- Bulk writes --------------------------------------------------------------------------------


@pytest.mark.parametrize("committed", [False, True], ids=["in-transaction", "committed"])
def test_expiring_bonuses_renews_the_cached_card(committed, anna, cafe, django_capture_on_commit_callbacks):
    buy(cafe, anna, "p1", "1000.00")
    client = login(anna)
    ask(client, CARD, expect="miss")
    assert ask(client, CARD, expect="hit")[0].json()["balance"] == "50.00"

    with django_capture_on_commit_callbacks(execute=committed):
        # The job run as of a day past the lot's expiry; the clock has not moved, so only the
        # renewal can retire the card (its own `changes_at` is a year away).
        assert loyalty.check_bonus_expiration(now=in_hours(24 * 366)) == [anna.pk]

    card = ask(client, CARD, expect="miss")[0].json()
    assert (card["balance"], card["expiries"]) == ("0.00", [])


@pytest.mark.parametrize("committed", [False, True], ids=["in-transaction", "committed"])
def test_the_nightly_tier_pass_renews_the_cached_card(committed, anna, cafe, django_capture_on_commit_callbacks):
    buy(cafe, anna, "p1", "1000.00")
    client = login(anna)
    ask(client, CARD, expect="miss")
    assert ask(client, CARD, expect="hit")[0].json()["spend_365"] == "1000.00"

    with django_capture_on_commit_callbacks(execute=committed):
        # As of a year and a day later: the purchase no longer counts.
        loyalty.recompute_all_tiers(at=in_hours(24 * 366))

    card = ask(client, CARD, expect="miss")[0].json()
    assert (card["spend_365"], card["spend_to_next_tier"]) == ("0.00", "15000.00")


def test_an_imported_history_renews_the_cached_card(anna, cafe, django_capture_on_commit_callbacks):
    client = login(anna)
    ask(client, CARD, expect="miss")
    assert ask(client, CARD, expect="hit")[0].json()["balance"] == "0.00"

    row = loyalty.ImportRow(line=1, external_id="h1", phone=anna.phone, amount=D("1000.00"), occurred_at=in_hours(-24))
    with django_capture_on_commit_callbacks(execute=True):
        assert loyalty.import_purchases(business=cafe, rows=[row]).imported == 1

    assert ask(client, CARD, expect="miss")[0].json()["balance"] == "50.00"


@pytest.mark.parametrize("committed", [False, True], ids=["in-transaction", "committed"])
def test_finishing_events_renews_the_cached_events_list(
    committed, anna, cafe, owner, settings, django_capture_on_commit_callbacks
):
    coming = make_event(cafe, owner)
    starts_at = in_hours(-settings.EVENTS_NO_SHOW_AFTER_HOURS - 5)
    over = Event.objects.create(
        business=cafe,
        title="Вчерашняя",
        starts_at=starts_at,
        ends_at=starts_at + timedelta(hours=2),
        registration_deadline=starts_at,
        capacity=10,
        status=Event.Status.PUBLISHED,
    )
    Registration.objects.create(
        event=over, customer=anna, status=Registration.Status.REGISTERED, registered_at=starts_at - timedelta(days=1)
    )
    client = login(anna)
    first, _ = ask(client, EVENTS, expect="miss")
    ask(client, EVENTS, expect="hit")

    with django_capture_on_commit_callbacks(execute=committed):
        assert events.finish_events() == (1, 1)

    second, _ = ask(client, EVENTS, expect="miss")
    assert [item["id"] for item in second.json()["results"]] == [coming.pk]
    assert second.json() == first.json()


# --- A vote that fails after moving the counters ------------------------------------------------


def test_a_vote_that_rolls_back_is_not_left_in_the_cached_events_list(anna, boris, cafe, owner, monkeypatch):
    """The vote counters live in the cache and move before the vote commits (events.services.
    votes); a page read in that window holds the uncommitted vote. If the vote then fails, its
    renewal on commit never comes."""
    event = make_event(cafe, owner, propose=True, vote_threshold=3, voting_deadline=in_hours(24))
    real_move = event_votes._move_counters

    def moved_then_read_then_failed(event_id, deltas):
        real_move(event_id, deltas)
        ask(login(anna), EVENTS, expect="miss")  # another customer's request in the meantime
        raise DatabaseError("could not serialize access")

    with monkeypatch.context() as failing:
        failing.setattr(event_votes, "_move_counters", moved_then_read_then_failed)
        with pytest.raises(DatabaseError):
            events.process_vote(boris, event, Vote.Choice.UP)

    assert not Vote.objects.exists()
    assert events.vote_counts(event.pk) == {Vote.Choice.UP: 0, Vote.Choice.DOWN: 0}
    response, _ = ask(login(anna), EVENTS)
    assert listed(response, event)["votes"]["up"] == 0, f"X-Cache: {response['X-Cache']}"


# --- What authentication keeps of the user -------------------------------------------------------


def test_logging_out_everywhere_refuses_a_token_whose_user_was_kept_in_the_cache(anna, cafe):
    from accounts.services import revoke_all_tokens

    client = login(anna)
    ask(client, CARD, expect="miss")
    assert len(ask(client, CARD, expect="hit")[1]) == 0  # the user was not read: it was kept

    with time_machine.travel(timezone.now() + timedelta(seconds=2)):
        revoke_all_tokens(anna)
        response = client.get(CARD)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_revoked"


@pytest.mark.parametrize("close", ["staff deactivates", "customer closes the account"])
def test_a_deactivated_or_closed_account_is_refused_though_its_user_was_kept(close, anna, cafe):
    from accounts.services import close_account

    client = login(anna)
    ask(client, CARD, expect="miss")
    ask(client, CARD, expect="hit")

    if close == "staff deactivates":
        anna.is_active = False
        anna.save()
    else:
        close_account(user=anna)

    assert client.get(CARD).status_code == 401


def test_a_view_that_reads_more_than_the_id_gets_the_whole_user(anna, cafe):
    client = login(anna)
    ask(client, CARD, expect="miss")  # keeps what authentication checks of Anna

    with CaptureQueriesContext(connection) as queries:
        profile = client.get("/api/v1/me/")

    assert profile.status_code == 200
    assert profile.json()["phone"] == anna.phone
    assert any("accounts_user" in query["sql"] for query in queries)  # read when the view needed it


def test_a_signed_token_whose_user_id_is_not_an_id_is_refused(anna, cafe):
    token = RefreshToken.for_user(anna).access_token
    token["user_id"] = "not-a-uuid"
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")

    response = client.get(CARD)

    assert response.status_code == 401
