"""`seed_demo`'s loyalty part: programs, purchases through the real path, every tier, books that
balance, and a history written at its own times."""

import importlib
import random
import uuid
from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db.models import Min
from django.utils import timezone

from accounts.demo import BUSINESSES, CUSTOMER_COUNT
from accounts.models import Business, User
from analytics import export, schema
from analytics.models import ExportState
from analytics.warehouse import get_warehouse
from integrations.models import CRMIntegration
from loyalty.demo import (
    EXPIRY_TIME,
    EXTERNAL_ID_PREFIX,
    HISTORY_DAYS,
    PROGRAMS,
    PURCHASE_COUNT,
    SEED,
    TIER_PURCHASE_SHARE,
    _plan,
    clock_at,
)
from loyalty.models import (
    BonusAccount,
    BonusLot,
    LedgerEntry,
    LoyaltyProgram,
    ProgramChange,
    Refund,
    StatusTier,
    Transaction,
)
from loyalty.selectors import ledger_mismatches

SMALL = {"customers": 30, "purchases": 250}


def snapshot():
    return {
        "purchases": sorted(Transaction.objects.values_list("business_id", "external_id", "paid_amount", "status")),
        "refunds": Refund.objects.count(),
        "entries": LedgerEntry.objects.count(),
        "lots": sorted(BonusLot.objects.values_list("id", "remaining")),
        "accounts": sorted(BonusAccount.objects.values_list("user_id", "balance", "tier_id", "spend_365")),
        "program_changes": ProgramChange.objects.count(),
    }


@pytest.mark.django_db
def test_seed_demo_gives_programs_purchases_every_tier_and_balanced_books(settings, tiers, capsys):
    settings.DEBUG = True

    call_command("seed_demo", **SMALL)

    purchases = Transaction.objects.all()
    assert purchases.count() >= SMALL["purchases"]
    # The loyalty demo's own purchases, those the demo CRM integrations synced (prefixed by
    # provider), and those of the cross-promo demo (issuing and redeeming coupons).
    crm = "|".join(CRMIntegration.Provider.values)
    assert (
        not purchases.exclude(external_id__startswith=EXTERNAL_ID_PREFIX)
        .exclude(external_id__regex=rf"^({crm}):")
        .exclude(external_id__startswith="crosspromo-demo-")
        .exists()
    )
    # Every demo business has its own terms, set through the service, so with a history.
    programs = LoyaltyProgram.objects.select_related("business")
    assert programs.count() == Business.objects.count() == len(BUSINESSES)
    assert len({(p.accrual_rate, p.max_redeem_share, p.bonus_lifetime_days, p.hold_days) for p in programs}) == len(
        BUSINESSES
    )
    assert all(program.changes.exists() for program in programs)
    assert programs.filter(birthday_bonus__gt=0).exists() and programs.filter(hold_days__gt=0).exists()
    assert set(purchases.values_list("business_id", flat=True)) == {p.business_id for p in programs}

    # Customers in every tier.
    for tier in StatusTier.objects.all():
        assert BonusAccount.objects.filter(tier=tier).exists(), f"no customer in {tier.name}"

    # What the demo is for: redemptions, refunds full and partial, adjustments, expiries.
    assert purchases.filter(bonuses_redeemed__gt=0).exists()
    assert purchases.filter(status=Transaction.Status.REFUNDED).exists()
    assert purchases.filter(status=Transaction.Status.PARTIALLY_REFUNDED).exists()
    assert Refund.objects.exclude(refund_id="full").exists()
    for kind in ["accrual", "redemption", "expiry", "adjustment", "refund_reversal", "welcome"]:
        assert LedgerEntry.objects.filter(kind=kind).exists(), kind

    # The books balance, summed exactly in Python (SQLite sums decimals as floats).
    accounts = list(BonusAccount.objects.all())
    assert accounts
    for account in accounts:
        by_entries = sum(LedgerEntry.objects.filter(account=account).values_list("amount", flat=True), Decimal(0))
        by_lots = sum(BonusLot.objects.filter(account=account).values_list("remaining", flat=True), Decimal(0))
        assert account.balance == by_entries == by_lots, account.user_id
        assert account.balance >= 0
    assert ledger_mismatches() == []

    out = capsys.readouterr().out
    assert (
        f"{purchases.filter(external_id__startswith=EXTERNAL_ID_PREFIX).count()} purchases" in out
        and "bonuses in circulation" in out
    )
    assert all(tier.name in out for tier in StatusTier.objects.all())

    # A second run adds and changes nothing.
    before = snapshot()
    call_command("seed_demo", **SMALL)
    assert snapshot() == before
    assert "already seeded" in capsys.readouterr().out


def test_at_the_default_sizes_most_customers_buy_and_regulars_have_purchases_to_refund():
    """The big spenders planned into the tiers take at most about TIER_PURCHASE_SHARE of the
    purchases, so the regulars (the purchases refunded and corrected) have the rest."""
    seeded = importlib.import_module("loyalty.migrations.0002_seed_tiers_and_guard_ledger").TIERS
    tiers = [StatusTier(name=name, threshold=threshold) for name, threshold, *_terms in seeded]
    businesses = [Business(slug=slug, name=name, category=category) for slug, name, category, *_rest in BUSINESSES]
    customers = [User(id=uuid.UUID(int=number), phone=f"+7900{number:07d}") for number in range(CUSTOMER_COUNT)]

    plan = _plan(
        random.Random(SEED),
        customers=customers,
        businesses=businesses,
        purchases=PURCHASE_COUNT,
        days=HISTORY_DAYS,
        tiers=tiers,
    )

    assert len(plan) == PURCHASE_COUNT
    assert sum(item.refundable for item in plan) >= PURCHASE_COUNT * (1 - TIER_PURCHASE_SHARE) * 0.9
    assert len({item.customer.pk for item in plan}) > CUSTOMER_COUNT / 2
    spend = Counter()
    for item in plan:
        spend[item.customer.pk] += item.amount
    in_tier = Counter(max(t.threshold for t in tiers if t.threshold <= total) for total in spend.values())
    counts = [in_tier[tier.threshold] for tier in tiers]
    assert counts == sorted(counts, reverse=True) and counts[-1] > 0  # a pyramid, every tier filled


@pytest.mark.django_db
def test_seed_demo_without_enough_customers_for_every_tier_says_so(settings, tiers):
    settings.DEBUG = True

    with pytest.raises(CommandError, match="at least"):
        call_command("seed_demo", customers=3, purchases=20)
    assert not Transaction.objects.exists()


@pytest.mark.django_db
def test_seed_demo_writes_each_part_of_its_history_at_its_own_time(settings, tiers):
    """What the charts of bonuses per day read: each purchase's ledger entries and lot carry
    the purchase's time, not the time of seeding, so the year shows as a year."""
    settings.DEBUG = True
    started = timezone.now()

    call_command("seed_demo", **SMALL)

    demo = Transaction.objects.filter(external_id__startswith=EXTERNAL_ID_PREFIX).select_related("business")
    by_purchase = (
        LedgerEntry.objects.filter(transaction__in=demo, refund__isnull=True)
        .exclude(kind="expiry")
        .select_related("transaction__business", "lot")
    )
    accruals = [entry for entry in by_purchase if entry.kind == "accrual"]
    assert accruals and {entry.kind for entry in by_purchase} == {"accrual", "welcome", "redemption"}
    for entry in by_purchase:
        purchase = entry.transaction
        assert entry.created_at == purchase.occurred_at == purchase.recorded_at, purchase.external_id
    for entry in accruals:
        purchase, lot = entry.transaction, entry.lot
        lifetime = timedelta(days=PROGRAMS[purchase.business.slug]["bonus_lifetime_days"])
        assert lot.created_at == purchase.occurred_at
        assert lot.expires_at == purchase.occurred_at + lifetime
        assert purchase.occurred_at <= lot.spendable_from < lot.expires_at

    # Spread over the year: a day with bonuses for every day with purchases, months apart.
    accrual_days = sorted({timezone.localdate(entry.created_at) for entry in accruals})
    purchase_days = {timezone.localdate(purchase.occurred_at) for purchase in demo.filter(bonuses_accrued__gt=0)}
    assert accrual_days == sorted(purchase_days)
    assert len(accrual_days) > 100
    assert accrual_days[-1] - accrual_days[0] > timedelta(days=270)

    # The nightly task expired each lot the night after its end, not everything at seeding.
    expiries = list(LedgerEntry.objects.filter(kind="expiry").select_related("lot"))
    assert len({timezone.localdate(entry.created_at) for entry in expiries}) > 5
    for entry in expiries:
        assert entry.lot.expires_at <= entry.created_at < entry.lot.expires_at + timedelta(days=1)
        assert timezone.localtime(entry.created_at).time() == EXPIRY_TIME or entry.created_at >= started

    # Refunds and corrections came after their purchases, before today; the terms changed
    # once at the start of the history and again within it.
    for refund in Refund.objects.filter(transaction__in=demo).select_related("transaction"):
        assert refund.transaction.occurred_at < refund.created_at < started
        assert set(refund.ledger_entries.values_list("created_at", flat=True)) <= {refund.created_at}
    corrections = LedgerEntry.objects.filter(idempotency_key__startswith="demo-adjust-")
    assert corrections.exists() and not corrections.filter(created_at__gte=started).exists()
    first_purchase = min(purchase.occurred_at for purchase in demo)
    changes = sorted(ProgramChange.objects.values_list("changed_at", flat=True))
    assert changes[0] <= first_purchase < changes[-1] < started
    assert not LedgerEntry.objects.filter(created_at__gt=timezone.now()).exists()

    # Customers joined over the year, each before their first purchase, not all on seeding day.
    first_bought = dict(
        Transaction.objects.values("customer_id").annotate(first=Min("occurred_at")).values_list("customer_id", "first")
    )
    joined = dict(User.objects.filter(pk__in=first_bought).values_list("pk", "date_joined"))
    assert all(joined[pk] <= first for pk, first in first_bought.items() if pk in joined)
    assert min(joined.values()) >= changes[0]
    assert max(joined.values()) - min(joined.values()) > timedelta(days=180)


@pytest.mark.django_db
def test_seed_demo_exports_its_history_even_behind_an_earlier_watermark(settings, tiers):
    """The history is written at past times; an export before seeding (a dashboard opened
    first) must not leave it out of the warehouse."""
    settings.DEBUG = True
    schema.migrate(get_warehouse())
    export.aggregate_transactions_to_clickhouse()
    assert ExportState.objects.filter(name="purchases", watermark__isnull=False).exists()

    call_command("seed_demo", **SMALL)

    businesses = [str(pk) for pk in Business.objects.values_list("pk", flat=True)]
    ((exported, days),) = get_warehouse().execute(
        "SELECT count(), uniqExact(toDate(occurred_at)) FROM purchases FINAL WHERE business_id IN %(ids)s",
        {"ids": businesses},
    )
    purchases = Transaction.objects.all()
    assert exported == purchases.count()
    assert days == len({purchase.occurred_at.date() for purchase in purchases})


def test_demo_clock_moves_now_for_every_caller_and_back():
    moment = timezone.now() - timedelta(days=100)

    with clock_at(moment):
        assert timezone.now() == moment
        assert timezone.localdate() == timezone.localtime(moment).date()
    assert timezone.now() - moment > timedelta(days=99)

    with pytest.raises(ValueError, match="aware"), clock_at(moment.replace(tzinfo=None)):
        pass
