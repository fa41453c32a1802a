"""A member of business A gets 404 for every object of business B, on every portal URL that
names an object, and nothing of B changes. Searches by B's phones and ids find nothing."""

from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.urls import resolve
from django.utils import timezone

from accounts.portal import SESSION_BUSINESS
from events import services as events
from events.models import Event, Registration
from loyalty.models import BonusAccount, LedgerEntry, Refund, Transaction
from svoykrug import portal_urls
from tests.factories import ApiKeyFactory
from tests.portal.test_campaigns_portal import ISOLATION_CASES as CAMPAIGN_CASES
from tests.portal.test_crosspromo_portal import ISOLATION_CASES as CROSSPROMO_CASES
from tests.portal.test_integrations_portal import ISOLATION_CASES as INTEGRATION_CASES

B_ONLY_PHONE = "+79991110003"
SHARED_PHONE = "+79991110001"


@pytest.fixture
def b_objects(business_a, business_b, owner_b, buy):
    """B's objects: a customer who bought only at B, a purchase of a customer who bought at
    both (so the person is A's customer too), a purchase made at B's cashier, an API key;
    B's event starting soon (its door open) with that customer's ticket, and B's proposal."""
    buy(business_a, SHARED_PHONE, "1000.00", external_id="same-id")
    shared_purchase = buy(business_b, SHARED_PHONE, "500.00", external_id="b-shared")
    only_b = buy(business_b, B_ONLY_PHONE, "300.00", external_id="same-id")  # the same external id as A's
    cashier_purchase = buy(
        business_b, B_ONLY_PHONE, "100.00", external_id="cashier-" + "d" * 32, source=Transaction.Source.CASHIER
    )
    api_key, raw_key = ApiKeyFactory(business=business_b)
    starts = timezone.now() + timedelta(minutes=30)
    event = events.create_event(
        events.EventCreate(
            business=business_b,
            title="Вечер у Льна",
            starts_at=starts,
            ends_at=starts + timedelta(hours=2),
            capacity=10,
            attendance_bonus=Decimal("100"),  # a check-in that got through would change the balance
        ),
        owner_b,
    )
    ticket = events.register_for_event(only_b.customer, event)
    proposal = events.create_event(
        events.EventCreate(
            business=business_b,
            title="Идея Льна",
            starts_at=starts + timedelta(days=5),
            ends_at=starts + timedelta(days=5, hours=2),
            capacity=10,
            propose=True,
            vote_threshold=5,
            voting_deadline=starts + timedelta(days=2),
        ),
        owner_b,
    )
    return {
        "customer": only_b.customer,
        "purchase": only_b,
        "shared_purchase": shared_purchase,
        "cashier_purchase": cashier_purchase,
        "api_key": api_key,
        "business": business_b,
        "event": event,
        "proposal": proposal,
        "ticket": SimpleNamespace(pk=ticket.ticket_code),  # filled in as its code
    }


CASES = [
    # (name, method, url template, form data); {...} are B's objects.
    ("customer", "get", "/portal/customers/{customer}/", None),
    ("customer-adjust", "get", "/portal/customers/{customer}/adjust/", None),
    (
        "customer-adjust",
        "post",
        "/portal/customers/{customer}/adjust/",
        {"amount": "100.00", "reason": "чужой", "key": "e" * 32},
    ),
    ("transaction", "get", "/portal/transactions/{purchase}/", None),
    ("transaction", "get", "/portal/transactions/{shared_purchase}/", None),
    ("transaction", "get", "/portal/transactions/{cashier_purchase}/", None),
    ("transaction-refund", "post", "/portal/transactions/{purchase}/refund/", {"refund_id": "portal-" + "e" * 32}),
    (
        "transaction-refund",
        "post",
        "/portal/transactions/{shared_purchase}/refund/",
        {"amount": "100.00", "refund_id": "portal-" + "f" * 32},
    ),
    ("cashier", "get", "/portal/cashier/?receipt={purchase}", None),
    ("cashier", "get", "/portal/cashier/?receipt={cashier_purchase}", None),
    ("api-key-revoke", "post", "/portal/api-keys/{api_key}/revoke/", None),
    ("switch-business", "post", "/portal/switch/", {"business": "{business}"}),
    ("event", "get", "/portal/events/{event}/", None),
    ("event-edit", "get", "/portal/events/{event}/edit/", None),
    ("event-edit", "post", "/portal/events/{event}/edit/", {"title": "Чужое", "capacity": "1"}),
    ("event-publish", "post", "/portal/events/{proposal}/publish/", None),
    ("event-cancel", "post", "/portal/events/{event}/cancel/", None),
    ("event-csv", "get", "/portal/events/{event}/registrations.csv", None),
    ("event-checkin", "get", "/portal/events/{event}/check-in/", None),
    ("event-checkin", "post", "/portal/events/{event}/check-in/", {"code": "{ticket}"}),
]


def _fill(value, objects):
    return value.format(**{name: obj.pk for name, obj in objects.items()})


def test_the_cases_cover_every_portal_url_that_names_an_object():
    named = {pattern.name for pattern in portal_urls.urlpatterns if pattern.pattern.converters}
    query_or_post = {"cashier", "switch-business"}  # objects named in the query string or the form
    # The Integrations section's own cases are in test_integrations_portal.py; its connect page
    # names a provider, not an object.
    elsewhere = {name for name, *_rest in INTEGRATION_CASES} | {"integration-connect"}
    elsewhere |= {name for name, *_rest in CAMPAIGN_CASES}  # test_campaigns_portal.py
    elsewhere |= {name for name, *_rest in CROSSPROMO_CASES}  # test_crosspromo_portal.py

    assert {name for name, *_rest in CASES} == (named | query_or_post) - elsewhere


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "method", "url", "data"), CASES, ids=[f"{c[1]} {c[2]}" for c in CASES])
def test_a_member_of_a_gets_404_for_every_object_of_b(
    client, login, owner, business_a, b_objects, name, method, url, data
):
    login(owner, business=business_a)
    url = _fill(url, b_objects)
    data = {key: _fill(value, b_objects) for key, value in (data or {}).items()}
    assert resolve(url.partition("?")[0]).url_name == name

    response = getattr(client, method)(url, data)

    assert response.status_code == 404
    # Nothing of B changed.
    assert Transaction.objects.filter(business=b_objects["business"], status=Transaction.Status.COMPLETED).count() == 3
    assert not Refund.objects.exists()
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.ADJUSTMENT).exists()
    assert BonusAccount.objects.get(user=b_objects["customer"]).balance == Decimal("40.00")
    b_objects["api_key"].refresh_from_db()
    assert b_objects["api_key"].revoked_at is None
    assert client.session[SESSION_BUSINESS] == str(business_a.pk)
    event = Event.objects.get(pk=b_objects["event"].pk)
    assert (event.status, event.title, event.capacity, event.registered_count) == ("published", "Вечер у Льна", 10, 1)
    assert Registration.objects.get(event=event).status == Registration.Status.REGISTERED
    assert Event.objects.get(pk=b_objects["proposal"].pk).status == Event.Status.PROPOSED


@pytest.mark.django_db
def test_the_same_objects_open_for_a_member_of_b(client, login, owner_b, b_objects):
    """The control: the 404s above come from the scope, not from broken URLs."""
    login(owner_b)

    for _name, method, url, _data in CASES:
        if method == "get":
            assert client.get(_fill(url, b_objects)).status_code == 200, url


@pytest.mark.django_db
def test_searches_by_b_phones_find_nothing_at_a(client, login, owner, business_a, b_objects):
    login(owner, business=business_a)

    customers = client.get("/portal/customers/", {"phone": B_ONLY_PHONE})
    purchases = client.get("/portal/transactions/", {"phone": B_ONLY_PHONE})
    shared = client.get("/portal/transactions/", {"phone": SHARED_PHONE})

    assert list(customers.context["page"]) == []
    assert list(purchases.context["page"]) == []
    assert [p.external_id for p in shared.context["page"]] == ["same-id"]  # A's purchase, not B's "b-shared"


@pytest.mark.django_db
def test_a_shared_customer_card_at_a_shows_only_a_purchases_and_visits(client, login, owner, business_a, b_objects):
    login(owner, business=business_a)
    shared_customer = b_objects["shared_purchase"].customer

    response = client.get(f"/portal/customers/{shared_customer.pk}/")

    assert response.status_code == 200
    assert [p.business_id for p in response.context["purchases"]] == [business_a.pk]
    assert response.context["customer"].visits == 1
    assert response.context["customer"].spend_here == Decimal("1000.00")
    assert "b-shared" not in response.content.decode()


@pytest.mark.django_db
def test_a_cashier_form_with_b_external_id_records_at_a_and_leaves_b_alone(client, login, owner, business_a, b_objects):
    login(owner, business=business_a)
    external_id = b_objects["cashier_purchase"].external_id

    response = client.post(
        "/portal/cashier/",
        {"phone": SHARED_PHONE, "amount": "100.00", "external_id": external_id, "action": "record"},
    )

    assert response.status_code == 302
    ours = Transaction.objects.get(business=business_a, external_id=external_id)
    assert ours.gross_amount == Decimal("100.00")
    theirs = Transaction.objects.get(business=b_objects["business"], external_id=external_id)
    assert theirs.pk == b_objects["cashier_purchase"].pk
    assert theirs.gross_amount == Decimal("100.00")
    assert theirs.customer == b_objects["customer"]
