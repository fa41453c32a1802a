"""The portal's Campaigns section: the form, the preview with the reach and the SMS cost, the
send (once), the detail with delivery and the purchases that followed; owners and managers
only, and another business's campaign is 404."""

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.contrib.messages import get_messages
from django.urls import resolve
from django.utils import timezone

from analytics import campaigns, export, schema
from analytics.models import Campaign, ChurnModel, ChurnScore
from analytics.warehouse import WarehouseError
from notifications import services as notifications
from notifications.channels.push import PushOutcome
from notifications.models import NotificationLog
from svoykrug import portal_urls
from tests.factories import UserFactory

TEXT = "Скидка 20% на весь кофе до воскресенья. Ждём вас!"


def flashed(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


class FakePush:
    def __init__(self):
        self.sent = []

    def send(self, tokens, title, body, data=None):
        self.sent.append((tokens, title, body))
        return [PushOutcome(token=t, ok=True, message_id=f"push-{len(self.sent)}") for t in tokens]


@pytest.fixture
def push(monkeypatch):
    fake = FakePush()
    monkeypatch.setattr("notifications.channels.push.get_push_backend", lambda: fake)
    return fake


@pytest.fixture
def at_risk(business_a):
    """Three customers of A at risk: one with the app, one without, one without consent."""
    model = ChurnModel.objects.create(
        as_of=timezone.now(), horizon_days=90, estimator=b"", baseline_estimator=b"", sklearn_version="test"
    )
    people = {
        "app": UserFactory(phone="+79990002001", email="", marketing_consent=True),
        "no_app": UserFactory(phone="+79990002002", email="", marketing_consent=True),
        "no_consent": UserFactory(phone="+79990002003", email="", marketing_consent=False),
    }
    notifications.register_device(user=people["app"], token="tok-app", platform="ios")
    for user in people.values():
        ChurnScore.objects.create(user=user, business=business_a, risk=0.8, model=model, scored_at=timezone.now())
    return people


def daytime() -> datetime:
    """Yesterday's noon in Moscow: past quiet hours whenever the tests run, and in the past."""
    return (timezone.localtime() - timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)


def new_campaign(client, **data):
    form = {"audience": "risk", "min_risk": "70", "title": "Кофе −20%", "text": TEXT, **data}
    return client.post("/portal/campaigns/new/", form)


@pytest.mark.django_db
def test_form_preview_send_detail(
    client, login, owner, business_a, at_risk, push, sms, settings, buy, django_capture_on_commit_callbacks
):
    settings.SMS_PRICE_RUB = 5.0
    login(owner)
    assert client.get("/portal/campaigns/new/").status_code == 200

    created = new_campaign(client)

    campaign = Campaign.objects.get(business=business_a)
    assert created.status_code == 302
    assert created["Location"] == f"/portal/campaigns/{campaign.pk}/"
    assert (campaign.status, campaign.segment, campaign.min_risk, campaign.created_by) == ("draft", "", 0.7, owner)
    assert NotificationLog.objects.filter(kind="promotion").count() == 0  # nothing sent yet

    preview = client.get(f"/portal/campaigns/{campaign.pk}/")
    assert preview.status_code == 200
    reach = preview.context["reach"]
    assert (reach.customers, reach.push, reach.sms, reach.excluded) == (3, 1, 1, 1)
    assert reach.sms_cost == Decimal("5.00")  # "Свой Круг: " + 49 characters: one SMS
    html = preview.content.decode()
    assert "Send to 2 customers" in html
    assert f'action="/portal/campaigns/{campaign.pk}/send/"' in html
    assert "Свой Круг: " + TEXT in html

    with time_machine.travel(daytime(), tick=False), django_capture_on_commit_callbacks(execute=True):
        sent = client.post(f"/portal/campaigns/{campaign.pk}/send/")

    assert sent.status_code == 302
    assert "The campaign is sent." in flashed(sent)[0]
    campaign.refresh_from_db()
    assert (campaign.status, campaign.audience_size) == ("sent", 3)
    assert sorted(NotificationLog.objects.filter(kind="promotion").values_list("channel", "status")) == [
        ("push", "sent"),
        ("push", "skipped"),
        ("sms", "sent"),
    ]
    assert (len(push.sent), len(sms.sent)) == (1, 1)

    with django_capture_on_commit_callbacks(execute=True):
        again = client.post(f"/portal/campaigns/{campaign.pk}/send/")  # the button pressed twice

    assert flashed(again)[-1] == "This campaign was already sent; nothing was sent again."
    assert NotificationLog.objects.filter(kind="promotion").count() == 3
    assert (len(push.sent), len(sms.sent)) == (1, 1)

    buy(business_a, "+79990002001", "1200.00")  # a recipient comes back
    buy(business_a, "+79990002003", "800.00")  # not a recipient: no consent
    detail = client.get(f"/portal/campaigns/{campaign.pk}/")
    assert detail.status_code == 200
    results = detail.context["results"]
    assert (results.recipients, results.delivered, results.purchases, results.revenue) == (
        2,
        2,
        1,
        Decimal("1200.00"),
    )
    assert detail.context["skipped"] == [("no consent to promotions", 1)]
    assert "Purchases that followed" in detail.content.decode()
    assert f'action="/portal/campaigns/{campaign.pk}/send/"' not in detail.content.decode()

    listing = client.get("/portal/campaigns/")
    assert listing.status_code == 200
    (row,) = listing.context["page"]
    assert (row.pk, row.results.purchases) == (campaign.pk, 1)
    assert 'href="/portal/campaigns/"' in listing.content.decode()  # the nav entry


@pytest.mark.django_db
def test_a_segment_campaign_reads_the_warehouse(client, login, manager, business_a, buy):
    """One customer with one purchase is "new" (the only customer: every score at its extreme)."""
    buy(business_a, "+79990002101", "500.00", occurred_at=timezone.now() - timedelta(hours=2))
    schema.migrate()
    export.aggregate_transactions_to_clickhouse()
    login(manager)

    new_campaign(client, audience="segment", segment="new", min_risk="")

    campaign = Campaign.objects.get(business=business_a)
    assert (campaign.segment, campaign.min_risk) == ("new", None)
    reach = client.get(f"/portal/campaigns/{campaign.pk}/").context["reach"]
    assert reach.customers == 1
    assert reach.no_consent == 1  # a customer the POS created has not agreed to promotions
    assert Campaign.objects.get(pk=campaign.pk).audience_size == 1


@pytest.mark.django_db
def test_the_form_refuses_a_missing_audience_and_a_long_text(client, login, owner, business_a):
    login(owner)

    no_segment = new_campaign(client, audience="segment", segment="")
    no_risk = new_campaign(client, min_risk="")
    too_long = new_campaign(client, text="я" * 301, title="т" * 61)

    assert no_segment.status_code == no_risk.status_code == too_long.status_code == 400
    assert no_segment.context["form"].errors == {"segment": ["Choose a segment."]}
    assert no_risk.context["form"].errors == {"min_risk": ["Enter the churn risk, from 1 to 100 %."]}
    assert set(too_long.context["form"].errors) == {"title", "text"}
    assert not Campaign.objects.exists()


@pytest.mark.django_db
def test_a_draft_can_be_changed_and_a_sent_campaign_cannot(client, login, owner, business_a, at_risk, push, sms):
    login(owner)
    new_campaign(client)
    campaign = Campaign.objects.get()

    assert client.get(f"/portal/campaigns/{campaign.pk}/edit/").context["form"].initial["min_risk"] == 70
    changed = client.post(
        f"/portal/campaigns/{campaign.pk}/edit/",
        {"audience": "segment", "segment": "lost", "min_risk": "70", "title": "Вернитесь", "text": "Мы скучаем"},
    )
    assert changed.status_code == 302
    campaign.refresh_from_db()
    assert (campaign.segment, campaign.min_risk, campaign.title) == ("lost", None, "Вернитесь")

    Campaign.objects.filter(pk=campaign.pk).update(status="sent", sent_at=timezone.now())
    refused = client.post(f"/portal/campaigns/{campaign.pk}/edit/", {"audience": "risk", "min_risk": "10"})
    assert refused.status_code == 302
    assert flashed(refused) == ["This campaign is sent and can no longer be changed."]
    assert Campaign.objects.get(pk=campaign.pk).segment == "lost"


@pytest.mark.django_db
def test_a_warehouse_that_does_not_answer_leaves_the_draft_unsent(client, login, owner, business_a, monkeypatch):
    def down(**kwargs):
        raise WarehouseError("connection refused")

    monkeypatch.setattr(campaigns, "calculate_rfm_segments", down)
    login(owner)
    new_campaign(client, audience="segment", segment="lost", min_risk="")
    campaign = Campaign.objects.get()

    preview = client.get(f"/portal/campaigns/{campaign.pk}/")
    sent = client.post(f"/portal/campaigns/{campaign.pk}/send/")

    assert preview.status_code == 503
    assert "the analytics warehouse does not answer" in preview.content.decode()
    assert sent.status_code == 302
    assert Campaign.objects.get(pk=campaign.pk).status == "draft"


@pytest.mark.django_db
def test_a_cashier_may_not_open_or_send_campaigns(client, login, cashier, business_a):
    campaign = Campaign.objects.create(business=business_a, min_risk=0.5, title="x", text="y")
    login(cashier)

    for method, url in [
        ("get", "/portal/campaigns/"),
        ("get", "/portal/campaigns/new/"),
        ("post", "/portal/campaigns/new/"),
        ("get", f"/portal/campaigns/{campaign.pk}/"),
        ("post", f"/portal/campaigns/{campaign.pk}/edit/"),
        ("post", f"/portal/campaigns/{campaign.pk}/send/"),
    ]:
        assert getattr(client, method)(url).status_code == 403, url
    assert Campaign.objects.get(pk=campaign.pk).status == "draft"
    assert 'href="/portal/campaigns/"' not in client.get("/portal/").content.decode()


# --- Isolation (test_isolation.py takes these cases as covered) ----------------------------------

ISOLATION_CASES = [
    ("campaign", "get", "/portal/campaigns/{campaign}/", None),
    ("campaign-edit", "get", "/portal/campaigns/{campaign}/edit/", None),
    ("campaign-edit", "post", "/portal/campaigns/{campaign}/edit/", {"audience": "risk", "min_risk": "1"}),
    ("campaign-send", "post", "/portal/campaigns/{campaign}/send/", None),
]


def test_the_isolation_cases_cover_every_campaign_url_that_names_an_object():
    named = {
        p.name
        for p in portal_urls.urlpatterns
        if p.pattern.converters and p.callback.__module__ == "analytics.portal_campaigns"
    }

    assert {name for name, *_rest in ISOLATION_CASES} == named


@pytest.fixture
def b_campaign(business_b, owner_b):
    return Campaign.objects.create(business=business_b, created_by=owner_b, min_risk=0.5, title="Б", text="Только Б")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "method", "url", "data"), ISOLATION_CASES, ids=[f"{c[1]} {c[2]}" for c in ISOLATION_CASES]
)
def test_a_member_of_a_gets_404_for_a_campaign_of_b(
    client, login, owner, business_a, b_campaign, name, method, url, data
):
    login(owner, business=business_a)
    url = url.format(campaign=b_campaign.pk)
    assert resolve(url).url_name == name

    response = getattr(client, method)(url, data or {})

    assert response.status_code == 404
    b_campaign.refresh_from_db()
    assert (b_campaign.status, b_campaign.min_risk, b_campaign.title) == ("draft", 0.5, "Б")
    assert "Только Б" not in response.content.decode()
    assert client.get("/portal/campaigns/").context["page"].paginator.count == 0


@pytest.mark.django_db
def test_the_same_campaign_opens_for_a_member_of_b(client, login, owner_b, b_campaign):
    """The control: the 404s above come from the scope, not from broken URLs."""
    login(owner_b)

    for _name, method, url, _data in ISOLATION_CASES:
        if method == "get":
            assert client.get(url.format(campaign=b_campaign.pk)).status_code == 200, url
