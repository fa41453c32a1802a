"""Who hears what, and how: preferences, channels, quiet hours, the SMS budget, deduplication,
failures that never touch the purchase, and the loyalty events wired in."""

import hashlib
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone
from rest_framework_simplejwt.tokens import RefreshToken

from loyalty import services as loyalty
from notifications import services
from notifications.channels.push import PushOutcome
from notifications.channels.sms import SmsTemporaryError
from notifications.models import Device, NotificationLog
from tests.factories import BusinessFactory, LoyaltyProgramFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def customer(db):
    return UserFactory(phone="+79991112233", email="", marketing_consent=True)


def logs(**filters):
    return list(NotificationLog.objects.filter(**filters).order_by("id").values_list("channel", "status", "reason"))


# --- Channels ---------------------------------------------------------------------------------


def test_push_goes_to_every_active_device_and_not_by_sms(customer, push, sms, django_capture_on_commit_callbacks):
    services.register_device(user=customer, token="tok-a", platform="android")
    services.register_device(user=customer, token="tok-b", platform="ios")
    services.register_device(user=customer, token="tok-c", platform="ios")
    Device.objects.filter(token="tok-c").update(is_active=False)

    with django_capture_on_commit_callbacks(execute=True):
        services.notify(
            customer,
            "bonus_expiring",
            {"days": 7, "batches": [{"amount": "50.00", "date": "03.12.2026"}]},
            event_key="e1",
        )

    assert sorted(tokens[0] for tokens, _title, _body in push.sent) == ["tok-a", "tok-b"]
    assert push.sent[0][1] == "Через 7 дней сгорят бонусы"
    assert push.sent[0][2] == "50.00 — 03.12.2026. Успейте потратить у партнёров круга."
    assert sms.sent == []
    assert logs(kind="bonus_expiring") == [("push", "sent", ""), ("push", "sent", "")]


def test_without_devices_a_kind_that_allows_sms_goes_by_sms(customer, push, sms, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        services.notify(
            customer,
            "bonus_expiring",
            {"days": 1, "batches": [{"amount": "10.00", "date": "27.11.2026"}]},
            event_key="e1",
        )

    assert sms.sent == [("+79991112233", "Свой Круг: 10.00 бонусов сгорят 27.11.2026.")]
    assert logs(channel="sms", kind="bonus_expiring") == [("sms", "sent", "")]


def test_a_kind_without_sms_does_not_spend_money(customer, sms, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        created = services.notify(
            customer, "bonus_accrued", {"amount": "5.00", "business_name": "Café", "balance": "5.00"}, event_key="e1"
        )

    assert created == []
    assert sms.sent == []


def test_email_goes_where_the_customer_gave_an_address(
    customer, django_capture_on_commit_callbacks, mailoutbox, settings
):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    customer.email = "olga@example.ru"
    customer.save()

    with django_capture_on_commit_callbacks(execute=True):
        services.notify(customer, "tier_changed", {"tier_name": "Silver", "is_upgrade": True}, event_key="e1")

    (mail,) = mailoutbox
    assert mail.subject == "Ваш статус в Своём Круге: Silver"
    assert "Поздравляем!" in mail.body
    assert "<b>Silver</b>" in mail.alternatives[0][0]


def test_plain_text_is_not_html_escaped(customer, push, django_capture_on_commit_callbacks):
    services.register_device(user=customer, token="tok-a", platform="android")

    with django_capture_on_commit_callbacks(execute=True):
        services.notify(
            customer,
            "bonus_accrued",
            {"amount": "5.00", "business_name": "Tom & Jerry", "balance": "5.00"},
            event_key="e1",
        )

    assert push.sent[0][2] == "Tom & Jerry: начислено 5.00 бонусов. На счёте 5.00."


# --- Preferences, consent, quiet hours -----------------------------------------------------------


def test_a_category_turned_off_is_skipped_with_the_reason(customer, push):
    services.register_device(user=customer, token="tok-a", platform="android")
    services.update_preferences(user=customer, bonus_updates=False)

    services.notify(customer, "bonus_accrued", {"amount": "5", "business_name": "C", "balance": "5"}, event_key="e1")

    assert logs() == [("push", "skipped", "the customer turned off bonus_updates")]
    assert push.sent == []


def test_marketing_needs_consent(customer, push):
    customer.marketing_consent = False
    customer.save()
    services.register_device(user=customer, token="tok-a", platform="android")

    services.notify(customer, "promotion", {"title": "Скидки", "text": "Всё по 100"}, event_key="p1")

    assert logs() == [("push", "skipped", "no marketing consent")]


def test_marketing_waits_for_the_morning_but_transactional_does_not(customer, push, django_capture_on_commit_callbacks):
    services.register_device(user=customer, token="tok-a", platform="android")
    night = datetime(2026, 11, 26, 20, 30, tzinfo=UTC)  # 23:30 in Moscow

    with time_machine.travel(night, tick=False), django_capture_on_commit_callbacks(execute=True):
        services.notify(customer, "promotion", {"title": "Скидки", "text": "Всё по 100"}, event_key="p1")
        services.notify(
            customer, "bonus_accrued", {"amount": "5", "business_name": "C", "balance": "5"}, event_key="t1"
        )

    promotion = NotificationLog.objects.get(kind="promotion")
    assert promotion.status == "queued"
    assert promotion.send_after == datetime(2026, 11, 27, 6, 0, tzinfo=UTC)  # 09:00 in Moscow
    assert NotificationLog.objects.get(kind="bonus_accrued").status == "sent"
    with time_machine.travel(datetime(2026, 11, 27, 6, 1, tzinfo=UTC), tick=False):
        assert services.due_notifications() == [promotion.pk]
        assert services.deliver(promotion.pk) == "sent"


@pytest.mark.parametrize(
    ("local", "expected"),
    [("23:30", "09:00"), ("03:00", "09:00"), ("08:59", "09:00"), ("09:00", None), ("21:59", None)],
)
def test_quiet_hours_cross_midnight(customer, local, expected):
    prefs = services.get_preferences(customer)
    hours, minutes = map(int, local.split(":"))
    at = timezone.make_aware(datetime(2026, 11, 26, hours, minutes))

    until = services.quiet_until(prefs, at)

    assert (timezone.localtime(until).strftime("%H:%M") if until else None) == expected
    assert prefs.quiet_hours_start == time(22, 0)


# --- Deduplication, the SMS budget, failures ------------------------------------------------------


def test_the_same_event_is_sent_once(customer, sms, django_capture_on_commit_callbacks):
    context = {"days": 1, "batches": [{"amount": "10.00", "date": "27.11.2026"}]}
    with django_capture_on_commit_callbacks(execute=True):
        services.notify(customer, "bonus_expiring", context, event_key="e1")
        services.notify(customer, "bonus_expiring", context, event_key="e1")

    assert len(sms.sent) == 1
    assert NotificationLog.objects.count() == 1


def test_past_the_daily_sms_budget_only_login_codes_go(customer, sms, settings, django_capture_on_commit_callbacks):
    settings.SMS_DAILY_SPEND_CAP_RUB = 10
    settings.SMS_PRICE_RUB = 5.0
    services.deliver_sms("+79990000001", "one", purpose="promo")
    services.deliver_sms("+79990000002", "two", purpose="promo")

    with django_capture_on_commit_callbacks(execute=True):
        services.notify(customer, "bonus_expiring", {"days": 1, "batches": []}, event_key="e1")
    services.deliver_sms("+79990000003", "Код: 123456", purpose="login_code")

    assert [phone for phone, _ in sms.sent] == ["+79990000001", "+79990000002", "+79990000003"]
    assert logs(kind="bonus_expiring") == [("sms", "skipped", "the daily SMS budget is spent")]
    login = NotificationLog.objects.get(kind="login_code")
    assert (login.status, login.body) == ("sent", "")  # the code itself is never stored


def test_a_temporary_failure_is_retried_and_then_given_up(customer, sms, settings):
    settings.NOTIFY_MAX_RETRIES = 2
    sms.fail_with = SmsTemporaryError("SMS.ru did not answer in time.")
    (log,) = services.notify(customer, "bonus_expiring", {"days": 1, "batches": []}, event_key="e1")

    with pytest.raises(services.TemporaryFailure):
        services.deliver(log.pk)
    log.refresh_from_db()
    assert (log.status, log.attempts) == ("queued", 1)
    assert log.send_after > timezone.now() + timedelta(seconds=settings.NOTIFY_RETRY_BACKOFF_SECONDS - 5)
    assert log.pk not in services.due_notifications()  # the backoff holds for the sweeper too
    assert services.deliver(log.pk) == "failed"
    log.refresh_from_db()
    assert (log.status, log.reason, log.attempts) == ("failed", "SMS.ru did not answer in time.", 2)
    assert services.deliver(log.pk) == "not queued"


def test_an_unregistered_token_is_deactivated(customer, push):
    services.register_device(user=customer, token="stale-token", platform="android")
    push.outcome = PushOutcome(
        token="stale-token", ok=False, error="Requested entity was not found.", unregistered=True
    )
    (log,) = services.notify(
        customer, "welcome", {"amount": "100", "business_name": "C", "balance": "100"}, event_key="w"
    )

    assert services.deliver(log.pk) == "failed"

    device = Device.objects.get(token="stale-token")
    assert device.is_active is False
    assert NotificationLog.objects.get(pk=log.pk).reason.startswith("unregistered token")


def test_a_failing_provider_leaves_the_purchase_recorded_and_the_log_saying_why(
    customer, sms, tiers, django_capture_on_commit_callbacks
):
    business = LoyaltyProgramFactory(business=BusinessFactory(), welcome_bonus=Decimal(100)).business
    services.register_device(user=customer, token="tok-a", platform="android")

    def broken(*args, **kwargs):
        raise RuntimeError("FCM exploded")

    import notifications.channels.push as push_module

    original = push_module.get_push_backend
    push_module.get_push_backend = lambda: type("Broken", (), {"send": broken})()
    try:
        with django_capture_on_commit_callbacks(execute=True):
            result = loyalty.record_transaction(
                business=business, customer=customer, external_id="p1", amount=Decimal(1000)
            )
    finally:
        push_module.get_push_backend = original

    assert result.created is True
    assert result.balance == Decimal("150.00")
    assert set(NotificationLog.objects.values_list("kind", "status", "reason")) == {
        ("welcome", "failed", "error: FCM exploded"),
        ("bonus_accrued", "failed", "error: FCM exploded"),
    }


# --- Loyalty events -------------------------------------------------------------------------------


def test_a_purchase_tells_about_welcome_spending_earning_and_a_new_tier(
    customer, push, tiers, django_capture_on_commit_callbacks
):
    business = LoyaltyProgramFactory(business=BusinessFactory(name="Кофейня"), welcome_bonus=Decimal(100)).business
    services.register_device(user=customer, token="tok-a", platform="android")

    with django_capture_on_commit_callbacks(execute=True):
        loyalty.record_transaction(business=business, customer=customer, external_id="p1", amount=Decimal(20000))
    with django_capture_on_commit_callbacks(execute=True):
        loyalty.record_transaction(
            business=business, customer=customer, external_id="p1", amount=Decimal(20000)
        )  # retry

    assert sorted(NotificationLog.objects.values_list("kind", flat=True)) == [
        "bonus_accrued",
        "tier_changed",
        "welcome",
    ]
    assert ([title for _tokens, title, _body in push.sent]) == [
        "Добро пожаловать в Свой Круг!",
        "+1000.00 бонусов",
        "Ваш статус: Silver",
    ]


def test_expiry_reminders_list_every_batch_once_per_customer(customer, sms, tiers, django_capture_on_commit_callbacks):
    business = LoyaltyProgramFactory(business=BusinessFactory(), bonus_lifetime_days=30).business
    with time_machine.travel(datetime(2026, 11, 26, 9, 0, tzinfo=UTC), tick=False):  # noon in Moscow
        now = timezone.now()
        for index, hours in enumerate([1, 5]):  # both expire on 3 December, at 13:00 and 17:00
            loyalty.record_transaction(
                business=business,
                customer=customer,
                external_id=f"p{index}",
                amount=Decimal(1000),
                occurred_at=now - timedelta(days=23) + timedelta(hours=hours),
            )

        with django_capture_on_commit_callbacks(execute=True):
            told = loyalty.remind_expiring_bonuses(7)
        with django_capture_on_commit_callbacks(execute=True):
            loyalty.remind_expiring_bonuses(7)

    assert told == 1
    reminders = [text for _phone, text in sms.sent if "сгорят" in text]
    assert reminders == ["Свой Круг: 50.00 бонусов сгорят 03.12.2026; 50.00 бонусов сгорят 03.12.2026."]


# --- API and the SMS.ru callback --------------------------------------------------------------------


def auth(user):
    return {"HTTP_AUTHORIZATION": f"Bearer {RefreshToken.for_user(user).access_token}"}


def test_device_registration_is_idempotent_and_moves_a_token(api_client, customer):
    other = UserFactory()
    body = {"token": "tok-1", "platform": "android", "app_version": "1.2.0"}

    first = api_client.post("/api/v1/me/devices/", body, format="json", **auth(other))
    again = api_client.post("/api/v1/me/devices/", body, format="json", **auth(customer))

    assert (first.status_code, again.status_code) == (200, 200)
    assert Device.objects.get().user == customer
    assert api_client.delete("/api/v1/me/devices/tok-1/", **auth(other)).status_code == 404
    assert api_client.delete("/api/v1/me/devices/tok-1/", **auth(customer)).status_code == 204
    assert not Device.objects.exists()


def test_preferences_read_and_change(api_client, customer):
    before = api_client.get("/api/v1/me/notification-preferences/", **auth(customer)).json()
    changed = api_client.patch(
        "/api/v1/me/notification-preferences/",
        {"promotions": False, "quiet_hours_start": "23:00"},
        format="json",
        **auth(customer),
    )
    bad = api_client.patch(
        "/api/v1/me/notification-preferences/", {"time_zone": "Mars/Base"}, format="json", **auth(customer)
    )

    assert before["promotions"] is True and before["quiet_hours_start"] == "22:00:00"
    assert changed.json()["promotions"] is False and changed.json()["quiet_hours_start"] == "23:00:00"
    assert bad.status_code == 400 and "time_zone" in bad.json()["error"]["fields"]


def test_smsru_callback_checks_the_hash_and_marks_delivery(client, customer, sms, settings):
    settings.SMSRU_API_ID = "api-123"
    services.deliver_sms(customer.phone, "hello", purpose="promo")
    log = NotificationLog.objects.get()
    entry = f"sms_status\n{log.provider_message_id}\n103\n1700000000"
    good = hashlib.sha256(("api-123" + entry).encode()).hexdigest()

    forged = client.post("/api/v1/notifications/smsru/callback/", {"data[0]": entry, "hash": "0" * 64})
    answered = client.post("/api/v1/notifications/smsru/callback/", {"data[0]": entry, "hash": good})

    assert forged.status_code == 403
    assert (answered.status_code, answered.content) == (200, b"100")
    log.refresh_from_db()
    assert log.status == "delivered"


def test_an_email_report_that_outruns_the_worker_is_kept(customer, monkeypatch):
    """The ESP's "delivered" webhook arrives while deliver() still waits for the send to return."""
    from notifications.channels.email import EmailReceipt
    from notifications.delivery import record_email_event

    def send_and_report_at_once(**message):
        record_email_event(
            message_id="esp-1",
            event_type="delivered",
            description="",
            timestamp=None,
            notification_id=message["metadata"]["notification_id"],
        )
        return EmailReceipt(provider="sendgrid", message_id="esp-1", status="queued")

    monkeypatch.setattr("notifications.channels.email.send_email_message", send_and_report_at_once)
    customer.email = "olga@example.ru"
    customer.save()
    (log,) = services.notify(customer, "tier_changed", {"tier_name": "Gold", "is_upgrade": True}, event_key="e1")

    assert services.deliver(log.pk) == "sent"

    log.refresh_from_db()
    assert (log.status, log.provider_message_id) == ("delivered", "esp-1")


def test_deploy_check_warns_about_a_missing_email_webhook_secret(settings):
    from django.core import checks

    settings.EMAIL_ESP_API_KEY = "SG.key"
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": None}

    assert "notifications.W002" in [m.id for m in checks.run_checks(include_deployment_checks=True)]


def test_a_message_whose_worker_died_is_sent_again(customer, sms):
    (log,) = services.notify(customer, "bonus_expiring", {"days": 1, "batches": []}, event_key="e1")
    NotificationLog.objects.filter(pk=log.pk).update(status="sending")

    with time_machine.travel(timezone.now() + timedelta(minutes=9)):
        assert log.pk not in services.due_notifications()
    with time_machine.travel(timezone.now() + timedelta(minutes=11)):
        assert log.pk in services.due_notifications()
        assert services.deliver(log.pk) == "sent"
    assert len(sms.sent) == 1


# --- The catalogue's direct sends ---------------------------------------------------------------------


def test_send_push_reaches_active_devices_and_drops_unregistered_ones(customer, push):
    services.register_device(user=customer, token="tok-a", platform="android")

    assert services.send_push(customer.pk, "Привет", "Текст") is True
    assert push.sent == [(["tok-a"], "Привет", "Текст")]

    push.outcome = PushOutcome(token="tok-a", ok=False, error="gone", unregistered=True)
    assert services.send_push(customer.pk, "Привет", "Текст") is False
    assert Device.objects.get(token="tok-a").is_active is False
    assert services.send_push(customer.pk, "Привет", "Текст") is False  # no active device left
    assert len(push.sent) == 2


def test_send_email_renders_a_template_and_says_whether_it_went(settings, mailoutbox, monkeypatch):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

    sent = services.send_email("olga@example.ru", "tier_changed", {"tier_name": "Gold", "is_upgrade": True})
    refused = services.send_email("not an address", "tier_changed", {"tier_name": "Gold", "is_upgrade": True})

    assert (sent, refused) == (True, False)
    (mail,) = mailoutbox
    assert (mail.to, mail.subject) == (["olga@example.ru"], "Ваш статус в Своём Круге: Gold")
