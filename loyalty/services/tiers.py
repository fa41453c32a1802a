"""Status tiers from the spend of the last 365 days."""

import uuid
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import DecimalField, F, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import User
from loyalty.models import (
    BonusAccount,
    StatusTier,
    Transaction,
)
from loyalty.money import ZERO, as_money
from loyalty.services.ledger import _lock_account, _tier_for_spend
from svoykrug import answers

MONEY_FIELD = DecimalField(max_digits=12, decimal_places=2)


def spend_over_year(user: User | uuid.UUID, at: datetime | None = None) -> Decimal:
    """Money the customer paid at all partners over the last 365 days, net of refunds."""
    at = at or timezone.now()
    total = Transaction.objects.filter(customer=user, occurred_at__gt=at - timedelta(days=365)).aggregate(
        spend=Sum(F("paid_amount") - F("money_refunded"))
    )["spend"]
    return as_money(total)


def _refresh_tier(account: BonusAccount, at: datetime) -> None:
    account.spend_365 = spend_over_year(account.user_id, at)
    _set_tier(account, at)


def _set_tier(account: BonusAccount, at: datetime) -> None:
    tier = _tier_for_spend(account.spend_365)
    if tier != account.tier:
        account.tier = tier
        account.tier_updated_at = at


def update_status_tier(user: User) -> StatusTier | None:
    """Recompute the customer's tier from the spend of the last 365 days; a tier falls as
    well as rises. Returns the tier in force."""
    with transaction.atomic():
        account = _lock_account(user)
        _refresh_tier(account, timezone.now())
        account.save(update_fields=["spend_365", "tier", "tier_updated_at", "updated_at"])
    return account.tier


def recompute_all_tiers(at: datetime | None = None) -> int:
    """The nightly pass: every account's spend and tier from its purchases, in batches of
    LOYALTY_BATCH_ACCOUNTS locked accounts. Returns how many accounts changed tier."""
    at = at or timezone.now()
    tiers = list(StatusTier.objects.order_by("-threshold"))
    changed, last_id = 0, 0
    spend = (
        Transaction.objects.filter(customer=OuterRef("user_id"), occurred_at__gt=at - timedelta(days=365))
        .values("customer")
        .annotate(total=Sum(F("paid_amount") - F("money_refunded")))
        .values("total")
    )
    while True:
        with transaction.atomic():
            batch = list(
                BonusAccount.objects.select_for_update()
                .filter(pk__gt=last_id)
                .order_by("pk")
                .annotate(fresh_spend=Coalesce(Subquery(spend, output_field=MONEY_FIELD), Value(ZERO)))[
                    : settings.LOYALTY_BATCH_ACCOUNTS
                ]
            )
            if not batch:
                return changed
            updated = []
            for account in batch:
                tier = next((t for t in tiers if t.threshold <= account.fresh_spend), None)
                if account.spend_365 != account.fresh_spend or account.tier_id != (tier.pk if tier else None):
                    if account.tier_id != (tier.pk if tier else None):
                        changed += 1
                        account.tier_updated_at = at
                    account.spend_365 = account.fresh_spend
                    account.tier = tier
                    updated.append(account)
            BonusAccount.objects.bulk_update(updated, ["spend_365", "tier", "tier_updated_at"])
            answers.customers_changed("loyalty", [account.user_id for account in updated])
            last_id = batch[-1].pk
