"""The Renovatio provider against a local fake Renovatio (tests/fakes/renovatio.py): the key and
its intermittent "Auth error", paid visits as one purchase each, refunds of cancelled visits."""

import zoneinfo
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from integrations.providers import get_provider
from integrations.providers.base import (
    ProviderAuthError,
    ProviderConfigError,
    ProviderError,
    ProviderUnavailable,
    WebhookRejected,
)
from integrations.providers.renovatio import RenovatioProvider
from tests.factories import CRMIntegrationFactory
from tests.fakes.renovatio import API_KEY, FakeRenovatio, make_appointment, make_invoice

MOSCOW = zoneinfo.ZoneInfo("Europe/Moscow")
# The fixtures' visit is on 13.03.2026; a sync of that day in Moscow.
SINCE = datetime(2026, 3, 13, 6, 0, tzinfo=UTC)
UNTIL = datetime(2026, 3, 13, 18, 0, tzinfo=UTC)
PHONE = "+7 (916) 123-45-67"


@pytest.fixture
def fake_renovatio(settings):
    fake = FakeRenovatio(slow_delay=1.0)
    fake.start()
    settings.RENOVATIO_BASE_URL = fake.url
    try:
        yield fake
    finally:
        fake.stop()


def connect(api_key=API_KEY, **config):
    return get_provider(CRMIntegrationFactory(provider="renovatio", config=config, credentials={"api_key": api_key}))


@pytest.fixture
def renovatio(db, fake_renovatio):
    return connect()


def fetch(provider, since=SINCE, until=UNTIL):
    return [event for page in provider.fetch_changes(since, until) for event in page]


# --- Connection --------------------------------------------------------------------------------


def test_connection_names_the_clinics(renovatio, fake_renovatio):
    assert isinstance(renovatio, RenovatioProvider)
    assert renovatio.test_connection() == "Renovatio: Клиника на Ленина"
    (request,) = fake_renovatio.requests
    assert (request.method, request.fields) == ("getClinics", {"api_key": API_KEY})
    assert request.content_type == "application/x-www-form-urlencoded"


@pytest.mark.django_db
def test_a_wrong_key_is_tried_twice_then_an_auth_error(fake_renovatio):
    with pytest.raises(ProviderAuthError) as caught:
        connect(api_key="wrong-key-123").test_connection()
    assert caught.value.message == "Renovatio: the API key was refused (Auth error)."
    assert len(fake_renovatio.requests) == 2


def test_the_intermittent_auth_error_is_retried_once(renovatio, fake_renovatio):
    fake_renovatio.auth_errors = 1
    assert renovatio.test_connection().startswith("Renovatio")
    assert len(fake_renovatio.requests) == 2


def test_renovatios_other_errors_carry_its_text(renovatio, fake_renovatio):
    fake_renovatio.errors = {"getClinics": "error_500_intersection.json"}
    with pytest.raises(ProviderError) as caught:
        renovatio.test_connection()
    assert type(caught.value) is ProviderError
    assert (
        caught.value.message == "Renovatio: getClinics failed: Визит пересекается с другими визитами врача (code 500)."
    )
    assert len(fake_renovatio.requests) == 1


@pytest.mark.django_db
def test_a_clinic_id_the_account_lacks_is_a_config_error(fake_renovatio):
    with pytest.raises(ProviderConfigError):
        connect(clinic_id="7").test_connection()


@pytest.mark.django_db
def test_a_missing_key_is_a_config_error(fake_renovatio):
    with pytest.raises(ProviderConfigError):
        connect(api_key="").test_connection()
    assert fake_renovatio.requests == []


@pytest.mark.django_db
def test_the_base_url_can_be_set_per_integration(settings, fake_renovatio):
    settings.RENOVATIO_BASE_URL = "http://127.0.0.1:9"  # nothing listens there
    assert connect(base_url=fake_renovatio.url + "/").test_connection().startswith("Renovatio")


def test_server_errors_are_retried_then_unavailable(renovatio, fake_renovatio):
    fake_renovatio.fail_status = 500
    with pytest.raises(ProviderUnavailable):
        fetch(renovatio)
    assert len(fake_renovatio.requests) == 3  # INTEGRATIONS_HTTP_RETRIES = 2


def test_a_slow_answer_is_retried_then_unavailable(renovatio, fake_renovatio, settings):
    settings.INTEGRATIONS_READ_TIMEOUT_SECONDS = 0.2  # the fake answers after a second
    fake_renovatio.slow = True
    with pytest.raises(ProviderUnavailable):
        renovatio.test_connection()
    assert len(fake_renovatio.requests) == 3


# --- Visits and invoices ------------------------------------------------------------------------


def test_a_visit_and_its_paid_invoice_are_one_purchase(renovatio, fake_renovatio):
    (event,) = fetch(renovatio)
    assert (event.kind, event.external_id) == ("purchase", "appointment:987654")
    assert event.amount == Decimal("2500.00")
    assert event.occurred_at == datetime(2026, 3, 13, 10, 35, tzinfo=MOSCOW)  # the invoice's time
    assert (event.phone, event.customer_name) == (PHONE, "Петров Иван Сергеевич")
    visits, invoices = fake_renovatio.requests
    assert (visits.method, visits.fields) == (
        "getAppointments",
        {"api_key": API_KEY, "date_from": "13.03.2026", "date_to": "13.03.2026", "show_patient_data": "1"},
    )
    assert (invoices.method, invoices.fields) == (
        "getInvoices",
        {"api_key": API_KEY, "date_from": "13.03.2026", "date_to": "13.03.2026", "status": "2"},
    )


def test_a_completed_visit_without_an_invoice_is_the_sum_of_its_services(renovatio, fake_renovatio):
    services = [{"title": "Приём", "price": "2500.00", "count": "1"}, {"title": "УЗИ", "price": "700.50", "count": "2"}]
    fake_renovatio.appointments = [make_appointment(services=services)]
    fake_renovatio.invoices = []
    (event,) = fetch(renovatio)
    assert (event.external_id, event.amount) == ("appointment:987654", Decimal("3901.00"))
    assert event.occurred_at == datetime(2026, 3, 13, 10, 0, tzinfo=MOSCOW)
    assert event.phone == PHONE


def test_a_visit_paid_by_two_invoices_is_their_sum(renovatio, fake_renovatio):
    fake_renovatio.invoices = [
        make_invoice(value="1000.00"),
        make_invoice(id=445567, value="1500.00", date="13.03.2026 11:00"),
    ]
    (event,) = fetch(renovatio)
    assert (event.external_id, event.amount) == ("appointment:987654", Decimal("2500.00"))
    assert event.occurred_at == datetime(2026, 3, 13, 11, 0, tzinfo=MOSCOW)


def test_a_refused_visit_is_a_refund_and_an_upcoming_one_is_left_alone(renovatio, fake_renovatio):
    fake_renovatio.appointments = [make_appointment(status="refused"), make_appointment(id=2, status="upcoming")]
    fake_renovatio.invoices = []
    (event,) = fetch(renovatio)
    assert (event.kind, event.external_id, event.refund_id) == (
        "refund",
        "appointment:987654",
        "appointment:987654:refused",
    )
    assert event.amount is None


def test_an_invoice_paid_after_the_visit_day_takes_the_phone_from_the_visit(renovatio, fake_renovatio):
    fake_renovatio.invoices = [make_invoice(date="16.03.2026 09:00")]
    (event,) = fetch(
        renovatio, since=datetime(2026, 3, 16, 6, 0, tzinfo=UTC), until=datetime(2026, 3, 16, 7, 0, tzinfo=UTC)
    )
    assert (event.external_id, event.amount, event.phone) == ("appointment:987654", Decimal("2500.00"), PHONE)
    lookup = fake_renovatio.calls("getAppointment")[0]
    assert lookup.fields["appointment_id"] == "987654"


def test_an_invoice_without_a_visit_is_its_own_purchase_without_a_phone(renovatio, fake_renovatio):
    fake_renovatio.appointments = []
    fake_renovatio.invoices = [make_invoice(id=77, appointment_id=None, value="990")]
    (event,) = fetch(renovatio)
    assert (event.external_id, event.amount, event.phone) == ("invoice:77", Decimal("990.00"), "")


def test_an_unreadable_record_is_ignored_and_the_others_go_on(renovatio, fake_renovatio):
    fake_renovatio.appointments = [make_appointment(), make_appointment(id=2, time_start="13.03.2026 12:00")]
    fake_renovatio.invoices = [make_invoice(value="n/a")]
    bad, good = fetch(renovatio)
    assert (bad.kind, bad.external_id) == ("ignored", "appointment:987654")
    assert "not a number" in bad.reason
    assert (good.kind, good.external_id, good.amount) == ("purchase", "appointment:2", Decimal("2500.00"))


def test_the_clinic_filter_is_sent_and_applied(db, fake_renovatio):
    fake_renovatio.appointments = [make_appointment(), make_appointment(id=2, clinic_id=2)]
    fake_renovatio.invoices = [make_invoice(id=9, appointment_id=2)]
    fake_renovatio.clinics.append({"id": 2, "title": "Клиника на Мира"})
    events = fetch(connect(clinic_id="1"))
    assert [event.external_id for event in events] == ["appointment:987654"]
    assert fake_renovatio.calls("getAppointments")[0].fields["clinic_id"] == "1"


def test_the_window_is_whole_days_in_the_business_zone_in_pages_of_a_week(renovatio, fake_renovatio):
    # 21:30 UTC on 28.02 is already 01.03 in Moscow.
    fetch(renovatio, since=datetime(2026, 2, 28, 21, 30, tzinfo=UTC), until=datetime(2026, 3, 20, 12, 0, tzinfo=UTC))
    ranges = [(r.fields["date_from"], r.fields["date_to"]) for r in fake_renovatio.calls("getAppointments")]
    assert ranges == [("01.03.2026", "07.03.2026"), ("08.03.2026", "14.03.2026"), ("15.03.2026", "20.03.2026")]
    assert len(fake_renovatio.calls("getInvoices")) == 3


def test_renovatio_sends_no_webhooks(renovatio):
    assert RenovatioProvider.accepts_webhooks is False
    with pytest.raises(WebhookRejected, match="Renovatio sends no webhooks"):
        renovatio.parse_webhook(b"{}", "application/json")
