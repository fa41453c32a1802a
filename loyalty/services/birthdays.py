"""Birthday bonuses."""

from datetime import date, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import User
from loyalty.models import (
    LedgerEntry,
    LoyaltyProgram,
)
from loyalty.services.ledger import _credit, _lock_account


def grant_birthday_bonuses(today: date | None = None) -> int:
    """Grant each active program's birthday bonus, once a year, to its customers (a purchase
    there within 365 days) whose birthday is today; 29 February counts on 28 February in
    other years. Returns how many bonuses were granted; a second run grants none."""
    today = today or timezone.localdate()
    now = timezone.now()
    days = [(today.month, today.day)]
    if (today.month, today.day) == (2, 28) and not _is_leap(today.year):
        days.append((2, 29))
    birthday = Q()
    for month, day in days:
        birthday |= Q(birth_date__month=month, birth_date__day=day)
    granted = 0
    programs = LoyaltyProgram.objects.filter(is_active=True, birthday_bonus__gt=0).select_related("business")
    for program in programs:
        customers = User.objects.filter(
            birthday,
            is_active=True,
            transactions__business=program.business,
            transactions__occurred_at__gt=now - timedelta(days=365),
        ).distinct()
        for customer in customers:
            key = f"birthday:{program.business_id}:{customer.pk}:{today.year}"
            with transaction.atomic():
                account = _lock_account(customer)
                if LedgerEntry.objects.filter(idempotency_key=key).exists():
                    continue
                _credit(
                    account=account,
                    amount=program.birthday_bonus,
                    kind=LedgerEntry.Kind.BIRTHDAY,
                    key=key,
                    issuer=program.business,
                    business=program.business,
                    spendable_from=now,
                    expires_at=now + timedelta(days=program.bonus_lifetime_days),
                    at=now,
                )
                account.lifetime_earned += program.birthday_bonus
                account.save(update_fields=["balance", "lifetime_earned", "updated_at"])
                granted += 1
    return granted


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
