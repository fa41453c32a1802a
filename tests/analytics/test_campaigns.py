"""Segment campaigns (analytics.campaigns): the audience of a segment and of a churn-risk
threshold, the preview's reach and SMS cost, the send through the notification service
(consent, the promotions switch, quiet hours, once), and the purchases that followed."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone, translation
from django.utils.translation import gettext

from accounts.models import User
from analytics import campaigns, export, schema
from analytics.models import Campaign, ChurnModel, ChurnScore
from analytics.services import SEGMENTS
from loyalty import services as loyalty
from notifications import services as notifications
from notifications.channels.push import PushOutcome
from notifications.models import Device, NotificationLog
from tests.factories import LoyaltyProgramFactory, UserFactory

pytestmark = pytest.mark.django_db

CYRILLIC_100 = "Скидка двадцать процентов на весь кофе и все десерты до воскресенья включительно. Ждём вас в гостях!"


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
def cafe():
    return LoyaltyProgramFactory().business


@pytest.fixture
def other():
    return LoyaltyProgramFactory().business


@pytest.fixture
def churn_model():
    return ChurnModel.objects.create(
        as_of=timezone.now(), horizon_days=90, estimator=b"", baseline_estimator=b"", sklearn_version="test"
    )


def score(user, business, risk, model):
    ChurnScore.objects.create(user=user, business=business, risk=risk, model=model, scored_at=timezone.now())


@pytest.fixture
def people(cafe, churn_model):
    """Customers of the café at risk (0.8), each a case of the notification rules."""
    made = {}

    def customer(name, phone, consent=True, device=None, **prefs):
        user = UserFactory(phone=phone, email="", marketing_consent=consent)
        if device:
            notifications.register_device(user=user, token=f"tok-{name}", platform="android")
            if device == "inactive":
                Device.objects.filter(token=f"tok-{name}").update(is_active=False)
        if prefs:
            notifications.update_preferences(user=user, **prefs)
        score(user, cafe, 0.8, churn_model)
        made[name] = user

    customer("app", "+79990001001", device="active")  # push
    customer("no_app", "+79990001002")  # SMS
    customer("push_off", "+79990001003", device="active", push_enabled=False)  # SMS: no push reaches them
    customer("old_phone", "+79990001004", device="inactive")  # SMS
    customer("no_consent", "+79990001005", consent=False, device="active")  # excluded
    customer("opted_out", "+79990001006", promotions=False)  # excluded
    customer("sms_off", "+79990001007", sms_enabled=False)  # consents, but nothing reaches them
    return made


def draft(business, **fields) -> Campaign:
    fields.setdefault("min_risk", None if fields.get("segment") else 0.5)
    return Campaign.objects.create(
        business=business, title="Скидка 20%", text="Кофе со скидкой до воскресенья", **fields
    )


def daytime() -> datetime:
    """Yesterday's noon in Moscow: past quiet hours whenever the tests run, and in the past."""
    return (timezone.localtime() - timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)


def rows(**filters):
    logs = NotificationLog.objects.filter(kind="promotion", **filters).select_related("user")
    return sorted((log.user.phone, log.channel, log.status) for log in logs)


# --- Audience ------------------------------------------------------------------------------------


def test_the_audience_of_a_segment_is_its_customers_at_the_business(cafe, other):
    """Ten customers, customer k made k purchases, the last 3·(11 − k) days ago: by the RFM
    rules (test_rfm) 1 is lost, 2–3 hibernating, 4–5 potential loyalists, 6–7 loyal, 8–10
    champions. Customer 10's purchases elsewhere change nothing here."""
    now = timezone.now()
    for k in range(1, 11):
        last = now - timedelta(days=3 * (11 - k), hours=12)
        for n in range(k):
            loyalty.record_transaction(
                business=cafe,
                external_id=f"{k}-{n}",
                amount=Decimal(100 * k),
                phone=f"+7916555{k:04d}",
                occurred_at=last - timedelta(days=n),
            )
    loyalty.record_transaction(
        business=other,
        external_id="x",
        amount=Decimal(9000),
        phone="+79165550001",
        occurred_at=now - timedelta(hours=1),
    )
    schema.migrate()
    export.aggregate_transactions_to_clickhouse()
    k_of = {user.pk: int(user.phone[-4:]) for user in User.objects.filter(phone__startswith="+7916555")}

    def ks(segment):
        return sorted(k_of[user_id] for user_id in campaigns.audience(cafe, segment=segment))

    assert ks("champions") == [8, 9, 10]
    assert ks("loyal") == [6, 7]
    assert ks("hibernating") == [2, 3]
    assert ks("lost") == [1]
    assert ks("cant_lose") == []
    assert campaigns.audience(other, segment="lost") == []  # customer 1 bought there once, an hour ago
    assert campaigns.audience(other, segment="new") == [User.objects.get(phone="+79165550001").pk]


def test_the_audience_of_a_risk_threshold_is_the_business_scores_at_or_above_it(cafe, other, churn_model):
    high, edge, low, elsewhere = (UserFactory() for _ in range(4))
    score(high, cafe, 0.91, churn_model)
    score(edge, cafe, 0.7, churn_model)
    score(low, cafe, 0.42, churn_model)
    score(low, None, 0.99, churn_model)  # the circle's risk is not the café's
    score(elsewhere, other, 0.95, churn_model)

    assert set(campaigns.audience(cafe, min_risk=0.7)) == {high.pk, edge.pk}
    assert set(campaigns.audience(cafe, min_risk=0.4)) == {high.pk, edge.pk, low.pk}
    assert campaigns.audience(cafe, min_risk=0.95) == []


def test_an_audience_is_a_segment_or_a_risk_one_of_the_two(cafe):
    with pytest.raises(ValueError):
        campaigns.audience(cafe)
    with pytest.raises(ValueError):
        campaigns.audience(cafe, segment="lost", min_risk=0.5)
    with pytest.raises(ValueError):
        campaigns.audience(cafe, segment="whales")
    assert set(Campaign.Segment.values) == set(SEGMENTS)


# --- Preview -------------------------------------------------------------------------------------


def test_the_preview_counts_push_sms_and_excluded_and_the_sms_cost(cafe, people, settings):
    settings.SMS_PRICE_RUB = 4.5
    assert len(CYRILLIC_100) == 100

    reach = campaigns.preview(cafe, min_risk=0.5, title="Скидка", text=CYRILLIC_100)

    assert reach.customers == 7
    assert (reach.push, reach.sms, reach.email) == (1, 3, 0)
    assert (reach.no_consent, reach.opted_out, reach.excluded, reach.unreachable) == (1, 1, 2, 1)
    assert reach.reached == 4
    # "Свой Круг: " and 100 Cyrillic characters: 111 UCS-2 characters, two parts of 67.
    assert reach.sms_text == "Свой Круг: " + CYRILLIC_100
    assert (reach.sms_length.encoding, reach.sms_length.units, reach.sms_segments) == ("UCS-2", 111, 2)
    assert reach.sms_messages == 6
    assert reach.sms_cost == Decimal("27.00")  # 3 SMS × 2 parts × 4.50


def test_sms_parts_by_encoding():
    def parts(text):
        return campaigns.sms_length(text).segments

    assert [parts("я" * 70), parts("я" * 71), parts("я" * 134), parts("я" * 135)] == [1, 2, 2, 3]
    assert [parts("a" * 160), parts("a" * 161), parts("a" * 306), parts("a" * 307)] == [1, 2, 2, 3]
    assert campaigns.sms_length("€" * 80).units == 160  # an extension character takes two septets
    assert campaigns.sms_length("😀" * 35).units == 70  # an emoji is two UCS-2 units
    assert parts("") == 0
    assert parts("Свой Круг: " + "я" * 300) == 5  # the longest campaign text: at most 5 SMS


# --- Sending -------------------------------------------------------------------------------------


def test_send_notifies_only_consenting_customers_push_first_then_sms(
    cafe, people, push, sms, django_capture_on_commit_callbacks
):
    campaign = draft(cafe)

    with time_machine.travel(daytime(), tick=False), django_capture_on_commit_callbacks(execute=True):
        assert campaigns.send(campaign) is True

    campaign.refresh_from_db()
    assert (campaign.status, campaign.audience_size) == ("sent", 7)
    assert campaign.sent_at is not None
    assert rows(status__in=["sent", "queued", "sending"]) == [
        ("+79990001001", "push", "sent"),
        ("+79990001002", "sms", "sent"),
        ("+79990001003", "sms", "sent"),
        ("+79990001004", "sms", "sent"),
    ]
    assert rows(status="skipped") == [
        ("+79990001005", "push", "skipped"),
        ("+79990001006", "push", "skipped"),
        ("+79990001007", "sms", "skipped"),
    ]
    assert [(tokens, title) for tokens, title, _body in push.sent] == [(["tok-app"], "Скидка 20%")]
    assert sorted(phone for phone, _text in sms.sent) == ["+79990001002", "+79990001003", "+79990001004"]
    assert sms.sent[0][1] == "Свой Круг: Кофе со скидкой до воскресенья"


def test_at_night_the_messages_wait_for_the_morning(cafe, people, push, sms, django_capture_on_commit_callbacks):
    campaign = draft(cafe)
    night = datetime(2026, 11, 26, 20, 0, tzinfo=UTC)  # 23:00 in Moscow

    with time_machine.travel(night, tick=False), django_capture_on_commit_callbacks(execute=True):
        campaigns.send(campaign)

    waiting = NotificationLog.objects.filter(kind="promotion").exclude(status="skipped")
    assert waiting.count() == 4
    assert {(log.status, log.send_after) for log in waiting} == {("queued", datetime(2026, 11, 27, 6, 0, tzinfo=UTC))}
    assert push.sent == [] and sms.sent == []
    assert campaigns.results(campaign).waiting == 4
    with time_machine.travel(datetime(2026, 11, 27, 6, 1, tzinfo=UTC), tick=False):
        assert sorted(notifications.due_notifications()) == sorted(log.pk for log in waiting)


def test_sending_twice_sends_nothing_twice(cafe, people, push, sms, django_capture_on_commit_callbacks):
    campaign = draft(cafe)
    with time_machine.travel(daytime(), tick=False), django_capture_on_commit_callbacks(execute=True):
        campaigns.send(campaign)
    logs_before, pushes, texts = NotificationLog.objects.count(), len(push.sent), len(sms.sent)

    with django_capture_on_commit_callbacks(execute=True):
        again = campaigns.send(Campaign.objects.get(pk=campaign.pk))  # the form posted twice
        # A send that runs again (its worker died after the first messages): nobody twice.
        Campaign.objects.filter(pk=campaign.pk).update(status="sending")
        rerun = campaigns.deliver(Campaign.objects.get(pk=campaign.pk))

    assert again is False
    assert rerun == 0
    assert (NotificationLog.objects.count(), len(push.sent), len(sms.sent)) == (logs_before, pushes, texts)
    assert Campaign.objects.get(pk=campaign.pk).status == "sent"


def test_a_big_audience_is_sent_by_the_celery_task(
    cafe, people, push, sms, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(campaigns, "INLINE_SEND_MAX", 3)
    campaign, unpreviewed = draft(cafe), draft(cafe, min_risk=0.6)
    campaigns.preview_campaign(campaign)
    assert Campaign.objects.get(pk=campaign.pk).audience_size == 7
    with django_capture_on_commit_callbacks(execute=False) as queued:
        campaigns.send(unpreviewed)  # its audience turns out big at the send: to the task too
    assert len(queued) == 1
    assert Campaign.objects.get(pk=unpreviewed.pk).status == "sending"

    with time_machine.travel(daytime(), tick=False), django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert campaigns.send(campaign) is True
        assert Campaign.objects.get(pk=campaign.pk).status == "sending"  # queued, not sent in the request

    assert len(callbacks) >= 1
    assert Campaign.objects.get(pk=campaign.pk).status == "sent"
    assert len(rows(status="sent")) == 4


# --- Results -------------------------------------------------------------------------------------


def test_results_count_the_recipients_purchases_within_the_attribution_window(
    cafe, other, people, push, sms, django_capture_on_commit_callbacks
):
    campaign = draft(cafe)
    with time_machine.travel(daytime(), tick=False), django_capture_on_commit_callbacks(execute=True):
        campaigns.send(campaign)
    sent_at = timezone.now() - timedelta(days=20)
    Campaign.objects.filter(pk=campaign.pk).update(sent_at=sent_at)
    campaign.refresh_from_db()

    def buy(business, who, amount, after, external_id):
        loyalty.record_transaction(
            business=business,
            external_id=external_id,
            amount=Decimal(amount),
            customer=people[who],
            occurred_at=sent_at + after,
        )

    with django_capture_on_commit_callbacks(execute=True):
        buy(cafe, "app", "1000.00", timedelta(days=1), "in-1")  # counts
        buy(cafe, "no_app", "500.00", timedelta(days=13, hours=23), "in-2")  # counts
        buy(cafe, "app", "700.00", timedelta(days=14, hours=1), "day-15")  # too late
        buy(cafe, "app", "300.00", -timedelta(hours=1), "before")  # before the send
        buy(cafe, "no_consent", "900.00", timedelta(days=2), "not-a-recipient")  # skipped: not a recipient
        buy(cafe, "sms_off", "900.00", timedelta(days=2), "nothing-reached")  # skipped too
        buy(other, "app", "800.00", timedelta(days=2), "elsewhere")  # another partner
        buy(cafe, "old_phone", "400.00", timedelta(days=3), "refunded")
        loyalty.refund_transaction(business=cafe, external_id="refunded")  # fully refunded: not a purchase

    outcome = campaigns.results(campaign)

    assert (outcome.purchases, outcome.buyers, outcome.revenue) == (2, 2, Decimal("1500.00"))
    assert outcome.recipients == 4
    assert outcome.delivery == {"push": {"sent": 1, "skipped": 2}, "sms": {"sent": 3, "skipped": 1}}
    assert outcome.skipped_reasons == {
        "no marketing consent": 1,
        "the customer turned off SMS": 1,
        "the customer turned off promotions": 1,
    }
    assert outcome.window_end == sent_at + timedelta(days=14)
    assert not outcome.window_open


def test_another_campaigns_messages_are_not_counted(cafe, people, push, sms, django_capture_on_commit_callbacks):
    first, second = draft(cafe), draft(cafe, min_risk=0.9)  # nobody is at 0.9
    with time_machine.travel(daytime(), tick=False), django_capture_on_commit_callbacks(execute=True):
        campaigns.send(first)
        campaigns.send(second)

    assert campaigns.results(second).messages == 0
    assert campaigns.results(first).messages == 7


def test_staff_see_the_campaigns_with_their_results_read_only(
    client, cafe, people, push, sms, django_capture_on_commit_callbacks
):
    campaign = draft(cafe)
    with time_machine.travel(daytime(), tick=False), django_capture_on_commit_callbacks(execute=True):
        campaigns.send(campaign)
    client.force_login(User.objects.create_superuser(phone="+79990000001", password="correct horse battery"))

    changelist = client.get("/admin/analytics/campaign/")

    assert changelist.status_code == 200
    html = changelist.content.decode()
    assert "Скидка 20%" in html
    with translation.override("ru"):  # the admin speaks Russian by default
        summary = gettext(
            "%(sent)d sent, %(waiting)d waiting; %(purchases)d purchases by %(buyers)d customers for %(revenue)s"
        ) % {"sent": 4, "waiting": 0, "purchases": 0, "buyers": 0, "revenue": "0.00"}
    assert summary.split(";")[0] in html
    assert client.get("/admin/analytics/campaign/add/").status_code == 403
