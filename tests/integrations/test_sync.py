"""Polling a CRM (`services.sync_integration`) against the YCLIENTS fake: the window it asks
for, the watermark it moves, the health it keeps, the owners it tells when it keeps failing."""

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from accounts.models import Membership
from integrations import services, tasks
from integrations.models import CRMIntegration, CrmRecord
from integrations.providers.base import ProviderAuthError, ProviderUnavailable
from loyalty.models import Transaction
from notifications.models import NotificationLog
from tests.factories import CRMIntegrationFactory, MembershipFactory, UserFactory
from tests.integrations.support import MOSCOW, PHONE, D, balance_of, recent, yclients_record

pytestmark = pytest.mark.django_db


def local(moment) -> str:
    """A time as YCLIENTS' filters take it: the company's local time, no offset."""
    return moment.astimezone(MOSCOW).strftime("%Y-%m-%dT%H:%M:%S")


def records_requests(fake):
    return [r for r in fake.requests if r.path == "/records/4564"]


@pytest.fixture
def visits(yclients_api):
    """55 paid visits of yesterday (two pages of 50), and one unpaid visit without a client."""
    when = recent(days=1)
    yclients_api.records = [yclients_record(700000000 + n, at=when, cost=100 + n) for n in range(55)]
    yclients_api.records.append(yclients_record(800000000, at=when, phone=None, paid_full=0, attendance=0))
    return yclients_api.records


def test_a_first_sync_reads_every_page_back_to_the_first_sync_days(settings, yclients, yclients_api, visits):
    settings.INTEGRATIONS_FIRST_SYNC_DAYS = 7
    CRMIntegration.objects.filter(pk=yclients.pk).update(consecutive_failures=2, health="degraded")
    yclients.refresh_from_db()
    started = timezone.now()

    outcome = services.sync_integration(yclients)

    assert outcome.counts == {"recorded": 55, "skipped": 1}
    assert Transaction.objects.filter(source="sync").count() == 55
    assert sorted(Transaction.objects.values_list("gross_amount", flat=True))[:2] == [D(100), D(101)]
    assert balance_of(PHONE) == sum(D(100 + n) for n in range(55)) * D("0.05")
    yclients.refresh_from_db()
    assert started <= yclients.watermark <= yclients.last_sync_at
    assert yclients.last_success_at == yclients.last_sync_at
    assert (yclients.health, yclients.consecutive_failures) == ("ok", 0)
    requests = records_requests(yclients_api)
    assert [r.query["page"] for r in requests] == ["1", "2"]
    assert {r.query["changed_after"] for r in requests} == {local(yclients.watermark - timedelta(days=7))}
    assert {r.query["changed_before"] for r in requests} == {local(yclients.watermark)}
    assert {(r.query["count"], r.query["with_deleted"]) for r in requests} == {("50", "1")}


def test_a_later_sync_overlaps_the_last_one_and_records_nothing_twice(settings, yclients, yclients_api, visits):
    settings.INTEGRATIONS_SYNC_OVERLAP_MINUTES = 45
    services.sync_integration(yclients)
    yclients.refresh_from_db()
    first_watermark = yclients.watermark
    yclients_api.requests.clear()

    outcome = services.sync_integration(yclients)

    assert outcome.counts == {"duplicate": 55, "skipped": 1}
    assert Transaction.objects.count() == 55
    assert set(CrmRecord.objects.values_list("times_seen", flat=True)) == {2}
    (request, _second_page) = records_requests(yclients_api)
    assert request.query["changed_after"] == local(first_watermark - timedelta(minutes=45))
    yclients.refresh_from_db()
    assert yclients.watermark > first_watermark


def test_an_explicit_since_is_the_window(yclients, yclients_api, visits):
    since = timezone.now() - timedelta(days=3, hours=2)

    services.sync_integration(yclients, since=since)

    assert records_requests(yclients_api)[0].query["changed_after"] == local(since)


def test_a_provider_failure_counts_and_keeps_the_watermark(yclients, yclients_api, visits):
    watermark = timezone.now() - timedelta(hours=1)
    CRMIntegration.objects.filter(pk=yclients.pk).update(watermark=watermark, last_success_at=watermark)
    yclients.refresh_from_db()
    yclients_api.fail_with = 500

    with pytest.raises(ProviderUnavailable) as caught:
        services.sync_integration(yclients)

    assert caught.value.message.startswith("YCLIENTS: server error 500 from 127.0.0.1:")
    stored = CRMIntegration.objects.get(pk=yclients.pk)
    assert (stored.consecutive_failures, stored.health, stored.last_error) == (1, "ok", caught.value.message)
    assert stored.last_error_at is not None and stored.last_sync_at == stored.last_error_at
    assert (stored.watermark, stored.last_success_at) == (watermark, watermark)
    assert yclients.consecutive_failures == 1  # the caller's object too
    assert Transaction.objects.count() == 0
    assert cache.get(f"crm-sync:{yclients.pk}") is None  # the lock is released


def test_failures_degrade_then_fail_and_tell_the_owners_once(
    settings, shop, owner, yclients, yclients_api, sms, django_capture_on_commit_callbacks
):
    settings.INTEGRATIONS_HTTP_RETRIES = 0  # one request a sync: the thresholds are what is tested
    manager = MembershipFactory(business=shop, user=UserFactory(phone="+79990000002"), role=Membership.Role.MANAGER)
    yclients_api.fail_with = 500
    health = []

    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(settings.INTEGRATIONS_FAILING_AFTER + 1):
            with pytest.raises(ProviderUnavailable):
                services.sync_integration(yclients)
            yclients.refresh_from_db()
            health.append((yclients.consecutive_failures, yclients.health))

    assert health == [
        (1, "ok"),
        (2, "ok"),
        (3, "degraded"),
        (4, "degraded"),
        (5, "degraded"),
        (6, "degraded"),
        (7, "degraded"),
        (8, "degraded"),
        (9, "degraded"),
        (10, "failing"),
        (11, "failing"),
    ]
    told = NotificationLog.objects.filter(kind="integration_failing")
    assert list(told.values_list("user", "channel", "recipient")) == [(owner.pk, "sms", owner.phone)]
    assert not told.filter(user=manager.user).exists()
    assert [phone for phone, _text in sms.sent] == [owner.phone]
    assert shop.name in sms.sent[0][1]

    yclients_api.fail_with = None
    services.sync_integration(yclients)

    yclients.refresh_from_db()
    assert (yclients.health, yclients.consecutive_failures) == ("ok", 0)


def test_the_thresholds_come_from_the_settings(settings, owner, yclients, yclients_api, sms):
    settings.INTEGRATIONS_HTTP_RETRIES = 0
    settings.INTEGRATIONS_DEGRADED_AFTER, settings.INTEGRATIONS_FAILING_AFTER = 1, 2
    yclients_api.fail_with = 503

    seen = []
    for _ in range(2):
        with pytest.raises(ProviderUnavailable):
            services.sync_integration(yclients)
        seen.append(CRMIntegration.objects.get(pk=yclients.pk).health)

    assert seen == ["degraded", "failing"]


def test_a_sync_while_another_runs_is_busy(yclients, yclients_api, visits):
    lock = f"crm-sync:{yclients.pk}"
    cache.add(lock, 1)

    with pytest.raises(services.SyncBusy):
        services.sync_integration(yclients)

    assert yclients_api.requests == []
    assert cache.get(lock) == 1  # the other sync's lock is left alone
    assert CRMIntegration.objects.get(pk=yclients.pk).consecutive_failures == 0

    cache.delete(lock)
    assert services.sync_integration(yclients).counts["recorded"] == 55
    assert cache.get(lock) is None


def test_sync_transactions_syncs_every_integration_and_survives_a_failing_one(shop, yclients, yclients_api, iiko_api):
    yclients_api.records = [yclients_record(900 + n, at=recent(days=2)) for n in range(3)]
    iiko = CRMIntegrationFactory(business=shop, provider="iiko", credentials={"api_login": "api-login-123"})
    iiko_api.fail_with = 500
    CRMIntegrationFactory(business=shop, provider="amocrm", is_active=False)

    recorded = services.sync_transactions(shop.pk)

    assert recorded == 3
    assert Transaction.objects.filter(business=shop, source="sync").count() == 3
    iiko.refresh_from_db()
    assert (iiko.consecutive_failures, iiko.last_success_at) == (1, None)
    assert iiko.last_error.startswith("iiko Cloud: server error 500")
    yclients.refresh_from_db()
    assert (yclients.consecutive_failures, yclients.health) == (0, "ok")

    assert services.sync_transactions(shop.pk) == 0  # all there already


def test_due_integrations_are_the_active_ones_whose_interval_is_up(settings):
    settings.INTEGRATIONS_SYNC_INTERVAL_MINUTES = 15
    now = timezone.now()
    never = CRMIntegrationFactory(last_sync_at=None)
    long_ago = CRMIntegrationFactory(last_sync_at=now - timedelta(minutes=16))
    CRMIntegrationFactory(last_sync_at=now - timedelta(minutes=5))
    CRMIntegrationFactory(last_sync_at=None, is_active=False)
    CRMIntegrationFactory(last_sync_at=now - timedelta(days=1), is_active=False)

    assert sorted(services.due_integrations(now), key=str) == sorted([never.pk, long_ago.pk], key=str)
    assert services.due_integrations(now - timedelta(minutes=30)) == [never.pk]


def test_the_beat_task_queues_a_sync_of_each_due_integration(monkeypatch):
    due = [CRMIntegrationFactory(last_sync_at=None), CRMIntegrationFactory(provider="iiko", last_sync_at=None)]
    CRMIntegrationFactory(last_sync_at=timezone.now())
    queued = []
    monkeypatch.setattr(tasks.sync_integration, "delay", queued.append)

    assert tasks.sync_due_integrations() == 2

    assert sorted(queued) == sorted(str(integration.pk) for integration in due)


def test_crm_connection_is_checked_and_a_refusal_stored(yclients, yclients_api):
    assert services.test_crm_connection(yclients) is True
    assert services.check_connection(yclients) == (True, "YCLIENTS company 4564, 2 records")
    assert CRMIntegration.objects.get(pk=yclients.pk).last_error == ""

    yclients_api.user_token = "another-user-token"

    assert services.test_crm_connection(yclients) is False
    stored = CRMIntegration.objects.get(pk=yclients.pk)
    assert stored.last_error == "YCLIENTS did not accept the tokens: Authentication needed."
    assert stored.last_error_at is not None
    assert yclients.last_error == stored.last_error
    assert services.check_connection(yclients) == (False, stored.last_error)
    assert stored.consecutive_failures == 0  # a check is not a sync


def test_the_sync_task_reports_instead_of_raising(yclients, yclients_api, visits):
    assert tasks.sync_integration(str(yclients.pk))["counts"] == {"recorded": 55, "skipped": 1}

    yclients_api.fail_with = 500
    assert tasks.sync_integration(str(yclients.pk))["failed"].startswith("YCLIENTS: server error 500")

    cache.add(f"crm-sync:{yclients.pk}", 1)
    assert tasks.sync_integration(str(yclients.pk)) == {"skipped": "busy"}

    CRMIntegration.objects.filter(pk=yclients.pk).update(is_active=False)
    assert tasks.sync_integration(str(yclients.pk)) == {"skipped": "inactive"}


def test_an_auth_failure_is_a_failure_too(yclients, yclients_api):
    yclients_api.user_token = "another-user-token"

    with pytest.raises(ProviderAuthError):
        services.sync_integration(yclients)

    stored = CRMIntegration.objects.get(pk=yclients.pk)
    assert (stored.consecutive_failures, stored.last_error) == (
        1,
        "YCLIENTS did not accept the tokens: Authentication needed.",
    )
    assert stored.watermark is None
