"""What every purchase reads and rarely changes is read through the cache (svoykrug.answers):
the partner's API key and business, its program's terms, the circle's tiers. Each test shows
the value served without the database, then that a change is seen by the very next purchase."""

from datetime import timedelta

import pytest
import time_machine
from django.core.management.sql import emit_post_migrate_signal
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import ApiKey, User
from loyalty import services
from loyalty.models import LoyaltyProgram, StatusTier, Transaction
from tests.factories import ApiKeyFactory, BusinessFactory
from tests.loyalty.conftest import D

pytestmark = pytest.mark.django_db

PURCHASES = "/api/v1/partner/transactions/"


def buy(business, customer, external_id, amount="1000.00"):
    return services.record_transaction(business=business, customer=customer, external_id=external_id, amount=D(amount))


def tables_read(queries) -> set[str]:
    """The tables these queries read from (not those they join: the account's lock joins its tier)."""
    tables = ("loyalty_loyaltyprogram", "loyalty_statustier")
    return {table for query in queries for table in tables if f'FROM "{table}"' in query["sql"]}


def test_a_purchase_reads_the_program_and_the_tiers_from_the_cache(cafe, customer):
    buy(cafe, customer, "p1")

    with CaptureQueriesContext(connection) as queries:
        buy(cafe, customer, "p2")

    assert tables_read(queries.captured_queries) == set()


def test_a_program_change_is_seen_by_the_next_purchase(cafe, customer):
    assert buy(cafe, customer, "p1").transaction.bonuses_accrued == D("50.00")  # 5 %, now cached

    services.update_program(business=cafe, changed_by=None, accrual_rate=D("7.5"))
    assert buy(cafe, customer, "p2").transaction.bonuses_accrued == D("75.00")

    # A staff edit in the admin is a save of the row: seen too.
    program = LoyaltyProgram.objects.get(business=cafe)
    program.accrual_rate = D(10)
    program.save()
    assert buy(cafe, customer, "p3").transaction.bonuses_accrued == D("100.00")


def test_a_tier_edit_is_seen_by_the_next_purchase(cafe, customer, tiers):
    assert buy(cafe, customer, "p1").tier.name != "Silver"  # 1,000 spent: a lower tier, cached
    silver = tiers["Silver"]

    silver.threshold = D(1500)
    silver.save()

    assert buy(cafe, customer, "p2").tier.name == "Silver"


def test_a_migration_retires_what_was_cached(cafe, customer, tiers):
    """A migration changes rows without signals (the tiers are seeded by one)."""
    assert buy(cafe, customer, "p1").tier.name != "Silver"
    StatusTier.objects.filter(pk=tiers["Silver"].pk).update(threshold=D(1500))  # no signal

    emit_post_migrate_signal(verbosity=0, interactive=False, db="default")

    assert buy(cafe, customer, "p2").tier.name == "Silver"


@pytest.fixture
def pos(api_client, cafe):
    api_key, raw_key = ApiKeyFactory(business=cafe)
    api_client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw_key}")
    return api_client, api_key


def sell(client, external_id):
    return client.post(PURCHASES, {"external_id": external_id, "phone": "+79991112233", "amount": "100"}, format="json")


def test_the_key_is_checked_from_the_cache_and_its_use_written_once_a_minute(pos, locmem_cache):
    client, api_key = pos
    assert sell(client, "1").status_code == 201
    first_use = ApiKey.objects.get(pk=api_key.pk).last_used_at
    assert first_use is not None

    # Writing the time renewed the cached key: read once more, then from the cache.
    assert key_queries(client, "2") == ["SELECT"]
    assert key_queries(client, "3") == []

    with time_machine.travel(timezone.now() + timedelta(minutes=2)):
        assert key_queries(client, "4") == ["UPDATE"]  # a minute on: the time is written again
        assert key_queries(client, "5") == ["SELECT"]
        assert key_queries(client, "6") == []
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at > first_use + timedelta(minutes=1)


def key_queries(client, external_id) -> list[str]:
    """The statements a sale ran on the API keys' table."""
    with CaptureQueriesContext(connection) as queries:
        assert sell(client, external_id).status_code == 201
    return [query["sql"].split()[0] for query in queries.captured_queries if "accounts_apikey" in query["sql"]]


def test_a_deactivated_business_loses_its_cached_key_at_once(pos):
    client, api_key = pos
    assert sell(client, "1").status_code == 201

    business = api_key.business
    business.is_active = False
    business.save()

    assert sell(client, "2").status_code == 401
    assert Transaction.objects.filter(external_id="2").count() == 0


@pytest.fixture
def staff_client(client):
    client.force_login(User.objects.create_superuser(phone="+79990000001", password="correct horse battery"))
    return client


def test_a_key_revoked_in_the_admin_stops_at_once_though_it_was_cached(pos, staff_client):
    client, api_key = pos
    assert sell(client, "1").status_code == 201

    response = staff_client.post(
        "/admin/accounts/apikey/", {"action": "revoke", "_selected_action": [api_key.pk]}, follow=True
    )
    assert response.status_code == 200

    assert sell(client, "2").status_code == 401


def test_a_refused_purchase_leaves_no_account_for_a_new_phone(cafe):
    with pytest.raises(services.InvalidPurchase):
        services.record_transaction(
            business=cafe, external_id="p1", phone="+79995550011", amount=D(100), coupon="NO-SUCH-CODE"
        )

    assert not User.objects.filter(phone="+79995550011").exists()


def test_a_key_of_another_business_created_later_is_not_confused_with_a_cached_one(pos):
    client, _api_key = pos
    assert sell(client, "1").status_code == 201
    other = BusinessFactory(name="Салон")
    _other_key, other_raw = ApiKeyFactory(business=other)

    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {other_raw}")
    response = sell(client, "1")

    assert response.status_code == 201
    assert Transaction.objects.get(business=other).external_id == "1"


def test_a_key_read_while_it_is_being_revoked_is_not_kept_as_current(pos, monkeypatch):
    """Another process reads the key between the renewal and the revoking write: what it keeps
    must not be served after the write. The renewal comes after the write."""
    from accounts import services as accounts

    client, api_key = pos
    assert sell(client, "1").status_code == 201
    renew, raced = accounts.answers.changed, []

    def renew_then_read(*scopes):
        renew(*scopes)
        if not raced:  # another request reads the key right after the renewal
            raced.append(client.get("/api/v1/partner/customers/+79991112233/").status_code)

    monkeypatch.setattr(accounts.answers, "changed", renew_then_read)
    accounts.revoke_api_key(api_key=api_key)
    monkeypatch.setattr(accounts.answers, "changed", renew)

    assert raced
    assert sell(client, "2").status_code == 401
