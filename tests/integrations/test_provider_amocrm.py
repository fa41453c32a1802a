"""The amoCRM provider against a local fake amoCRM (tests/fakes/amocrm.py): OAuth code swap and
token rotation, won leads as purchases, refunds, paging, webhooks and their completion."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import urlencode

import pytest
from django.utils import timezone

from integrations.models import CRMIntegration
from integrations.providers import get_provider
from integrations.providers.amocrm import AmoCrmProvider
from integrations.providers.base import (
    CrmEvent,
    ProviderAuthError,
    ProviderConfigError,
    ProviderUnavailable,
    WebhookRejected,
)
from tests.factories import CRMIntegrationFactory
from tests.fakes.amocrm import CLIENT, CONTACT_ID, PHONE, FakeAmoCrm, load_fixture, load_text, make_lead

FORM = "application/x-www-form-urlencoded"
SINCE = datetime(2020, 4, 1, tzinfo=UTC)
UNTIL = datetime(2020, 5, 1, tzinfo=UTC)


@pytest.fixture
def fake_amocrm(settings):
    settings.AMOCRM_CLIENT_ID = CLIENT["client_id"]
    settings.AMOCRM_CLIENT_SECRET = CLIENT["client_secret"]
    settings.AMOCRM_REDIRECT_URI = CLIENT["redirect_uri"]
    fake = FakeAmoCrm(slow_delay=1.0)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def connected(fake, *, expires_in=timedelta(hours=12), **config):
    return CRMIntegrationFactory(
        provider="amocrm",
        config={"subdomain": "example", "base_url": fake.url, **config},
        credentials={
            "access_token": "access-0",
            "refresh_token": "refresh-0",
            "expires_at": (timezone.now() + expires_in).isoformat(),
        },
    )


@pytest.fixture
def amo(db, fake_amocrm):
    return get_provider(connected(fake_amocrm))


def fetch(provider, since=SINCE, until=UNTIL):
    return list(provider.fetch_changes(since, until))


def stored(provider) -> dict:
    return CRMIntegration.objects.get(pk=provider.integration.pk).credentials


# --- Connection --------------------------------------------------------------------------------


def test_connection_reaches_the_account(amo, fake_amocrm):
    assert isinstance(amo, AmoCrmProvider)
    assert amo.test_connection() == f"amoCRM account {fake_amocrm.url.removeprefix('http://')}"
    (request,) = fake_amocrm.requests
    assert (request.path, request.bearer, request.query["limit"]) == ("/api/v4/leads", "access-0", "1")


@pytest.mark.django_db
def test_bad_credentials_are_an_auth_error_without_the_secrets(fake_amocrm):
    integration = connected(fake_amocrm)
    integration.credentials = {"access_token": "old-access-xyz", "refresh_token": "old-refresh-xyz", "expires_at": ""}
    integration.save()
    with pytest.raises(ProviderAuthError) as caught:
        get_provider(integration).test_connection()
    assert caught.value.message.startswith("amoCRM refused the token: Authorization code or refresh token is invalid")
    assert "xyz" not in caught.value.message
    assert len(fake_amocrm.token_requests()) == 1


def test_the_account_address_comes_from_the_subdomain(amo):
    for typed, expected in [
        ("apfitness", "https://apfitness.amocrm.ru"),
        (" ApFitness.amocrm.ru ", "https://apfitness.amocrm.ru"),
        ("https://apfitness.amocrm.ru/leads/", "https://apfitness.amocrm.ru"),
        ("shop.kommo.com", "https://shop.kommo.com"),
    ]:
        amo.config = {"subdomain": typed}
        assert amo.base_url() == expected
    for typed in ["", "evil.example.com", "a b"]:
        amo.config = {"subdomain": typed}
        with pytest.raises(ProviderConfigError):
            amo.base_url()


# --- Sync ----------------------------------------------------------------------------------------


def test_a_won_lead_is_a_purchase_with_its_contacts_phone(amo, fake_amocrm):
    (page,) = fetch(amo)
    (event,) = page
    assert event.kind == CrmEvent.PURCHASE
    assert event.external_id == "lead:17657"
    assert event.amount == Decimal("25000.00")
    assert event.occurred_at == datetime(2020, 4, 30, 10, 14, 3, tzinfo=UTC)  # closed_at
    assert (event.phone, event.customer_name) == (PHONE, "Иван Петров")
    assert not event.needs_details
    leads_call, contact_call = fake_amocrm.requests
    assert leads_call.query == {
        "filter[updated_at][from]": str(int(SINCE.timestamp())),
        "filter[updated_at][to]": str(int(UNTIL.timestamp())),
        "with": "contacts",
        "limit": "250",
        "page": "1",
        "order[updated_at]": "asc",
    }
    assert contact_call.path == f"/api/v4/contacts/{CONTACT_ID}"


def test_lost_leads_are_refunds_and_other_statuses_are_skipped(amo, fake_amocrm):
    fake_amocrm.leads = [
        make_lead(id=1, status_id=143, updated_at=1588241000, closed_at=1588241000),
        make_lead(id=2, status_id=20067736, updated_at=1588241001, closed_at=None),
        make_lead(id=3, status_id=142, price=0, updated_at=1588241002, closed_at=None),
    ]
    fake_amocrm.lead_contacts = {}
    (page,) = fetch(amo)
    lost, won_without_contact = page
    assert (lost.kind, lost.external_id, lost.refund_id, lost.amount) == ("refund", "lead:1", "lead:1:lost", None)
    assert (won_without_contact.external_id, won_without_contact.phone) == ("lead:3", "")
    assert won_without_contact.amount == Decimal("0.00")
    assert won_without_contact.occurred_at == datetime.fromtimestamp(1588241002, UTC)  # no closed_at: updated_at
    assert [r.path for r in fake_amocrm.requests] == ["/api/v4/leads"]  # no contacts to ask for


def test_won_statuses_come_from_the_settings(db, fake_amocrm):
    provider = get_provider(connected(fake_amocrm, won_status_ids=[20067736]))
    fake_amocrm.leads = [make_lead(id=1, status_id=20067736), make_lead(id=2, status_id=142, updated_at=1588241644)]
    (page,) = fetch(provider)
    assert [event.external_id for event in page] == ["lead:1"]


def test_pages_are_followed_until_an_empty_page(amo, fake_amocrm, monkeypatch):
    monkeypatch.setattr(AmoCrmProvider, "page_size", 1)
    fake_amocrm.leads = [make_lead(id=1, updated_at=1588241000), make_lead(id=2, updated_at=1588241001)]
    fake_amocrm.lead_contacts = {1: [CONTACT_ID], 2: [CONTACT_ID]}
    pages = fetch(amo)
    assert [[event.external_id for event in page] for page in pages] == [["lead:1"], ["lead:2"]]
    lead_calls = fake_amocrm.api_requests("/api/v4/leads")
    assert [call.query["page"] for call in lead_calls] == ["1", "2", "3"]  # the third answered 204
    assert len(fake_amocrm.api_requests("/api/v4/contacts")) == 1  # one contact, asked once


def test_a_page_without_a_next_link_is_the_last(amo, fake_amocrm, monkeypatch):
    monkeypatch.setattr(AmoCrmProvider, "page_size", 2)
    fake_amocrm.leads = [make_lead(id=n, updated_at=1588241000 + n) for n in (1, 2, 3)]
    assert sum(len(page) for page in fetch(amo)) == 3
    assert len(fake_amocrm.api_requests("/api/v4/leads")) == 2


def test_no_leads_is_http_204_and_no_pages(amo, fake_amocrm):
    fake_amocrm.empty = True
    assert fetch(amo) == []


def test_server_errors_are_retried_then_unavailable(amo, fake_amocrm):
    fake_amocrm.fail_status = 500
    with pytest.raises(ProviderUnavailable) as caught:
        fetch(amo)
    assert caught.value.message.startswith("amoCRM: server error 500")
    assert len(fake_amocrm.requests) == 3  # INTEGRATIONS_HTTP_RETRIES = 2


def test_a_slow_answer_is_retried_then_unavailable(amo, fake_amocrm, settings):
    settings.INTEGRATIONS_READ_TIMEOUT_SECONDS = 0.2  # the fake answers after a second
    fake_amocrm.slow = True
    with pytest.raises(ProviderUnavailable):
        amo.test_connection()
    assert len(fake_amocrm.requests) == 3


# --- Tokens ----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_expired_token_is_refreshed_once_stored_encrypted_and_the_call_made(fake_amocrm):
    provider = get_provider(connected(fake_amocrm, expires_in=timedelta(hours=-1)))
    fetch(provider)
    (token_call,) = fake_amocrm.token_requests()
    assert token_call.json == {**CLIENT, "grant_type": "refresh_token", "refresh_token": "refresh-0"}
    assert fake_amocrm.api_requests()[0].bearer == "access-1"
    credentials = stored(provider)
    assert (credentials["access_token"], credentials["refresh_token"]) == ("access-1", "refresh-1")
    assert datetime.fromisoformat(credentials["expires_at"]) > timezone.now() + timedelta(hours=23)
    encrypted = CRMIntegration.objects.get(pk=provider.integration.pk).credentials_encrypted
    assert "access-1" not in encrypted and "refresh-1" not in encrypted


def test_a_401_refreshes_once_and_retries_the_call(amo, fake_amocrm):
    fake_amocrm.expire_access_tokens()
    (page,) = fetch(amo)
    assert page[0].external_id == "lead:17657"
    assert len(fake_amocrm.token_requests()) == 1
    first, retried = fake_amocrm.api_requests("/api/v4/leads")
    assert (first.bearer, retried.bearer) == ("access-0", "access-1")
    assert stored(amo)["refresh_token"] == "refresh-1"


def test_a_pair_rotated_by_another_worker_is_used_without_refreshing(amo, fake_amocrm):
    other_worker = get_provider(CRMIntegration.objects.get(pk=amo.integration.pk))
    tokens = fake_amocrm.issue_tokens()
    other_worker.save_credentials(
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
        expires_at=(timezone.now() + timedelta(hours=24)).isoformat(),
    )
    fake_amocrm.access_tokens.discard("access-0")
    fake_amocrm.refresh_tokens.discard("refresh-0")  # spent by the other worker
    amo.test_connection()
    assert fake_amocrm.token_requests() == []
    assert [r.bearer for r in fake_amocrm.api_requests()] == ["access-0", tokens["access_token"]]


def test_a_refused_refresh_is_an_auth_error(amo, fake_amocrm):
    fake_amocrm.expire_access_tokens()
    fake_amocrm.refuse_refresh = True
    with pytest.raises(ProviderAuthError) as caught:
        fetch(amo)
    assert "Reconnect" in caught.value.message
    assert len(fake_amocrm.token_requests()) == 1
    assert len(fake_amocrm.api_requests()) == 1  # not retried without a new token
    assert stored(amo)["refresh_token"] == "refresh-0"


def test_a_401_after_the_refresh_is_an_auth_error_with_amocrms_words(amo, fake_amocrm, monkeypatch):
    fake_amocrm.expire_access_tokens()
    monkeypatch.setattr(fake_amocrm, "issue_tokens", lambda: load_fixture("oauth_token_response.json"))
    with pytest.raises(ProviderAuthError) as caught:
        amo.test_connection()
    assert caught.value.message.startswith("amoCRM: access refused: Invalid user name or password")
    assert len(fake_amocrm.api_requests()) == 2


@pytest.mark.django_db
def test_on_connect_swaps_the_code_for_tokens_and_forgets_the_code(fake_amocrm):
    integration = CRMIntegrationFactory(
        provider="amocrm",
        config={"subdomain": "example", "base_url": fake_amocrm.url},
        credentials={"auth_code": "good-code"},
    )
    get_provider(integration).on_connect({"subdomain": "example", "auth_code": "good-code"})
    (token_call,) = fake_amocrm.token_requests()
    assert token_call.json == {**CLIENT, "grant_type": "authorization_code", "code": "good-code"}
    credentials = CRMIntegration.objects.get(pk=integration.pk).credentials
    assert set(credentials) == {"access_token", "refresh_token", "expires_at"}
    assert credentials["access_token"] == "access-1"


@pytest.mark.django_db
def test_on_connect_with_a_used_code_is_an_auth_error(fake_amocrm):
    integration = CRMIntegrationFactory(provider="amocrm", config={"base_url": fake_amocrm.url})
    provider = get_provider(integration)
    with pytest.raises(ProviderAuthError):
        provider.on_connect({"subdomain": "example", "auth_code": "used-code"})
    with pytest.raises(ProviderConfigError):
        provider.on_connect({"subdomain": "example", "auth_code": ""})
    assert CRMIntegration.objects.get(pk=integration.pk).credentials == {}


# --- Webhooks ---------------------------------------------------------------------------------------


def test_the_lead_status_webhook_is_a_purchase_to_complete(amo):
    (event,) = amo.parse_webhook(load_text("webhook_lead_status.form.txt").encode(), FORM)
    assert (event.kind, event.external_id, event.needs_details) == ("purchase", "lead:10701093", True)
    assert event.amount == Decimal("22500.00")
    assert event.occurred_at == datetime(2018, 10, 17, 13, 24, 24, tzinfo=UTC)
    assert event.phone == ""


def test_the_lead_add_webhook_is_ignored_unless_its_status_is_won(db, fake_amocrm):
    body = load_text("webhook_lead_add.form.txt").encode()
    (event,) = get_provider(connected(fake_amocrm)).parse_webhook(body, FORM)
    assert (event.kind, event.external_id) == ("ignored", "lead:1190401")
    (event,) = get_provider(connected(fake_amocrm, won_status_ids=[142, 53861254])).parse_webhook(body, FORM)
    assert (event.kind, event.amount, event.needs_details) == ("purchase", Decimal("34343.00"), True)


def status_body(**changes) -> bytes:
    pairs = [
        (key, changes.get(key.removeprefix("leads[status][0][").rstrip("]"), value))
        for key, value in load_fixture("webhook_lead_status.pairs.json")
    ]
    return urlencode(pairs).encode()


def test_a_lead_moved_out_of_won_is_a_refund(amo):
    (event,) = amo.parse_webhook(status_body(status_id="143", old_status_id="142"), FORM)
    assert (event.kind, event.external_id, event.refund_id) == ("refund", "lead:10701093", "lead:10701093:status:143")
    (event,) = amo.parse_webhook(status_body(status_id="143", old_status_id="20067736"), FORM)
    assert event.kind == "ignored"


def test_a_deleted_lead_is_a_refund_and_other_entities_are_ignored(amo):
    body = b"leads%5Bdelete%5D%5B0%5D%5Bid%5D=77&leads%5Bdelete%5D%5B0%5D%5Bstatus_id%5D=142&contacts[update][0][id]=5"
    deleted, contact = amo.parse_webhook(body, FORM)
    assert (deleted.kind, deleted.external_id, deleted.refund_id) == ("refund", "lead:77", "lead:77:deleted")
    assert (contact.kind, contact.external_id) == ("ignored", "contacts:5")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b'{"leads": {"status": [{"id": 1}]}}',
        b"\xff\xfe",
        b"account%5Bsubdomain%5D=apfitness&account%5Bid%5D=17769199",
        b"hello",
        b"leads[status][0]=1&leads[status][0][id]=2",
        b"leads%5Bstatus%5D%5B0%5D%5Bname%5D=no-id",
    ],
)
def test_unreadable_bodies_are_rejected(amo, body):
    with pytest.raises(WebhookRejected) as caught:
        amo.parse_webhook(body, FORM)
    assert str(caught.value).startswith("amoCRM")


def test_complete_fills_the_phone_price_and_time_from_the_api(amo, fake_amocrm):
    fake_amocrm.leads = [make_lead(id=10701093, price=23000, closed_at=1539782700)]
    fake_amocrm.lead_contacts = {10701093: [CONTACT_ID]}
    (event,) = amo.parse_webhook(load_text("webhook_lead_status.form.txt").encode(), FORM)
    completed = amo.complete(event)
    assert (completed.kind, completed.external_id, completed.needs_details) == ("purchase", "lead:10701093", False)
    assert (completed.phone, completed.amount) == (PHONE, Decimal("23000.00"))
    assert completed.occurred_at == datetime.fromtimestamp(1539782700, UTC)
    lead_call, contact_call = fake_amocrm.requests
    assert (lead_call.path, lead_call.query) == ("/api/v4/leads/10701093", {"with": "contacts"})
    assert contact_call.path == f"/api/v4/contacts/{CONTACT_ID}"


def test_complete_ignores_a_lead_no_longer_won_or_gone(amo, fake_amocrm):
    (event,) = amo.parse_webhook(load_text("webhook_lead_status.form.txt").encode(), FORM)
    fake_amocrm.leads = [make_lead(id=10701093, status_id=143)]
    assert amo.complete(event).kind == "ignored"
    fake_amocrm.leads = []
    gone = amo.complete(event)
    assert (gone.kind, gone.reason) == ("ignored", "the lead is no longer in amoCRM")
