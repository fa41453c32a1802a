"""Manual corrections of a balance by staff and managers."""

import uuid
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.models import Business, User
from loyalty.models import (
    LedgerEntry,
)
from loyalty.money import round_down
from loyalty.services.errors import InvalidPurchase
from loyalty.services.ledger import _consume_lots, _credit, _lock_account, get_program


def adjust_balance(
    *,
    user: User,
    amount: Decimal,
    reason: str,
    created_by: User | None,
    business: Business | None = None,
    idempotency_key: str | None = None,
) -> list[LedgerEntry]:
    """A manual correction by staff or a partner's manager, with the reason kept. A positive
    amount adds a lot (issued by `business`, or by the platform); a negative one takes
    bonuses out soonest-expiring first and is refused if the balance does not cover it."""
    amount = Decimal(amount)
    reason = (reason or "").strip()
    if not reason:
        raise InvalidPurchase(_("An adjustment needs a reason."), fields={"reason": [_("Required.")]})
    if amount == 0 or amount != round_down(amount) or abs(amount) > settings.LOYALTY_MAX_CHECK_AMOUNT:
        raise InvalidPurchase(_("The adjustment must be a non-zero amount in roubles and kopecks."))
    key = idempotency_key or f"adjust:{uuid.uuid4()}"
    with transaction.atomic():
        account = _lock_account(user)
        existing = list(LedgerEntry.objects.filter(Q(idempotency_key=key) | Q(idempotency_key__startswith=f"{key}:")))
        if existing:
            return existing
        now = timezone.now()
        if amount > 0:
            lifetime = (
                get_program(business).bonus_lifetime_days if business else settings.LOYALTY_ADJUSTMENT_LIFETIME_DAYS
            )
            entries = [
                _credit(
                    account=account,
                    amount=amount,
                    kind=LedgerEntry.Kind.ADJUSTMENT,
                    key=key,
                    issuer=business,
                    business=business,
                    spendable_from=now,
                    expires_at=now + timedelta(days=lifetime),
                    at=now,
                    created_by=created_by,
                    reason=reason,
                )
            ]
        else:
            entries, _taken = _consume_lots(
                account=account,
                amount=-amount,
                kind=LedgerEntry.Kind.ADJUSTMENT,
                key=key,
                business=business,
                at=now,
                spendable_only=False,
                created_by=created_by,
                reason=reason,
            )
        account.save(update_fields=["balance", "updated_at"])
    return entries
