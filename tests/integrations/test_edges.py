"""Edges of the CRM Sync service found on review: a provider without webhooks, bodies
PostgreSQL cannot store, syncs failing in our own code, the sync lock, a connection that
works again, and CSV uploads nobody confirmed."""

import io
from datetime import timedelta

import pytest
import time_machine
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.utils import timezone

from integrations import imports, services
from integrations.models import CRMIntegration, ImportJob, WebhookDelivery
from tests.factories import CRMIntegrationFactory
from tests.integrations.support import as_body, onec_sale, recent

pytestmark = pytest.mark.django_db

CSV = "external_id,phone,amount,occurred_at\nA-1,+79161234567,100,{when}\nA-2,+79161234568,200,{when}\n"


def test_a_provider_that_sends_no_webhooks_has_no_webhook_door(shop, client):
    renovatio = CRMIntegrationFactory(business=shop, provider="renovatio", credentials={"api_key": "k" * 20})
    response = client.post(renovatio.webhook_path(), b"{}", content_type="application/json")
    assert response.status_code == 404
    assert not WebhookDelivery.objects.exists()


def test_a_nul_byte_is_stored_replaced_and_the_body_answered_400(onec, send_webhook):
    response = send_webhook(onec, b'{"event": "sale.closed"\x00}')
    assert response.status_code == 400
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.body) == ("rejected", '{"event": "sale.closed"\ufffd}')


def test_a_sync_failing_in_our_own_code_counts_towards_health(yclients, monkeypatch):
    def broken(self, since, until):
        raise KeyError("a field no provider foresaw")
        yield  # a generator, as fetch_changes is

    monkeypatch.setattr("integrations.providers.yclients.YclientsProvider.fetch_changes", broken)
    with pytest.raises(KeyError):
        services.sync_integration(yclients)
    yclients.refresh_from_db()
    assert (yclients.consecutive_failures, yclients.last_error) == (1, "internal error: KeyError")
    assert yclients.watermark is None


def test_a_sync_that_outlived_its_lock_leaves_the_next_ones_lock_alone(yclients, monkeypatch):
    lock = f"crm-sync:{yclients.pk}"

    def slow(self, since, until):
        # Meanwhile the lock expired and another sync took it.
        cache.set(lock, "the-next-sync", timeout=60)
        return iter(())

    monkeypatch.setattr("integrations.providers.yclients.YclientsProvider.fetch_changes", slow)
    services.sync_integration(yclients)
    assert cache.get(lock) == "the-next-sync"
    with pytest.raises(services.SyncBusy):
        services.sync_integration(yclients)


def test_a_connection_that_works_again_clears_the_old_error(onec):
    CRMIntegration.objects.filter(pk=onec.pk).update(last_error="1C: refused", last_error_at=timezone.now())
    onec.refresh_from_db()
    assert services.check_connection(onec)[0] is True
    onec.refresh_from_db()
    assert (onec.last_error, onec.last_error_at) == ("", None)


def test_preview_and_header_of_a_short_file_leave_it_open_at_its_start(shop):
    binary = io.BytesIO(CSV.format(when=recent().strftime("%Y-%m-%d %H:%M")).encode())
    assert imports.read_header(binary) == ["external_id", "phone", "amount", "occurred_at"]
    shown = imports.preview(binary, business=shop)
    assert [(row["line"], row["error"]) for row in shown["rows"]] == [(2, ""), (3, "")]
    assert not binary.closed and binary.tell() == 0
    assert binary.read(11) == b"external_id"


def test_an_imported_file_is_deleted_and_unconfirmed_uploads_go_after_a_day(shop, settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    content = CSV.format(when=recent().strftime("%Y-%m-%d %H:%M")).encode()
    done = ImportJob.objects.create(business=shop, original_name="a.csv", file=ContentFile(content, "a.csv"))
    path = done.file.path
    imports.run_import_job(done.pk)
    done.refresh_from_db()
    assert (done.status, done.imported, done.file.name) == ("done", 2, "")
    assert not (tmp_path / path).exists()

    with time_machine.travel(timezone.now() - timedelta(days=2)):
        old = ImportJob.objects.create(business=shop, original_name="b.csv", file=ContentFile(content, "b.csv"))
    fresh = ImportJob.objects.create(business=shop, original_name="c.csv", file=ContentFile(content, "c.csv"))
    old_path = old.file.path
    assert imports.delete_abandoned_uploads() == 1
    assert set(ImportJob.objects.values_list("original_name", flat=True)) == {"a.csv", "c.csv"}
    assert not (tmp_path / old_path).exists()
    assert fresh.file.storage.exists(fresh.file.name)


def test_the_catalogue_process_webhook_applies_a_payload_now(onec):
    sale = onec_sale(date=recent().isoformat())
    txn = services.process_webhook(onec.business_id, sale)
    assert txn is not None and txn.external_id == f"onec:{'sale:' + sale['document_id']}"
    assert services.process_webhook(onec.business_id, as_body(sale)).pk == txn.pk  # bytes too, once
