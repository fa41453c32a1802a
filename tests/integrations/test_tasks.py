"""The integrations' Celery tasks: a webhook retried while its CRM is down (and only then), old
bodies deleted after their retention, an uploaded import run once however often it is queued
(a run whose worker died: test_import_resume.py)."""

from datetime import timedelta

import pytest
import time_machine
from celery.exceptions import Retry
from django.core.files.base import ContentFile
from django.utils import timezone

from integrations import tasks
from integrations.models import CrmRecord, ImportJob, WebhookDelivery
from integrations.providers.base import ProviderAuthError, ProviderUnavailable
from loyalty.models import Transaction
from tests.factories import CRMIntegrationFactory
from tests.fakes.amocrm import load_text
from tests.integrations.support import AMO_LEAD, PHONE, D

pytestmark = pytest.mark.django_db

FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def lead_won(amocrm):
    """A stored amoCRM webhook (the lead won), waiting for its task."""
    body = load_text("webhook_lead_status.form.txt")
    return WebhookDelivery.objects.create(integration=amocrm, content_type=FORM, body=body)


def test_the_webhook_task_retries_a_crm_that_is_down_with_backoff():
    task = tasks.process_webhook_delivery

    assert task.autoretry_for == (ProviderUnavailable,)
    assert (task.max_retries, task.retry_backoff, task.retry_backoff_max) == (8, 30, 3600)


def test_a_crm_down_fails_the_delivery_and_asks_for_a_retry(fixture_time, amocrm_api, lead_won):
    amocrm_api.fail_status = 503

    with pytest.raises(Retry) as caught:
        tasks.process_webhook_delivery.delay(lead_won.pk)

    assert isinstance(caught.value.exc, ProviderUnavailable)
    assert caught.value.when <= 30 * 2  # the first backoff (jittered)
    lead_won.refresh_from_db()
    assert (lead_won.status, lead_won.attempts) == (WebhookDelivery.Status.FAILED, 1)
    assert lead_won.error.startswith("amoCRM: server error 503 from 127.0.0.1:")

    amocrm_api.fail_status = None
    assert tasks.process_webhook_delivery.delay(lead_won.pk).get() == "processed"

    lead_won.refresh_from_db()
    assert (lead_won.status, lead_won.error, lead_won.attempts) == ("processed", "", 2)
    assert Transaction.objects.get().external_id == f"amocrm:lead:{AMO_LEAD}"
    assert Transaction.objects.get().customer.phone == PHONE


def test_a_refused_crm_is_not_retried(fixture_time, amocrm_api, lead_won):
    amocrm_api.expire_access_tokens()
    amocrm_api.refuse_refresh = True

    result = tasks.process_webhook_delivery.apply(args=[lead_won.pk], throw=False)

    assert result.state == "FAILURE"
    assert isinstance(result.result, ProviderAuthError)
    lead_won.refresh_from_db()
    assert (lead_won.status, lead_won.attempts) == (WebhookDelivery.Status.FAILED, 1)
    assert lead_won.error.startswith("amoCRM refused the token")
    assert Transaction.objects.count() == 0


def test_a_reprocessed_delivery_changes_nothing_more(fixture_time, amocrm_api, lead_won):
    tasks.process_webhook_delivery.delay(lead_won.pk)
    tasks.process_webhook_delivery.delay(lead_won.pk)

    lead_won.refresh_from_db()
    assert (lead_won.status, lead_won.attempts, lead_won.result["counts"]) == ("processed", 2, {"duplicate": 1})
    assert Transaction.objects.count() == 1
    assert CrmRecord.objects.get().times_seen == 2


def test_old_webhooks_are_deleted_after_the_retention(settings):
    settings.INTEGRATIONS_WEBHOOK_RETENTION_DAYS = 30
    integration = CRMIntegrationFactory()
    now = timezone.now()

    def received(days_ago):
        with time_machine.travel(now - timedelta(days=days_ago), tick=False):
            return WebhookDelivery.objects.create(integration=integration, body=f"{days_ago} days old").pk

    old = [received(90), received(30.01)]
    kept = [received(29.99), received(1), received(0)]

    with time_machine.travel(now, tick=False):
        assert tasks.delete_old_webhooks() == 2

    assert sorted(WebhookDelivery.objects.values_list("pk", flat=True)) == sorted(kept)
    assert not WebhookDelivery.objects.filter(pk__in=old).exists()


def test_the_retention_is_a_setting(settings):
    integration = CRMIntegrationFactory()
    with time_machine.travel(timezone.now() - timedelta(days=8)):
        WebhookDelivery.objects.create(integration=integration)
    WebhookDelivery.objects.create(integration=integration)

    settings.INTEGRATIONS_WEBHOOK_RETENTION_DAYS = 10
    assert tasks.delete_old_webhooks() == 0
    settings.INTEGRATIONS_WEBHOOK_RETENTION_DAYS = 7
    assert tasks.delete_old_webhooks() == 1
    assert WebhookDelivery.objects.count() == 1


# --- Imports ---------------------------------------------------------------------------------------


@pytest.fixture
def upload(settings, tmp_path, shop):
    settings.MEDIA_ROOT = str(tmp_path)

    def make(text: str) -> ImportJob:
        return ImportJob.objects.create(
            business=shop, file=ContentFile(text.encode(), name="history.csv"), original_name="history.csv"
        )

    return make


def history(days: int = 3) -> str:
    when = (timezone.now() - timedelta(days=days)).date().isoformat()
    return f"id,phone,amount,date\nh-1,{PHONE},1000,{when}\nh-2,{PHONE},500,{when}\nh-3,bad,1,{when}\n"


def test_an_import_job_runs_once_however_often_it_is_queued(upload):
    job = upload(history())

    assert tasks.run_import(str(job.pk)) == "done"
    assert tasks.run_import(str(job.pk)) == "done"

    job.refresh_from_db()
    assert (job.status, job.rows_total, job.rows_done) == ("done", 3, 3)
    assert (job.imported, job.duplicates, job.rejected) == (2, 0, 1)
    assert job.errors == [{"line": 4, "reason": "the phone 'bad' is not a valid number"}]
    assert job.finished_at is not None
    assert sorted(Transaction.objects.values_list("external_id", "bonuses_accrued", "source")) == [
        ("h-1", D(50), "import"),
        ("h-2", D(25), "import"),
    ]


def test_a_job_already_running_is_not_started_again(upload):
    job = upload(history())
    ImportJob.objects.filter(pk=job.pk).update(status=ImportJob.Status.RUNNING, attempt=1, heartbeat_at=timezone.now())

    assert tasks.run_import(str(job.pk)) == "running"

    assert Transaction.objects.count() == 0
    job.refresh_from_db()
    assert (job.status, job.attempt) == ("running", 1)


def test_a_job_whose_file_cannot_be_imported_fails_with_the_reason(upload):
    job = upload("id,phone,date\nx,+79161234567,2026-01-01\n")

    assert tasks.run_import(str(job.pk)) == "failed"

    job.refresh_from_db()
    assert job.message == "No column for amount. Map one with column=field; the file has: id, phone, date."
    assert job.finished_at is not None
    assert Transaction.objects.count() == 0
