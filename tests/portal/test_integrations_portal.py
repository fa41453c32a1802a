"""The portal's Integrations section: the providers' cards, connecting (secrets stored
encrypted and never shown), test connection, sync now, pause/resume, the records and
webhooks of an integration, the CSV import (upload → preview → import → progress), roles
and isolation between businesses.

No test talks to a CRM: `services.check_connection` and the YCLIENTS/iiko
`register_webhook` are replaced by the `crm` fixture's fakes, and any HTTP call a provider
would still make fails the test."""

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.contrib.messages import get_messages
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import resolve
from django.utils import timezone

from integrations import services, tasks
from integrations.models import CRMIntegration, CrmRecord, ImportJob, WebhookDelivery
from integrations.providers.amocrm import AmoCrmProvider
from integrations.providers.base import ProviderAuthError, ProviderError, ProviderSession
from integrations.providers.iiko import IikoProvider
from integrations.providers.yclients import YclientsProvider
from loyalty.models import Transaction
from svoykrug import portal_urls
from tests.factories import CRMIntegrationFactory

Health = CRMIntegration.Health
SECRET = "ycl-user-token-0123456789-abcdef-SECRET"
PROVIDERS = ["yclients", "iiko", "amocrm", "onec", "renovatio"]


def flashed(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


@dataclass
class FakeCrm:
    """What the portal asked of the CRMs: connection checks and webhook registrations."""

    check_result: tuple = (True, "YCLIENTS company 4564, 12 records")
    checks: list = field(default_factory=list)
    registered: list = field(default_factory=list)
    register_error: Exception | None = None


@pytest.fixture(autouse=True)
def crm(monkeypatch):
    fake = FakeCrm()

    def check_connection(integration):
        fake.checks.append(integration.pk)
        return fake.check_result

    def register_webhook(provider, url):
        fake.registered.append((provider.integration.pk, url))
        if fake.register_error:
            raise fake.register_error
        return True

    def no_http(session, method, url, **kwargs):
        raise AssertionError(f"a portal test made an HTTP call: {method} {url}")

    monkeypatch.setattr(services, "check_connection", check_connection)
    monkeypatch.setattr(YclientsProvider, "register_webhook", register_webhook)
    monkeypatch.setattr(IikoProvider, "register_webhook", register_webhook)
    monkeypatch.setattr(ProviderSession, "request", no_http)
    return fake


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return tmp_path / "media"


@pytest.fixture
def yclients(business_a):
    return CRMIntegrationFactory(
        business=business_a, provider="yclients", config={"company_id": "4564"}, credentials={"user_token": SECRET}
    )


def make_job(business, content: bytes = b"id;phone;amount;date\n", *, name="history.csv", **fields) -> ImportJob:
    job = ImportJob(business=business, original_name=name, **fields)
    job.file.save(f"{job.pk}.csv", ContentFile(content), save=False)
    job.save()
    return job


# --- The cards ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_without_integrations_every_provider_offers_connect(client, login, owner):
    login(owner)

    response = client.get("/portal/integrations/")

    assert response.status_code == 200
    assert [card.code for card in response.context["cards"]] == PROVIDERS
    assert all(card.integration is None for card in response.context["cards"])
    html = response.content.decode()
    for code in PROVIDERS:
        assert f'href="/portal/integrations/{code}/connect/"' in html
    assert '<a href="/portal/integrations/" class="active">Integrations</a>' in html


@pytest.mark.django_db
def test_cards_show_each_health_state_and_the_failing_error(client, login, owner, business_a, yclients):
    business_a.time_zone = "Asia/Yekaterinburg"  # UTC+5
    business_a.save(update_fields=["time_zone"])
    synced = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)
    CRMIntegration.objects.filter(pk=yclients.pk).update(last_sync_at=synced, last_success_at=synced, watermark=synced)
    CRMIntegrationFactory(
        business=business_a, provider="iiko", health=Health.DEGRADED, consecutive_failures=3, is_active=False
    )
    failing = CRMIntegrationFactory(
        business=business_a,
        provider="renovatio",
        credentials={"api_key": "renovatio-key-9876543210-wxyz"},
        health=Health.FAILING,
        consecutive_failures=12,
        last_error="Renovatio: no answer in time (app.rnova.org).",
        last_error_at=datetime(2026, 3, 15, 7, 30, tzinfo=UTC),
    )
    login(owner)

    response = client.get("/portal/integrations/")

    cards = {card.code: card for card in response.context["cards"]}
    assert cards["yclients"].integration.health == Health.OK
    assert cards["iiko"].integration.health == Health.DEGRADED
    assert cards["renovatio"].integration == failing
    html = response.content.decode()
    assert "3 failures in a row" in html
    assert "12 failures in a row" in html
    assert ">Degraded" in html and ">Failing" in html and ">OK" in html
    assert ">paused</span>" in html
    assert "Renovatio: no answer in time (app.rnova.org)." in html
    assert "15.03.2026 12:30" in html  # the error's time in the business's zone
    assert "14.03.2026 14:00" in html  # last sync, last success, synced up to
    # The webhook URL to paste, absolute, for providers that take webhooks only.
    assert f"http://testserver/api/v1/integrations/{yclients.pk}/webhook/{yclients.webhook_secret}/" in html
    assert cards["yclients"].webhook_url.startswith("http://testserver/")
    assert cards["renovatio"].webhook_url == ""
    assert failing.webhook_secret not in html
    # Secrets masked, never whole.
    assert SECRET not in html and "renovatio-key-9876543210-wxyz" not in html
    assert "••••" + SECRET[-4:] in html and "••••wxyz" in html
    assert f'action="/portal/integrations/{yclients.pk}/sync/"' in html
    assert f'href="/portal/integrations/{failing.pk}/records/"' in html


@pytest.mark.django_db
def test_cards_count_the_purchases_recorded_and_the_unmatched(client, login, owner, business_a, yclients, buy):
    purchase = buy(business_a, "+79991112201", "1000.00", external_id="yclients:record:1")
    CrmRecord.objects.create(
        integration=yclients,
        kind="purchase",
        external_id="record:1",
        status="recorded",
        transaction=purchase,
        via="sync",
    )
    CrmRecord.objects.create(
        integration=yclients, kind="purchase", external_id="record:2", status="unmatched", via="sync"
    )
    login(owner)

    card = client.get("/portal/integrations/").context["cards"][0]

    assert (card.recorded, card.unmatched) == (1, 1)


# --- Connecting -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_connect_yclients_stores_the_secret_encrypted_and_sets_up_the_webhook(client, login, owner, business_a, crm):
    login(owner)
    form = client.get("/portal/integrations/yclients/connect/")
    assert form.status_code == 200
    assert 'type="password" name="user_token"' in form.content.decode()

    response = client.post(
        "/portal/integrations/yclients/connect/", {"company_id": " 4564 ", "user_token": SECRET, "partner_token": ""}
    )

    assert response.status_code == 302
    assert response["Location"] == "/portal/integrations/#yclients"
    integration = CRMIntegration.objects.get(business=business_a, provider="yclients")
    assert integration.config["company_id"] == "4564"
    assert integration.credentials == {"user_token": SECRET}
    assert SECRET not in integration.credentials_encrypted
    assert crm.checks == [integration.pk]
    url = f"http://testserver/api/v1/integrations/{integration.pk}/webhook/{integration.webhook_secret}/"
    assert crm.registered == [(integration.pk, url)]
    assert flashed(response) == [
        "YCLIENTS is connected: YCLIENTS company 4564, 12 records",
        "The webhook is set up in YCLIENTS automatically.",
    ]
    for page in ("/portal/integrations/", "/portal/integrations/yclients/connect/"):
        html = client.get(page).content.decode()
        assert SECRET not in html
        assert "••••" + SECRET[-4:] in html


@pytest.mark.django_db
def test_a_webhook_the_crm_refuses_to_register_is_to_be_pasted_by_hand(client, login, owner, crm):
    crm.register_error = ProviderAuthError("YCLIENTS: the user may not change the company's settings.")
    login(owner)

    response = client.post("/portal/integrations/yclients/connect/", {"company_id": "4564", "user_token": SECRET})

    assert response.status_code == 302
    assert flashed(response)[-1] == (
        "Svoy Krug could not set up the webhook in YCLIENTS (YCLIENTS: the user may not change the company's "
        "settings.): paste the webhook URL into YCLIENTS by hand."
    )


@pytest.mark.django_db
def test_a_failed_connection_test_saves_with_a_warning_and_registers_nothing(client, login, owner, crm):
    crm.check_result = (False, "YCLIENTS: access refused: wrong user token.")
    login(owner)

    response = client.post("/portal/integrations/yclients/connect/", {"company_id": "4564", "user_token": SECRET})

    assert response.status_code == 302
    assert CRMIntegration.objects.filter(provider="yclients").exists()
    assert crm.registered == []
    assert flashed(response)[0] == (
        "The YCLIENTS settings are saved, but the connection test failed: YCLIENTS: access refused: wrong user token."
    )


@pytest.mark.django_db
def test_editing_with_an_empty_secret_keeps_the_stored_one(client, login, manager, yclients, crm):
    login(manager)
    page = client.get("/portal/integrations/yclients/connect/").content.decode()
    assert "Stored: ••••" + SECRET[-4:] + ". Leave empty to keep it." in page
    assert SECRET not in page
    assert 'value="4564"' in page  # the settings are filled in, the secrets are not

    response = client.post("/portal/integrations/yclients/connect/", {"company_id": "7777", "user_token": ""})

    assert response.status_code == 302
    yclients.refresh_from_db()
    assert yclients.config["company_id"] == "7777"
    assert yclients.credentials == {"user_token": SECRET}
    assert crm.checks == [yclients.pk]


@pytest.mark.django_db
def test_a_provider_refusal_is_a_form_error_that_keeps_what_was_typed_but_the_secret(
    client, login, owner, monkeypatch, crm
):
    def refuse(provider, form_data):
        raise ProviderAuthError("amoCRM: the authorization code is wrong or expired.")

    monkeypatch.setattr(AmoCrmProvider, "on_connect", refuse)
    login(owner)

    response = client.post(
        "/portal/integrations/amocrm/connect/", {"subdomain": "mycompany", "auth_code": "def50200-one-time-code"}
    )

    assert response.status_code == 400
    assert response.context["form"].non_field_errors() == ["amoCRM: the authorization code is wrong or expired."]
    html = response.content.decode()
    assert 'value="mycompany"' in html
    assert "def50200-one-time-code" not in html
    assert not CRMIntegration.objects.filter(provider="amocrm").exists()  # nothing half-saved
    assert crm.checks == []


@pytest.mark.django_db
def test_a_provider_without_automatic_webhooks_says_to_paste_the_url(client, login, owner, monkeypatch, crm):
    monkeypatch.setattr(AmoCrmProvider, "on_connect", lambda provider, form_data: None)
    login(owner)

    response = client.post("/portal/integrations/amocrm/connect/", {"subdomain": "mycompany", "auth_code": "code"})

    assert response.status_code == 302
    assert flashed(response)[-1] == "Paste the webhook URL from the amoCRM card below into amoCRM."
    assert crm.registered == []


@pytest.mark.django_db
def test_required_fields_and_an_unknown_provider(client, login, owner):
    login(owner)

    missing = client.post("/portal/integrations/yclients/connect/", {"company_id": "", "user_token": ""})
    unknown = client.get("/portal/integrations/bitrix/connect/")

    assert missing.status_code == 400
    assert set(missing.context["form"].errors) == {"company_id", "user_token"}
    assert not CRMIntegration.objects.exists()
    assert unknown.status_code == 404


@pytest.mark.django_db
def test_connecting_at_a_leaves_the_same_provider_of_b_alone(client, login, owner, business_a, business_b):
    theirs = CRMIntegrationFactory(
        business=business_b, provider="yclients", config={"company_id": "1"}, credentials={"user_token": "b-token"}
    )
    login(owner, business=business_a)

    client.post("/portal/integrations/yclients/connect/", {"company_id": "4564", "user_token": SECRET})

    theirs.refresh_from_db()
    assert theirs.config == {"company_id": "1"}
    assert theirs.credentials == {"user_token": "b-token"}
    assert CRMIntegration.objects.get(business=business_a).credentials == {"user_token": SECRET}


# --- Test connection, sync now, pause -------------------------------------------------------------


@pytest.mark.django_db
def test_test_connection_checks_this_integration_and_shows_the_answer(client, login, owner, yclients, crm):
    login(owner)

    ok = client.post(f"/portal/integrations/{yclients.pk}/test/")
    crm.check_result = (False, "YCLIENTS: access refused: wrong user token.")
    client.get("/portal/integrations/")  # shows (and so consumes) the first message
    failed = client.post(f"/portal/integrations/{yclients.pk}/test/")

    assert crm.checks == [yclients.pk, yclients.pk]
    assert ok["Location"] == "/portal/integrations/#yclients"
    assert flashed(ok) == ["The connection to YCLIENTS works: YCLIENTS company 4564, 12 records"]
    assert flashed(failed) == ["The connection to YCLIENTS failed: YCLIENTS: access refused: wrong user token."]


@pytest.mark.django_db
def test_sync_now_queues_a_sync_of_this_integration(client, login, owner, yclients, monkeypatch):
    queued = []
    monkeypatch.setattr(tasks.sync_integration, "delay", lambda integration_id: queued.append(integration_id))
    login(owner)

    response = client.post(f"/portal/integrations/{yclients.pk}/sync/")

    assert queued == [str(yclients.pk)]
    assert flashed(response) == ["A sync of YCLIENTS is queued: new purchases appear in a minute or two."]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("outcome", "message"),
    [
        (services.SyncBusy(), "A sync of YCLIENTS is already running; its purchases appear when it ends."),
        (ProviderError("YCLIENTS: server error 502."), "The sync of YCLIENTS failed: YCLIENTS: server error 502."),
        (services.Outcome(), "The sync of YCLIENTS is done: 0 new purchases."),
    ],
)
def test_sync_now_run_in_the_request_shows_its_outcome(client, login, owner, yclients, monkeypatch, outcome, message):
    synced = []

    def sync(integration, since=None):
        synced.append(integration.pk)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(services, "sync_integration", sync)  # the eager task calls it
    login(owner)

    response = client.post(f"/portal/integrations/{yclients.pk}/sync/")

    assert synced == [yclients.pk]
    assert flashed(response) == [message]


@pytest.mark.django_db
def test_a_paused_integration_is_not_synced(client, login, owner, yclients, monkeypatch):
    monkeypatch.setattr(tasks.sync_integration, "delay", lambda integration_id: pytest.fail("queued"))
    CRMIntegration.objects.filter(pk=yclients.pk).update(is_active=False)
    login(owner)

    response = client.post(f"/portal/integrations/{yclients.pk}/sync/")

    assert flashed(response) == ["YCLIENTS is paused: resume it to sync."]


@pytest.mark.django_db
def test_pause_and_resume(client, login, manager, yclients):
    login(manager)

    paused = client.post(f"/portal/integrations/{yclients.pk}/active/", {"active": "0"})
    yclients.refresh_from_db()
    assert yclients.is_active is False
    assert flashed(paused)[0].startswith("YCLIENTS is paused")
    assert ">Resume</button>" in client.get("/portal/integrations/").content.decode()

    client.post(f"/portal/integrations/{yclients.pk}/active/", {"active": "1"})
    yclients.refresh_from_db()
    assert yclients.is_active is True

    client.post(f"/portal/integrations/{yclients.pk}/active/")  # no value: a toggle
    yclients.refresh_from_db()
    assert yclients.is_active is False


# --- Records and webhooks ----------------------------------------------------------------------


@pytest.fixture
def records(business_a, yclients, buy):
    purchase = buy(business_a, "+79991112201", "1500.00", external_id="yclients:record:1")

    def record(external_id, status, **fields):
        return CrmRecord.objects.create(
            integration=yclients, kind="purchase", external_id=external_id, status=status, via="webhook", **fields
        )

    return {
        "recorded": record(
            "record:1", "recorded", transaction=purchase, phone="+79991112201", customer_name="Анна", amount="1500"
        ),
        "no_phone": record("record:2", "unmatched", reason="the CRM has no phone for this customer", amount="900"),
        "bad_phone": record(
            "record:3", "unmatched", phone="8912555", reason="the phone '8912555' is not a valid number", amount="700"
        ),
        "rejected": record("record:4", "rejected", reason="the purchase is more than 365 days old", amount="100"),
        "ignored": record("record:5", "ignored", reason="no money paid"),
        "purchase": purchase,
    }


@pytest.mark.django_db
def test_records_by_status_with_counts_masked_phones_and_purchase_links(client, login, owner, yclients, records):
    login(owner)

    everything = client.get(f"/portal/integrations/{yclients.pk}/records/")
    unmatched = client.get(f"/portal/integrations/{yclients.pk}/records/", {"status": "unmatched"})
    recorded = client.get(f"/portal/integrations/{yclients.pk}/records/", {"status": "recorded"})

    assert everything.context["counts"] == {"all": 5, "recorded": 1, "unmatched": 2, "ignored": 1, "rejected": 1}
    assert len(everything.context["page"]) == 5
    assert everything.context["page"][0].external_id == "record:5"  # newest first
    assert {r.external_id for r in unmatched.context["page"]} == {"record:2", "record:3"}
    html = everything.content.decode()
    assert "2 records wait for a customer phone." in html
    assert "No customer phone (2)" in html and "Recorded (1)" in html and "All (5)" in html
    assert html.count(f'href="/portal/transactions/{records["purchase"].pk}/"') == 1
    assert "+7999***2201" in html and "+79991112201" not in html
    assert "8912555" not in html  # in the phone column nor in the reason
    assert "the purchase is more than 365 days old" in html
    assert [r.external_id for r in recorded.context["page"]] == ["record:1"]
    assert f'href="/portal/transactions/{records["purchase"].pk}/"' in recorded.content.decode()


@pytest.mark.django_db
def test_webhooks_newest_first_without_bodies(client, login, owner, yclients):
    old = WebhookDelivery.objects.create(
        integration=yclients,
        body='{"client": {"phone": "+79990001122", "name": "Секретная Клиентка"}}',
        status=WebhookDelivery.Status.PROCESSED,
        result={"counts": {"recorded": 2, "unmatched": 1}, "notes": ["record:9: the CRM has no phone"]},
    )
    WebhookDelivery.objects.filter(pk=old.pk).update(received_at=timezone.now() - timedelta(hours=1))
    new = WebhookDelivery.objects.create(
        integration=yclients,
        body="not json +79990003344",
        status=WebhookDelivery.Status.REJECTED,
        error="The body is not JSON: Expecting value",
    )
    login(owner)

    response = client.get(f"/portal/integrations/{yclients.pk}/webhooks/")

    assert [d.pk for d in response.context["page"]] == [new.pk, old.pk]
    html = response.content.decode()
    assert "recorded: 2, no customer phone: 1" in html
    assert "The body is not JSON: Expecting value" in html
    assert "+79990001122" not in html and "Секретная Клиентка" not in html and "+79990003344" not in html
    assert response.context["page"][1].events == 3


# --- CSV import -------------------------------------------------------------------------------


def _csv(header="Номер чека;Телефон;Сумма;Дата") -> bytes:
    day = (timezone.localtime() - timedelta(days=3)).strftime("%d.%m.%Y %H:%M")
    rows = [header, f"r-1;+79991112201;1000,00;{day}", f"r-2;+79991112202;500;{day}", f"r-3;12345;700;{day}"]
    return ("\n".join(rows) + "\n").encode()


def _upload(client, content: bytes, name="history.csv"):
    return client.post("/portal/imports/", {"file": SimpleUploadedFile(name, content, content_type="text/csv")})


@pytest.mark.django_db
def test_import_upload_preview_confirm_and_progress(client, login, owner, business_a, media):
    login(owner)

    uploaded = _upload(client, _csv())

    job = ImportJob.objects.get(business=business_a)
    assert uploaded.status_code == 302
    assert uploaded["Location"] == f"/portal/imports/{job.pk}/preview/"
    assert (job.status, job.rows_total, job.uploaded_by, job.original_name) == ("pending", None, owner, "history.csv")
    assert not Transaction.objects.exists()  # nothing imported before the partner confirms

    preview = client.get(uploaded["Location"])

    assert preview.status_code == 200
    rows = preview.context["preview"]["rows"]
    assert [row["line"] for row in rows] == [2, 3, 4]
    assert rows[0]["row"].amount == Decimal("1000.00")
    assert rows[2]["error"] == "the phone '12345' is not a valid number"
    html = preview.content.decode()
    assert "the phone &#x27;12345&#x27; is not a valid number" in html
    assert "1,000.00\u00a0₽" in html
    assert preview.context["form"]["phone"].value() == "Телефон"  # the column the import found

    confirmed = client.post(
        uploaded["Location"],
        {"external_id": "Номер чека", "phone": "Телефон", "amount": "Сумма", "occurred_at": "Дата", "action": "import"},
    )

    assert confirmed["Location"] == f"/portal/imports/{job.pk}/"
    job.refresh_from_db()  # Celery runs eagerly in tests: the import has run
    assert job.mapping == {"Номер чека": "external_id", "Телефон": "phone", "Сумма": "amount", "Дата": "occurred_at"}
    assert (job.status, job.rows_total, job.imported, job.duplicates, job.rejected) == ("done", 3, 2, 0, 1)
    purchases = Transaction.objects.filter(business=business_a)
    assert sorted(purchases.values_list("external_id", flat=True)) == ["r-1", "r-2"]
    assert set(purchases.values_list("source", flat=True)) == {Transaction.Source.IMPORT}

    detail = client.get(confirmed["Location"])
    assert detail.status_code == 200
    html = detail.content.decode()
    assert 'http-equiv="refresh"' not in html  # done: no more reloading
    assert "the phone &#x27;12345&#x27; is not a valid number" in html
    assert client.get(f"/portal/imports/{job.pk}/progress.json").json() == {
        "status": "done",
        "percent": 100,
        "rows_done": 3,
        "rows_total": 3,
        "imported": 2,
        "duplicates": 0,
        "rejected": 1,
    }
    # Confirming again imports nothing twice, and the list shows the import.
    again = client.post(f"/portal/imports/{job.pk}/preview/", {"action": "import"})
    assert again["Location"] == f"/portal/imports/{job.pk}/"
    assert Transaction.objects.count() == 2
    assert f'href="/portal/imports/{job.pk}/"' in client.get("/portal/imports/").content.decode()


@pytest.mark.django_db
def test_a_column_the_import_cannot_find_shows_its_error_with_the_mapping(client, login, owner, business_a):
    login(owner)
    uploaded = _upload(client, _csv(header="Квитанция;Клиент;Итого;Когда"))

    preview = client.get(uploaded["Location"])

    assert preview.status_code == 400
    assert preview.context["file_error"].startswith("No column for external_id, phone, amount, occurred_at.")
    assert preview.context["form"].fields["phone"].choices[1:] == [
        (c, c) for c in ("Квитанция", "Клиент", "Итого", "Когда")
    ]
    assert 'name="action" value="import"' not in preview.content.decode()

    same_column = client.post(
        uploaded["Location"],
        {
            "external_id": "Квитанция",
            "phone": "Квитанция",
            "amount": "Итого",
            "occurred_at": "Когда",
            "action": "preview",
        },
    )
    assert same_column.status_code == 400
    assert same_column.context["form"].errors == {
        "phone": ["The column “Квитанция” is already chosen for “Purchase id”."]
    }

    mapped = client.post(
        uploaded["Location"],
        {"external_id": "Квитанция", "phone": "Клиент", "amount": "Итого", "occurred_at": "Когда", "action": "preview"},
    )
    assert mapped.status_code == 200
    assert len([row for row in mapped.context["preview"]["rows"] if not row["error"]]) == 2
    assert ImportJob.objects.get().status == "pending"  # a preview queues nothing
    assert not Transaction.objects.exists()


@pytest.mark.django_db
def test_an_upload_over_the_size_limit_or_not_csv_is_refused(client, login, owner, settings):
    settings.IMPORT_MAX_UPLOAD_MB = 1
    login(owner)

    too_big = _upload(client, b"a" * (1024 * 1024 + 100 * 1024))
    not_csv = _upload(client, _csv(), name="history.xlsx")

    assert too_big.status_code == 400
    assert too_big.context["form"].errors == {"file": ["The file is larger than 1 MB: split it into smaller files."]}
    assert not_csv.context["form"].errors == {"file": ["Upload a .csv or .txt file."]}
    assert not ImportJob.objects.exists()


@pytest.mark.django_db
def test_cancel_deletes_the_draft_and_its_file(client, login, owner, business_a, media):
    login(owner)
    _upload(client, _csv())
    job = ImportJob.objects.get()
    path = media / job.file.name
    assert path.exists()

    response = client.post(f"/portal/imports/{job.pk}/cancel/")

    assert response["Location"] == "/portal/imports/"
    assert not ImportJob.objects.exists()
    assert not path.exists()


@pytest.mark.django_db
def test_a_running_import_reloads_itself_and_cannot_be_cancelled(client, login, owner, business_a):
    job = make_job(business_a, status=ImportJob.Status.RUNNING, rows_total=200, rows_done=50)
    login(owner)

    page = client.get(f"/portal/imports/{job.pk}/")
    cancel = client.post(f"/portal/imports/{job.pk}/cancel/")

    html = page.content.decode()
    assert '<meta http-equiv="refresh" content="2">' in html
    assert 'value="25"' in html and "50 of 200 rows read (25%)" in html
    assert client.get(f"/portal/imports/{job.pk}/progress.json").json()["percent"] == 25
    assert cancel["Location"] == f"/portal/imports/{job.pk}/"
    assert ImportJob.objects.filter(pk=job.pk).exists()


@pytest.mark.django_db
def test_a_failed_import_shows_its_message(client, login, owner, business_a):
    job = make_job(business_a, status=ImportJob.Status.FAILED, rows_total=3, message="The file is not CSV: oops.")
    login(owner)

    html = client.get(f"/portal/imports/{job.pk}/").content.decode()

    assert "The file is not CSV: oops." in html
    assert 'http-equiv="refresh"' not in html


# --- Roles and isolation --------------------------------------------------------------------------


def _pages(integration, job, draft):
    """Every page of the section: (method, url, form data)."""
    return [
        ("get", "/portal/integrations/", None),
        ("get", "/portal/integrations/yclients/connect/", None),
        ("post", "/portal/integrations/yclients/connect/", {"company_id": "4564", "user_token": SECRET}),
        ("post", f"/portal/integrations/{integration.pk}/test/", None),
        ("post", f"/portal/integrations/{integration.pk}/sync/", None),
        ("post", f"/portal/integrations/{integration.pk}/active/", {"active": "1"}),
        ("get", f"/portal/integrations/{integration.pk}/records/", None),
        ("get", f"/portal/integrations/{integration.pk}/webhooks/", None),
        ("get", "/portal/imports/", None),
        ("post", "/portal/imports/", {}),
        ("get", f"/portal/imports/{job.pk}/", None),
        ("get", f"/portal/imports/{job.pk}/progress.json", None),
        ("get", f"/portal/imports/{draft.pk}/preview/", None),
        ("post", f"/portal/imports/{draft.pk}/preview/", {"action": "preview"}),
        ("post", f"/portal/imports/{draft.pk}/cancel/", None),
    ]


@pytest.fixture
def section(business_a, yclients, monkeypatch):
    monkeypatch.setattr(tasks.sync_integration, "delay", lambda integration_id: None)
    done = make_job(business_a, status=ImportJob.Status.DONE, rows_total=1, rows_done=1)
    return _pages(yclients, done, make_job(business_a, _csv()))


def test_the_page_table_covers_every_page_of_the_section():
    ours = {p.name for p in portal_urls.urlpatterns if p.callback.__module__ == "integrations.portal"}
    stand_in = SimpleNamespace(pk=uuid.UUID(int=1))
    covered = {resolve(url).url_name for _method, url, _data in _pages(stand_in, stand_in, stand_in)}

    assert covered == ours


@pytest.mark.django_db
def test_a_cashier_gets_403_on_every_page_and_no_navigation_entry(client, login, cashier, section):
    login(cashier)

    for method, url, data in section:
        response = getattr(client, method)(url, data or {})
        assert response.status_code == 403, (method, url)
        assert "Not allowed" in response.content.decode()
    assert "/portal/integrations/" not in client.get("/portal/").content.decode()
    assert CRMIntegration.objects.get().is_active is True
    assert ImportJob.objects.count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["owner", "manager"])
def test_owners_and_managers_open_every_page(client, login, request, section, role):
    login(request.getfixturevalue(role))

    for method, url, data in section:
        response = getattr(client, method)(url, data or {})
        assert response.status_code in (200, 302, 400), (method, url, response.status_code)


@pytest.fixture
def b_objects(business_b, monkeypatch):
    """B's integration (with a record and a webhook), B's finished import and B's draft."""
    monkeypatch.setattr(tasks.sync_integration, "delay", lambda integration_id: pytest.fail("B's sync queued"))
    monkeypatch.setattr(tasks.run_import, "delay", lambda job_id: pytest.fail("B's import queued"))
    integration = CRMIntegrationFactory(business=business_b, provider="yclients", credentials={"user_token": "b-tok"})
    CrmRecord.objects.create(
        integration=integration, kind="purchase", external_id="b:1", status="unmatched", via="sync"
    )
    WebhookDelivery.objects.create(integration=integration, body="{}", status=WebhookDelivery.Status.PROCESSED)
    return {
        "integration": integration,
        "job": make_job(business_b, status=ImportJob.Status.DONE, rows_total=1),
        "draft": make_job(business_b, _csv()),
    }


ISOLATION_CASES = [
    ("integration-test", "post", "/portal/integrations/{integration}/test/", None),
    ("integration-sync", "post", "/portal/integrations/{integration}/sync/", None),
    ("integration-active", "post", "/portal/integrations/{integration}/active/", {"active": "0"}),
    ("integration-records", "get", "/portal/integrations/{integration}/records/", None),
    ("integration-webhooks", "get", "/portal/integrations/{integration}/webhooks/", None),
    ("import", "get", "/portal/imports/{job}/", None),
    ("import", "get", "/portal/imports/{draft}/", None),
    ("import-progress", "get", "/portal/imports/{job}/progress.json", None),
    ("import-preview", "get", "/portal/imports/{draft}/preview/", None),
    ("import-preview", "post", "/portal/imports/{draft}/preview/", {"action": "import"}),
    ("import-cancel", "post", "/portal/imports/{draft}/cancel/", None),
]


def test_the_isolation_cases_cover_every_url_of_the_section_that_names_an_object():
    """Every URL of the section that names an object is tried with B's. The connect page
    names a provider, not an object: it always works on the member's own business
    (test_connecting_at_a_leaves_the_same_provider_of_b_alone)."""
    named = {
        p.name
        for p in portal_urls.urlpatterns
        if p.pattern.converters and p.callback.__module__ == "integrations.portal"
    }

    assert {name for name, *_rest in ISOLATION_CASES} == named - {"integration-connect"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "method", "url", "data"), ISOLATION_CASES, ids=[f"{c[1]} {c[2]}" for c in ISOLATION_CASES]
)
def test_a_member_of_a_gets_404_for_the_integrations_and_imports_of_b(
    client, login, owner, business_a, b_objects, crm, name, method, url, data
):
    login(owner, business=business_a)
    url = url.format(**{key: obj.pk for key, obj in b_objects.items()})
    assert resolve(url).url_name == name

    response = getattr(client, method)(url, data or {})

    assert response.status_code == 404
    assert crm.checks == []
    b_objects["integration"].refresh_from_db()
    assert b_objects["integration"].is_active is True
    assert ImportJob.objects.filter(pk=b_objects["draft"].pk, status="pending", rows_total=None).exists()
    assert b_objects["draft"].file.storage.exists(b_objects["draft"].file.name)


@pytest.mark.django_db
def test_the_same_objects_open_for_a_member_of_b(client, login, owner_b, b_objects):
    """The control: the 404s above come from the scope, not from broken URLs."""
    login(owner_b)

    for _name, method, url, _data in ISOLATION_CASES:
        if method == "get":
            response = client.get(url.format(**{key: obj.pk for key, obj in b_objects.items()}))
            assert response.status_code in (200, 302), url
