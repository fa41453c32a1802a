"""`seed_demo`'s loyalty part: programs, purchases through the real path, every tier, books that balance."""

from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from accounts.demo import BUSINESSES
from accounts.models import Business
from integrations.models import CRMIntegration
from loyalty.demo import EXTERNAL_ID_PREFIX
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


@pytest.mark.django_db
def test_seed_demo_without_enough_customers_for_every_tier_says_so(settings, tiers):
    settings.DEBUG = True

    with pytest.raises(CommandError, match="at least"):
        call_command("seed_demo", customers=3, purchases=20)
    assert not Transaction.objects.exists()
