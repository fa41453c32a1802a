"""The email channel against a local fake SendGrid: the real anymail SendGrid backend and requests,
real HTTP on 127.0.0.1; and SendGrid's event webhook through anymail's real view and our receiver."""

import base64
import json
import os
import socket
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from anymail.signals import AnymailTrackingEvent, tracking
from django.urls import reverse

from notifications.channels.email import (
    EmailError,
    EmailReceipt,
    EmailRecipientError,
    EmailTemporaryError,
    send_email_message,
)
from notifications.delivery import record_email_event
from notifications.models import NotificationLog
from tests.fakes.sendgrid import FakeSendGrid

FIXTURES_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "sendgrid"

TO = "client@example.com"
SUBJECT = "Бонусы начислены"
TEXT = "Вам начислено 50 баллов"
HTML = "<p>Вам начислено <b>50</b> баллов</p>"
FROM = "Свой Круг <noreply@svoykrug.example>"
WEBHOOK_SECRET = "sendgrid:webhook-secret-for-tests"
WEBHOOK_URL = "/anymail/sendgrid/tracking/"
# tracking_*.json's timestamp 1461095250
EVENT_TIME = datetime(2016, 4, 19, 19, 47, 30, tzinfo=UTC)


def load_fixture(name: str):
    return json.loads((FIXTURES_DIR / name).read_text(encoding="utf-8"))


@pytest.fixture
def fake_sendgrid():
    """A running fake SendGrid on 127.0.0.1; `.api_url` is its SENDGRID_API_URL, `.requests` what it received."""
    fake = FakeSendGrid(slow_delay=1.0)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def sendgrid_settings(settings, fake_sendgrid):
    """The real anymail SendGrid backend, pointed at the fake, with a short timeout."""
    settings.EMAIL_BACKEND = "anymail.backends.sendgrid.EmailBackend"
    settings.DEFAULT_FROM_EMAIL = FROM
    settings.ANYMAIL = {
        "SENDGRID_API_KEY": "test-key",
        "SENDGRID_API_URL": fake_sendgrid.api_url,
        "SENDGRID_GENERATE_MESSAGE_ID": True,
        "REQUESTS_TIMEOUT": 2.0,
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    return settings


def use_anymail(settings, **overrides) -> None:
    settings.ANYMAIL = {**settings.ANYMAIL, **overrides}


@pytest.fixture
def closed_port_url():
    """A URL whose port refuses connections: bound, never listening, so nobody else can take it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v3/"
    finally:
        sock.close()


# --- a successful send ---------------------------------------------------------------------------


def test_send_posts_the_documented_json_and_returns_the_receipt(sendgrid_settings, fake_sendgrid):
    receipt = send_email_message(
        to=TO,
        subject=SUBJECT,
        text_body=TEXT,
        html_body=HTML,
        metadata={"client_id": "42", "notification_id": "7"},
        tags=["bonus", "transactional"],
    )

    (request,) = fake_sendgrid.requests
    assert (request.method, request.path) == ("POST", "/v3/mail/send")
    assert request.headers["Authorization"] == "Bearer test-key"
    assert request.headers["Content-Type"] == "application/json"
    body = request.json
    assert body["personalizations"] == [{"to": [{"email": TO}], "custom_args": {"anymail_id": receipt.message_id}}]
    assert body["from"] == {"email": "noreply@svoykrug.example", "name": "Свой Круг"}
    assert body["subject"] == SUBJECT
    assert body["content"] == [{"type": "text/plain", "value": TEXT}, {"type": "text/html", "value": HTML}]
    assert body["custom_args"] == {"client_id": "42", "notification_id": "7"}
    assert body["categories"] == ["bonus", "transactional"]
    assert receipt == EmailReceipt(provider="sendgrid", message_id=receipt.message_id, status="queued")
    assert str(uuid.UUID(receipt.message_id)) == receipt.message_id


def test_send_posts_what_the_fixture_shows_anymail_posting(sendgrid_settings, fake_sendgrid):
    sendgrid_settings.DEFAULT_FROM_EMAIL = "noreply@loyalty.example"

    receipt = send_email_message(
        to="client@example.com", subject=SUBJECT, text_body=TEXT, metadata={"client_id": "42"}, tags=["bonus"]
    )

    expected = load_fixture("mail_send_request.json")
    expected["personalizations"][0]["custom_args"]["anymail_id"] = receipt.message_id
    (request,) = fake_sendgrid.requests
    assert request.json == expected


def test_send_without_html_metadata_or_tags_sends_only_the_text(sendgrid_settings, fake_sendgrid):
    send_email_message(to=TO, subject=SUBJECT, text_body=TEXT)

    (request,) = fake_sendgrid.requests
    assert request.json["content"] == [{"type": "text/plain", "value": TEXT}]
    assert "custom_args" not in request.json
    assert "categories" not in request.json


def test_each_send_gets_its_own_message_id(sendgrid_settings, fake_sendgrid):
    first = send_email_message(to=TO, subject=SUBJECT, text_body=TEXT)
    second = send_email_message(to=TO, subject=SUBJECT, text_body=TEXT)

    assert first.message_id != second.message_id
    assert [r.json["personalizations"][0]["custom_args"]["anymail_id"] for r in fake_sendgrid.requests] == [
        first.message_id,
        second.message_id,
    ]


# --- errors ----------------------------------------------------------------------------------------


def test_the_400_fixture_is_a_plain_email_error(sendgrid_settings, fake_sendgrid):
    """mail_send_error_400.json names `subject` and no field, not a recipient: our request is wrong."""
    use_anymail(sendgrid_settings, SENDGRID_API_KEY="error-400")

    with pytest.raises(EmailError) as excinfo:
        send_email_message(to=TO, subject=SUBJECT, text_body=TEXT)

    assert type(excinfo.value) is EmailError
    assert excinfo.value.retryable is False
    assert excinfo.value.status_code == 400
    assert str(excinfo.value) == (
        "sendgrid answered HTTP 400: subject: Helpful explanation from SendGrid; Another error."
    )
    assert len(fake_sendgrid.requests) == 1


def test_a_400_on_the_recipient_address_is_a_recipient_error(sendgrid_settings, fake_sendgrid):
    with pytest.raises(EmailRecipientError) as excinfo:
        send_email_message(to="invalid@example.com", subject=SUBJECT, text_body=TEXT)

    assert excinfo.value.retryable is False
    assert excinfo.value.status_code == 400
    assert str(excinfo.value) == "sendgrid rejected the recipient: Does not contain a valid address."
    (request,) = fake_sendgrid.requests
    assert request.recipients == ["invalid@example.com"]


def test_a_400_on_the_sender_and_the_recipient_is_a_plain_email_error(sendgrid_settings, fake_sendgrid):
    """Our from address is wrong too: another recipient would fail the same way."""
    use_anymail(sendgrid_settings, SENDGRID_API_KEY="error-400-from-and-to")

    with pytest.raises(EmailError) as excinfo:
        send_email_message(to=TO, subject=SUBJECT, text_body=TEXT)

    assert type(excinfo.value) is EmailError
    assert excinfo.value.status_code == 400
    assert str(excinfo.value) == (
        "sendgrid answered HTTP 400: from.email: The from email does not contain a valid address; "
        "personalizations.0.to.0.email: Does not contain a valid address."
    )


def test_a_revoked_key_is_a_plain_email_error(sendgrid_settings, fake_sendgrid):
    use_anymail(sendgrid_settings, SENDGRID_API_KEY="error-401")

    with pytest.raises(EmailError) as excinfo:
        send_email_message(to=TO, subject=SUBJECT, text_body=TEXT)

    assert type(excinfo.value) is EmailError
    assert excinfo.value.retryable is False
    assert excinfo.value.status_code == 401


@pytest.mark.parametrize("status_code", [429, 500])
def test_throttling_and_server_errors_are_temporary(sendgrid_settings, fake_sendgrid, status_code):
    use_anymail(sendgrid_settings, SENDGRID_API_KEY=f"error-{status_code}")

    with pytest.raises(EmailTemporaryError) as excinfo:
        send_email_message(to=TO, subject=SUBJECT, text_body=TEXT)

    assert excinfo.value.retryable is True
    assert excinfo.value.status_code == status_code
    assert str(excinfo.value) == f"sendgrid answered HTTP {status_code}."
    assert len(fake_sendgrid.requests) == 1


def test_a_read_timeout_is_temporary(sendgrid_settings, fake_sendgrid):
    use_anymail(sendgrid_settings, REQUESTS_TIMEOUT=0.3)
    fake_sendgrid.slow_delay = 1.0

    with pytest.raises(EmailTemporaryError) as excinfo:
        send_email_message(to="slow@example.com", subject=SUBJECT, text_body=TEXT)

    assert excinfo.value.retryable is True
    assert excinfo.value.status_code is None
    assert str(excinfo.value) == "sendgrid did not answer in time."
    (request,) = fake_sendgrid.requests
    assert request.recipients == ["slow@example.com"]


def test_connection_refused_is_temporary(sendgrid_settings, fake_sendgrid, closed_port_url):
    use_anymail(sendgrid_settings, SENDGRID_API_URL=closed_port_url)

    with pytest.raises(EmailTemporaryError) as excinfo:
        send_email_message(to=TO, subject=SUBJECT, text_body=TEXT)

    assert excinfo.value.retryable is True
    assert excinfo.value.status_code is None
    assert str(excinfo.value) == "sendgrid is unreachable: ConnectionError."
    assert fake_sendgrid.requests == []


@pytest.mark.parametrize(
    "address", ["not-an-email", "", "client@", "a@b.c\nBcc: x@y.z", "a@example.com, b@example.com"]
)
def test_a_malformed_address_is_a_recipient_error_before_any_request(sendgrid_settings, fake_sendgrid, address):
    with pytest.raises(EmailRecipientError) as excinfo:
        send_email_message(to=address, subject=SUBJECT, text_body=TEXT)

    assert str(excinfo.value) == "Not a valid email address."
    assert fake_sendgrid.requests == []


def test_error_kinds():
    assert issubclass(EmailRecipientError, EmailError)
    assert issubclass(EmailTemporaryError, EmailError)
    assert (EmailError("x").retryable, EmailRecipientError("x").retryable, EmailTemporaryError("x").retryable) == (
        False,
        False,
        True,
    )
    assert EmailError("x").status_code is None


# --- the console backend ---------------------------------------------------------------------------


def test_the_console_backend_prints_the_email_and_sends_nothing(settings, fake_sendgrid, capsys):
    settings.EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
    settings.DEFAULT_FROM_EMAIL = "noreply@svoykrug.example"

    receipt = send_email_message(to=TO, subject="Hello", text_body="Plain text", html_body="<p>HTML</p>")

    assert receipt == EmailReceipt(provider="console", message_id="console", status="sent")
    printed = capsys.readouterr().out
    assert f"To: {TO}" in printed
    assert "Subject: Hello" in printed
    assert "Plain text" in printed
    assert "<p>HTML</p>" in printed
    assert fake_sendgrid.requests == []


def _email_settings(**env) -> dict:
    """EMAIL_BACKEND and ANYMAIL as a fresh interpreter reads them from exactly this environment."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "EMAIL_"))}
    code = (
        "import django, json; from django.conf import settings; django.setup(); "
        "print(json.dumps({'backend': settings.EMAIL_BACKEND, 'anymail': settings.ANYMAIL}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        env={**clean, "DJANGO_SECRET_KEY": "k" * 50, "DJANGO_SETTINGS_MODULE": "svoykrug.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_settings_without_a_key_use_the_console_backend_and_a_10_second_timeout():
    loaded = _email_settings()

    assert loaded["backend"] == "django.core.mail.backends.console.EmailBackend"
    assert loaded["anymail"]["REQUESTS_TIMEOUT"] == 10.0
    assert loaded["anymail"]["WEBHOOK_SECRET"] is None


def test_settings_with_a_key_use_anymail_with_the_timeout_and_the_webhook_secret():
    loaded = _email_settings(EMAIL_ESP_API_KEY="SG.key", EMAIL_TIMEOUT_SECONDS="4.5", EMAIL_WEBHOOK_SECRET="u:p")

    assert loaded["backend"] == "anymail.backends.sendgrid.EmailBackend"
    assert loaded["anymail"]["SENDGRID_API_KEY"] == "SG.key"
    assert loaded["anymail"]["REQUESTS_TIMEOUT"] == 4.5
    assert loaded["anymail"]["WEBHOOK_SECRET"] == "u:p"


# --- delivery reports: the tracking webhook ----------------------------------------------------------


def make_log(message_id: str, *, status=NotificationLog.Status.SENT, channel=NotificationLog.Channel.EMAIL):
    return NotificationLog.objects.create(
        channel=channel,
        recipient=TO,
        kind="bonus_accrued",
        status=status,
        provider_message_id=message_id,
        idempotency_key=f"test:{channel}:{message_id}:{uuid.uuid4()}",
        subject=SUBJECT,
        body=TEXT,
        attempts=1,
    )


def basic_auth(secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(secret.encode()).decode()}


def post_events(client, fixture_names, message_id, *, secret=WEBHOOK_SECRET):
    """POST the fixtures' events as one batch, each rewritten to carry `message_id`."""
    events = []
    for name in [fixture_names] if isinstance(fixture_names, str) else fixture_names:
        for event in load_fixture(name):
            event["anymail_id"] = message_id
            event["sg_message_id"] = message_id
            events.append(event)
    headers = basic_auth(secret) if secret is not None else {}
    return client.post(WEBHOOK_URL, data=json.dumps(events), content_type="application/json", headers=headers)


@pytest.fixture
def webhook_settings(settings):
    settings.ANYMAIL = {**settings.ANYMAIL, "WEBHOOK_SECRET": WEBHOOK_SECRET}
    return settings


def test_the_webhook_lives_where_sendgrid_posts():
    assert reverse("anymail:sendgrid_tracking_webhook") == WEBHOOK_URL


@pytest.mark.django_db
def test_a_delivered_event_marks_the_row_delivered(client, webhook_settings):
    log = make_log("msg-delivered")

    response = post_events(client, "tracking_delivered.json", "msg-delivered")

    assert response.status_code == 200
    log.refresh_from_db()
    assert log.status == NotificationLog.Status.DELIVERED
    assert log.delivered_at == EVENT_TIME
    assert log.reason == ""


@pytest.mark.django_db
def test_a_bounce_marks_the_row_failed_with_the_reason(client, webhook_settings):
    log = make_log("msg-bounce")

    response = post_events(client, "tracking_bounce.json", "msg-bounce")

    assert response.status_code == 200
    log.refresh_from_db()
    assert log.status == NotificationLog.Status.FAILED
    assert log.reason == "bounced: 550 5.1.1 The email account that you tried to reach does not exist."
    assert log.delivered_at is None


@pytest.mark.django_db
@pytest.mark.parametrize("fixture", ["tracking_processed.json", "tracking_open.json", "tracking_click.json"])
def test_other_events_leave_the_status_alone(client, webhook_settings, fixture):
    log = make_log("msg-other")
    before = log.updated_at

    response = post_events(client, fixture, "msg-other")

    assert response.status_code == 200
    log.refresh_from_db()
    assert (log.status, log.reason, log.delivered_at, log.updated_at) == (
        NotificationLog.Status.SENT,
        "",
        None,
        before,
    )


@pytest.mark.django_db
def test_a_batch_is_applied_event_by_event(client, webhook_settings):
    log = make_log("msg-batch")

    response = post_events(
        client, ["tracking_processed.json", "tracking_delivered.json", "tracking_open.json"], "msg-batch"
    )

    assert response.status_code == 200
    log.refresh_from_db()
    assert log.status == NotificationLog.Status.DELIVERED


@pytest.mark.django_db
def test_a_bounce_never_moves_a_delivered_row_back(client, webhook_settings):
    log = make_log("msg-late-bounce")

    post_events(client, "tracking_delivered.json", "msg-late-bounce")
    response = post_events(client, "tracking_bounce.json", "msg-late-bounce")

    assert response.status_code == 200
    log.refresh_from_db()
    assert (log.status, log.reason, log.delivered_at) == (NotificationLog.Status.DELIVERED, "", EVENT_TIME)


@pytest.mark.django_db
def test_a_repeated_delivery_report_keeps_the_first_time(client, webhook_settings):
    log = make_log("msg-twice")
    post_events(client, "tracking_delivered.json", "msg-twice")
    log.refresh_from_db()
    first = (log.delivered_at, log.updated_at)

    post_events(client, "tracking_delivered.json", "msg-twice")

    log.refresh_from_db()
    assert (log.delivered_at, log.updated_at) == first


@pytest.mark.django_db
@pytest.mark.parametrize("status", [NotificationLog.Status.FAILED, NotificationLog.Status.SKIPPED])
def test_failed_and_skipped_rows_stay_as_they_are(client, webhook_settings, status):
    log = make_log("msg-final", status=status)

    post_events(client, "tracking_delivered.json", "msg-final")

    log.refresh_from_db()
    assert (log.status, log.delivered_at) == (status, None)


@pytest.mark.django_db
@pytest.mark.parametrize("status", [NotificationLog.Status.QUEUED, NotificationLog.Status.SENDING])
def test_a_row_not_yet_marked_sent_moves_too(client, webhook_settings, status):
    log = make_log("msg-early", status=status)

    post_events(client, "tracking_bounce.json", "msg-early")

    log.refresh_from_db()
    assert log.status == NotificationLog.Status.FAILED


@pytest.mark.django_db
@pytest.mark.parametrize(
    "headers",
    [basic_auth("sendgrid:wrong-secret"), basic_auth("someone:else"), {}],
    ids=["wrong-password", "wrong-user", "no-auth"],
)
def test_a_wrong_or_missing_secret_is_refused_and_changes_nothing(client, webhook_settings, headers):
    log = make_log("msg-forged")
    events = load_fixture("tracking_bounce.json")
    events[0]["anymail_id"] = "msg-forged"

    response = client.post(WEBHOOK_URL, data=json.dumps(events), content_type="application/json", headers=headers)

    assert response.status_code in (400, 401, 403)
    log.refresh_from_db()
    assert (log.status, log.reason) == (NotificationLog.Status.SENT, "")


@pytest.mark.django_db
def test_an_unknown_message_id_changes_nothing(client, webhook_settings):
    log = make_log("msg-known")

    response = post_events(client, "tracking_bounce.json", "msg-nobody-sent")

    assert response.status_code == 200
    log.refresh_from_db()
    assert (log.status, log.reason) == (NotificationLog.Status.SENT, "")


@pytest.mark.django_db
def test_the_fixture_ids_as_written_change_nothing(client, webhook_settings):
    """The fixture's own anymail_id matches no row: the webhook still answers 200."""
    log = make_log("msg-ours")

    response = client.post(
        WEBHOOK_URL,
        data=(FIXTURES_DIR / "tracking_bounce.json").read_bytes(),
        content_type="application/json",
        headers=basic_auth(WEBHOOK_SECRET),
    )

    assert response.status_code == 200
    log.refresh_from_db()
    assert log.status == NotificationLog.Status.SENT


@pytest.mark.django_db
def test_only_email_rows_are_touched(client, webhook_settings):
    sms = make_log("shared-id", channel=NotificationLog.Channel.SMS)
    email = make_log("shared-id")

    post_events(client, "tracking_bounce.json", "shared-id")

    sms.refresh_from_db()
    email.refresh_from_db()
    assert (sms.status, email.status) == (NotificationLog.Status.SENT, NotificationLog.Status.FAILED)


@pytest.mark.django_db
def test_every_row_with_the_id_is_updated(client, webhook_settings):
    rows = [make_log("msg-shared"), make_log("msg-shared")]

    post_events(client, "tracking_delivered.json", "msg-shared")

    assert {NotificationLog.objects.get(pk=row.pk).status for row in rows} == {NotificationLog.Status.DELIVERED}


@pytest.mark.django_db
def test_a_sent_and_reported_email_round_trip(client, sendgrid_settings, fake_sendgrid):
    """The id the send returns is the id SendGrid's events carry back (custom_args.anymail_id)."""
    receipt = send_email_message(to=TO, subject=SUBJECT, text_body=TEXT)
    log = make_log(receipt.message_id)
    (request,) = fake_sendgrid.requests
    sent_id = request.json["personalizations"][0]["custom_args"]["anymail_id"]

    post_events(client, "tracking_delivered.json", sent_id)

    log.refresh_from_db()
    assert log.status == NotificationLog.Status.DELIVERED


# --- record_email_event and the receiver -----------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("event_type", "status"),
    [
        ("delivered", NotificationLog.Status.DELIVERED),
        ("bounced", NotificationLog.Status.FAILED),
        ("rejected", NotificationLog.Status.FAILED),
        ("failed", NotificationLog.Status.FAILED),
        ("complained", NotificationLog.Status.SENT),
        ("unsubscribed", NotificationLog.Status.SENT),
        ("deferred", NotificationLog.Status.SENT),
        ("queued", NotificationLog.Status.SENT),
        ("opened", NotificationLog.Status.SENT),
        ("clicked", NotificationLog.Status.SENT),
        ("unknown", NotificationLog.Status.SENT),
    ],
)
def test_record_email_event_by_type(event_type, status):
    log = make_log("msg-typed")

    changed = record_email_event(message_id="msg-typed", event_type=event_type, description="why", timestamp=None)

    log.refresh_from_db()
    assert log.status == status
    assert changed == (0 if status == NotificationLog.Status.SENT else 1)
    if status == NotificationLog.Status.FAILED:
        assert log.reason == f"{event_type}: why"
    if status == NotificationLog.Status.DELIVERED:
        assert log.delivered_at is not None  # no timestamp in the event: the time it arrived


@pytest.mark.django_db
@pytest.mark.parametrize("message_id", [None, "", "console"])
def test_record_email_event_ignores_ids_that_name_no_single_message(message_id):
    blank = make_log("")
    console = make_log("console")

    changed = record_email_event(message_id=message_id, event_type="bounced", description="x", timestamp=EVENT_TIME)

    assert changed == 0
    assert {NotificationLog.objects.get(pk=row.pk).status for row in (blank, console)} == {NotificationLog.Status.SENT}


@pytest.mark.django_db
def test_a_long_reason_is_cut_to_the_column(webhook_settings):
    log = make_log("msg-long")

    record_email_event(message_id="msg-long", event_type="bounced", description="x" * 1000, timestamp=EVENT_TIME)

    log.refresh_from_db()
    assert len(log.reason) == NotificationLog._meta.get_field("reason").max_length
    assert log.reason.startswith("bounced: xxx")


@pytest.mark.django_db
def test_the_receiver_is_connected_to_anymails_tracking_signal():
    log = make_log("msg-signal")
    event = AnymailTrackingEvent(
        event_type="rejected",
        message_id="msg-signal",
        timestamp=EVENT_TIME,
        reject_reason="bounced",
        mta_response=None,
    )

    tracking.send(sender=object(), event=event, esp_name="SendGrid")

    log.refresh_from_db()
    assert (log.status, log.reason) == (NotificationLog.Status.FAILED, "rejected: bounced")
