"""The portal's frame: every view needs a login and a membership, roles are enforced on
every view, the business switcher, CSRF, and the money format."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import resolve, reverse
from django.utils import timezone, translation

from accounts.models import ApiKey, Membership
from accounts.portal import SESSION_BUSINESS, money
from analytics.models import Campaign
from events import services as events
from integrations.models import ImportJob
from loyalty.models import BonusAccount, LedgerEntry, LoyaltyProgram, ProgramChange, Refund
from svoykrug import portal_urls
from tests.factories import ApiKeyFactory, BusinessFactory, CRMIntegrationFactory, MembershipFactory, UserFactory

OWNER, MANAGER, CASHIER = Membership.Role.OWNER, Membership.Role.MANAGER, Membership.Role.CASHIER
EVERYONE = {OWNER, MANAGER, CASHIER}
MANAGERS = {OWNER, MANAGER}


@pytest.fixture
def world(business_a, owner, manager, cashier, buy):
    """A's staff of every role, a customer of A with a purchase, and an API key of A."""
    purchase = buy(business_a, "+79991112233", "1000.00", external_id="pos-1")
    api_key, _raw = ApiKeyFactory(business=business_a)
    return {
        OWNER: owner,
        MANAGER: manager,
        CASHIER: cashier,
        "customer": purchase.customer,
        "purchase": purchase,
        "api_key": api_key,
        "integration": CRMIntegrationFactory(business=business_a, provider="renovatio"),
        # A finished import: its pages read no file.
        "job": ImportJob.objects.create(
            business=business_a, original_name="history.csv", file="imports/history.csv", status="done", rows_total=0
        ),
        # A draft to customers at risk (no scores: sending it reaches nobody, no warehouse read).
        "campaign": Campaign.objects.create(business=business_a, min_risk=0.5, title="Кофе", text="Скидка"),
        "event": events.create_event(
            events.EventCreate(
                business=business_a,
                title="Дегустация",
                starts_at=timezone.now() + timedelta(days=3),
                ends_at=timezone.now() + timedelta(days=3, hours=2),
                capacity=10,
            ),
            owner,
        ),
    }


def _views(world):
    """Every portal view: (method, url, form data, roles allowed)."""
    customer, purchase, api_key = world["customer"].pk, world["purchase"].pk, world["api_key"].pk
    integration, job = world["integration"].pk, world["job"].pk
    nowhere = "00000000-0000-0000-0000-000000000001"  # test and sync would call the CRM: 404 past the role check
    event = world["event"].pk
    return [
        ("get", "/portal/crosspromo/", None, MANAGERS),
        ("get", "/portal/crosspromo/new/", None, MANAGERS),
        ("post", "/portal/crosspromo/new/", {}, MANAGERS),  # invalid: nothing is created
        ("get", "/portal/crosspromo/recommendations/", None, MANAGERS),
        ("get", "/portal/crosspromo/0/", None, MANAGERS),  # no such chain: 404 past the role check
        ("post", "/portal/crosspromo/0/change/", {"action": "pause"}, MANAGERS),
        ("get", "/portal/", None, EVERYONE),
        ("get", "/portal/dashboard/figures.csv", None, MANAGERS),
        ("get", "/portal/dashboard/series.csv", None, MANAGERS),
        ("get", "/portal/dashboard/segments.csv", None, MANAGERS),
        ("get", "/portal/dashboard/at-risk.csv", None, MANAGERS),
        ("get", "/portal/cashier/", None, EVERYONE),
        ("post", "/portal/cashier/", {"phone": "+79991112233", "amount": "100", "action": "quote"}, EVERYONE),
        ("get", "/portal/program/", None, EVERYONE),
        ("post", "/portal/program/edit/", {"accrual_rate": "7", "max_redeem_share": "30"}, MANAGERS),
        ("get", "/portal/customers/", None, EVERYONE),
        ("get", f"/portal/customers/{customer}/", None, EVERYONE),
        ("get", f"/portal/customers/{customer}/adjust/", None, MANAGERS),
        ("post", f"/portal/customers/{customer}/adjust/", {"amount": "5", "reason": "x"}, MANAGERS),
        ("get", "/portal/transactions/", None, EVERYONE),
        ("get", f"/portal/transactions/{purchase}/", None, EVERYONE),
        ("post", f"/portal/transactions/{purchase}/refund/", {"amount": "1"}, MANAGERS),
        ("get", "/portal/settlement/", None, MANAGERS),
        ("get", "/portal/api-keys/", None, MANAGERS),
        ("post", "/portal/api-keys/", {"name": "POS 2"}, MANAGERS),
        ("post", f"/portal/api-keys/{api_key}/revoke/", None, MANAGERS),
        ("post", "/portal/switch/", {"business": "x"}, EVERYONE),
        ("get", "/portal/integrations/", None, MANAGERS),
        ("get", "/portal/integrations/renovatio/connect/", None, MANAGERS),
        ("post", "/portal/integrations/renovatio/connect/", {}, MANAGERS),  # invalid: no CRM call
        ("post", f"/portal/integrations/{nowhere}/test/", None, MANAGERS),
        ("post", f"/portal/integrations/{nowhere}/sync/", None, MANAGERS),
        ("post", f"/portal/integrations/{integration}/active/", {"active": "1"}, MANAGERS),
        ("get", f"/portal/integrations/{integration}/records/", None, MANAGERS),
        ("get", f"/portal/integrations/{integration}/webhooks/", None, MANAGERS),
        ("get", "/portal/imports/", None, MANAGERS),
        ("post", "/portal/imports/", {}, MANAGERS),
        ("get", f"/portal/imports/{job}/", None, MANAGERS),
        ("get", f"/portal/imports/{job}/progress.json", None, MANAGERS),
        ("get", f"/portal/imports/{job}/preview/", None, MANAGERS),
        ("post", f"/portal/imports/{job}/preview/", {}, MANAGERS),
        ("post", f"/portal/imports/{job}/cancel/", None, MANAGERS),
        ("get", "/portal/campaigns/", None, MANAGERS),
        ("get", "/portal/campaigns/new/", None, MANAGERS),
        ("post", "/portal/campaigns/new/", {}, MANAGERS),  # invalid: nothing is created
        ("get", f"/portal/campaigns/{world['campaign'].pk}/", None, MANAGERS),
        ("get", f"/portal/campaigns/{world['campaign'].pk}/edit/", None, MANAGERS),
        ("post", f"/portal/campaigns/{world['campaign'].pk}/edit/", {}, MANAGERS),
        ("post", f"/portal/campaigns/{world['campaign'].pk}/send/", None, MANAGERS),
        ("get", "/portal/events/", None, EVERYONE),
        ("get", "/portal/events/new/", None, MANAGERS),
        ("post", "/portal/events/new/", {}, MANAGERS),  # invalid: nothing is created
        ("get", f"/portal/events/{event}/", None, EVERYONE),
        ("get", f"/portal/events/{event}/edit/", None, MANAGERS),
        ("post", f"/portal/events/{event}/edit/", {}, MANAGERS),  # invalid: nothing changes
        ("post", f"/portal/events/{event}/publish/", None, MANAGERS),  # published already: refused, a message
        ("post", "/portal/events/0/cancel/", None, MANAGERS),  # no such event: 404 past the role check
        ("get", f"/portal/events/{event}/registrations.csv", None, MANAGERS),
        ("get", f"/portal/events/{event}/check-in/", None, EVERYONE),
        ("post", f"/portal/events/{event}/check-in/", {"code": "NOSUCHCODE"}, EVERYONE),  # refused: no ticket
    ]


@pytest.mark.django_db
def test_the_role_table_covers_every_portal_page(world):
    covered = {resolve(url.partition("?")[0]).url_name for _method, url, _data, _allowed in _views(world)}

    assert covered == {pattern.name for pattern in portal_urls.urlpatterns} - {"login", "login-code", "logout"}


@pytest.mark.django_db
@pytest.mark.parametrize("role", [OWNER, MANAGER, CASHIER])
def test_every_view_lets_in_exactly_the_roles_it_allows(client, login, world, role):
    login(world[role])
    for method, url, data, allowed in _views(world):
        response = getattr(client, method)(url, data or {})
        if role in allowed:
            assert response.status_code in (200, 302, 400, 404), (method, url, response.status_code)
            assert response.status_code != 403
        else:
            assert response.status_code == 403, (method, url, response.status_code)
            assert "Not allowed" in response.content.decode()


@pytest.mark.django_db
def test_every_view_sends_an_anonymous_visitor_to_the_login(client, world):
    for method, url, data, _allowed in _views(world):
        response = getattr(client, method)(url, data or {})

        assert response.status_code == 302, (method, url)
        back = url if method == "get" else "/portal/"  # a form's POST cannot be replayed after the login
        assert response["Location"] == f"/portal/login/?next={back}"


@pytest.mark.django_db
def test_cashier_cannot_change_the_program_and_nothing_changes(client, login, world, business_a):
    login(world[CASHIER])

    response = client.post(
        "/portal/program/edit/",
        {"accrual_rate": "50", "max_redeem_share": "90", "bonus_lifetime_days": "30", "hold_days": "0"},
    )

    assert response.status_code == 403
    program = LoyaltyProgram.objects.get(business=business_a)
    assert program.accrual_rate == Decimal("5.00")
    assert program.max_redeem_share == Decimal("30.00")
    assert ProgramChange.objects.count() == 0


@pytest.mark.django_db
def test_cashier_sees_the_program_read_only(client, login, world):
    login(world[CASHIER])

    response = client.get("/portal/program/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "Only the owner or a manager can change the terms." in html
    assert 'action="/portal/program/edit/"' not in html
    assert all(field.field.disabled for field in response.context["form"])


@pytest.mark.django_db
def test_cashier_cannot_adjust_a_balance_and_nothing_changes(client, login, world):
    login(world[CASHIER])
    customer = world["customer"]

    response = client.post(
        f"/portal/customers/{customer.pk}/adjust/", {"amount": "500", "reason": "gift", "key": "a" * 32}
    )

    assert response.status_code == 403
    assert BonusAccount.objects.get(user=customer).balance == Decimal("50.00")
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.ADJUSTMENT).exists()


@pytest.mark.django_db
def test_cashier_cannot_manage_api_keys_and_nothing_changes(client, login, world, business_a):
    login(world[CASHIER])

    assert client.get("/portal/api-keys/").status_code == 403
    assert client.post("/portal/api-keys/", {"name": "Mine"}).status_code == 403
    assert client.post(f"/portal/api-keys/{world['api_key'].pk}/revoke/").status_code == 403

    assert list(ApiKey.objects.filter(business=business_a).values_list("name", "revoked_at")) == [("POS", None)]


@pytest.mark.django_db
def test_cashier_cannot_refund_and_nothing_changes(client, login, world):
    login(world[CASHIER])
    purchase = world["purchase"]

    response = client.post(f"/portal/transactions/{purchase.pk}/refund/", {"refund_id": "portal-" + "a" * 32})

    assert response.status_code == 403
    purchase.refresh_from_db()
    assert purchase.status == "completed"
    assert not Refund.objects.exists()


@pytest.mark.django_db
def test_cashier_navigation_shows_only_what_a_cashier_may_open(client, login, world):
    login(world[CASHIER])

    html = client.get("/portal/").content.decode()

    assert 'href="/portal/cashier/"' in html
    assert 'href="/portal/customers/"' in html
    assert 'href="/portal/transactions/"' in html
    assert 'href="/portal/program/"' in html
    assert 'href="/portal/events/"' in html  # the door's check-in is theirs too
    assert 'href="/portal/settlement/"' not in html
    assert 'href="/portal/api-keys/"' not in html


@pytest.mark.django_db
def test_cashier_sees_no_refund_form_on_a_purchase(client, login, world):
    login(world[CASHIER])

    html = client.get(f"/portal/transactions/{world['purchase'].pk}/").content.decode()

    assert "Only the owner or a manager can refund a purchase." in html
    assert "/refund/" not in html


@pytest.mark.django_db
def test_person_without_membership_gets_no_access_page(client, login):
    staff = UserFactory(phone="+79990000901", is_staff=True)  # e.g. logged in to the admin
    login(staff)

    response = client.get("/portal/")

    assert response.status_code == 403
    assert "This phone number has no access to the partner portal." in response.content.decode()


@pytest.mark.django_db
def test_member_whose_only_business_was_deactivated_loses_access(client, login, world, business_a):
    login(world[OWNER])
    business_a.is_active = False
    business_a.save()

    assert client.get("/portal/").status_code == 403


# --- Business switcher ----------------------------------------------------------------------


@pytest.fixture
def two_hats(business_a, business_b):
    """Owner at A, cashier at B."""
    person = UserFactory(phone="+79990000401", first_name="Вера")
    MembershipFactory(user=person, business=business_b, role=CASHIER)
    MembershipFactory(user=person, business=business_a, role=OWNER)
    return person


@pytest.mark.django_db
def test_switcher_lists_the_memberships_and_starts_with_the_first_by_name(client, login, two_hats, business_a):
    login(two_hats)

    response = client.get("/portal/")

    assert response.wsgi_request.business == business_a
    assert response.wsgi_request.membership.role == OWNER
    html = response.content.decode()
    assert 'name="business"' in html
    assert f'<option value="{business_a.pk}" selected>Кофейня «Зерно»</option>' in html
    assert "Салон «Лён»</option>" in html


@pytest.mark.django_db
def test_switching_business_changes_the_scope_and_the_role(client, login, two_hats, business_b, buy):
    purchase_b = buy(business_b, "+79991112233", "100.00")
    login(two_hats)

    response = client.post("/portal/switch/", {"business": str(business_b.pk)})

    assert response.status_code == 302
    assert response["Location"] == "/portal/"
    assert [str(m) for m in get_messages(response.wsgi_request)] == ["You are now working in Салон «Лён»."]
    assert client.session[SESSION_BUSINESS] == str(business_b.pk)
    page = client.get("/portal/")
    assert page.wsgi_request.business == business_b
    assert f'<option value="{business_b.pk}" selected>Салон «Лён»</option>' in page.content.decode()
    assert client.get(f"/portal/transactions/{purchase_b.pk}/").status_code == 200
    # A cashier at B: no API keys there.
    assert client.get("/portal/api-keys/").status_code == 403


@pytest.mark.django_db
def test_switching_to_a_business_one_is_not_a_member_of_is_404(client, login, world, business_a, business_b):
    login(world[OWNER], business=business_a)

    response = client.post("/portal/switch/", {"business": str(business_b.pk)})

    assert response.status_code == 404
    assert client.session[SESSION_BUSINESS] == str(business_a.pk)
    assert client.post("/portal/switch/", {"business": "not-a-uuid"}).status_code == 404


@pytest.mark.django_db
def test_a_single_membership_shows_the_business_name_without_a_switcher(client, login, world):
    login(world[OWNER])

    html = client.get("/portal/").content.decode()

    assert '<span class="business-name">Кофейня «Зерно»</span>' in html
    assert 'name="business"' not in html


@pytest.mark.django_db
def test_a_business_left_behind_in_the_session_falls_back_to_the_first(client, login, two_hats, business_a):
    other = BusinessFactory(name="Чужая")
    login(two_hats, business=other)

    assert client.get("/portal/").wsgi_request.business == business_a


# --- CSRF and money -------------------------------------------------------------------------


@pytest.mark.django_db
def test_posts_without_a_csrf_token_are_refused(world):
    client = Client(enforce_csrf_checks=True, headers={"Accept-Language": "en"})
    client.force_login(world[OWNER])

    response = client.post("/portal/api-keys/", {"name": "POS 2"})

    assert response.status_code == 403
    assert ApiKey.objects.count() == 1
    assert client.post("/portal/logout/").status_code == 403


@pytest.mark.django_db
def test_every_form_page_carries_a_csrf_token(client, login, world):
    login(world[OWNER])
    pages = [
        "/portal/",  # the logout form in the top bar
        "/portal/cashier/",
        "/portal/program/",
        f"/portal/customers/{world['customer'].pk}/adjust/",
        f"/portal/transactions/{world['purchase'].pk}/",
        "/portal/api-keys/",
    ]
    for url in pages:
        assert "csrfmiddlewaretoken" in client.get(url).content.decode(), url


def test_money_has_two_decimals_and_the_rouble_sign():
    with translation.override("en"):
        assert money(Decimal("1234.5")) == "1,234.50\u00a0₽"
        assert money(Decimal("-7")) == "-7.00\u00a0₽"
        assert money(None) == "—"
    with translation.override("ru"):
        assert money(Decimal("1234.5")) == "1\u00a0234,50\u00a0₽"


def test_portal_urls_reverse_under_the_portal_namespace():
    assert reverse("portal:dashboard") == "/portal/"
    assert reverse("portal:login") == "/portal/login/"
