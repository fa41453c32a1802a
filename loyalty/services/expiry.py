"""Expiry of lots, and the reminders before it."""

import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import DecimalField, F, OuterRef, Subquery, Sum, Value
from django.db.models.functions import Coalesce, Round
from django.utils import timezone

from loyalty.models import (
    BonusAccount,
    BonusLot,
    LedgerEntry,
)
from loyalty.money import ZERO
from svoykrug import answers

MONEY_FIELD = DecimalField(max_digits=12, decimal_places=2)


def check_bonus_expiration(now: datetime | None = None) -> list[uuid.UUID]:
    """Expire what remains of every lot past its date, in a few set-based statements per
    batch of locked accounts: one INSERT of expiry entries, one UPDATE of balances, one
    UPDATE of lots. Returns the ids of the customers affected; a second run finds nothing."""
    now = now or timezone.now()
    affected: list[uuid.UUID] = []
    last_id = 0
    entry_table = LedgerEntry._meta.db_table
    lot_table = BonusLot._meta.db_table
    while True:
        with transaction.atomic():
            account_ids = list(
                BonusLot.objects.filter(remaining__gt=0, expires_at__lte=now, account_id__gt=last_id)
                .order_by("account_id")
                .values_list("account_id", flat=True)
                .distinct()[: settings.LOYALTY_BATCH_ACCOUNTS]
            )
            if not account_ids:
                return affected
            # Lock in primary-key order, the order every other writer uses (one account each).
            locked = list(
                BonusAccount.objects.select_for_update()
                .filter(pk__in=account_ids)
                .order_by("pk")
                .values_list("pk", "user_id")
            )
            ids = [pk for pk, _user in locked]
            answers.customers_changed("loyalty", [user_id for _pk, user_id in locked])
            id_list = ",".join(str(int(pk)) for pk in ids)
            at = connection.ops.adapt_datetimefield_value(now)
            with connection.cursor() as cursor:
                cursor.execute(
                    f"""
                    INSERT INTO {entry_table}
                        (account_id, kind, amount, business_id, transaction_id, refund_id, lot_id,
                         idempotency_key, created_by_id, reason, created_at)
                    SELECT account_id, 'expiry', -remaining, business_id, NULL, NULL, id,
                           'expiry:' || CAST(id AS VARCHAR(20)), NULL, '', %s
                    FROM {lot_table}
                    WHERE account_id IN ({id_list}) AND remaining > 0 AND expires_at <= %s
                    RETURNING account_id
                    """,  # noqa: S608 - ids are integers from the database, never user input
                    [at, at],
                )
                # A parallel run may have expired these lots while this one waited for the locks.
                expired_accounts = {row[0] for row in cursor.fetchall()}
            expired = (
                BonusLot.objects.filter(account_id=OuterRef("pk"), remaining__gt=0, expires_at__lte=now)
                .values("account_id")
                .annotate(total=Sum("remaining"))
                .values("total")
            )
            # Rounded in SQL because SQLite does decimal arithmetic in floats.
            BonusAccount.objects.filter(pk__in=ids).update(
                balance=Round(
                    F("balance") - Coalesce(Subquery(expired, output_field=MONEY_FIELD), Value(ZERO)),
                    2,
                    output_field=MONEY_FIELD,
                )
            )
            BonusLot.objects.filter(account_id__in=ids, remaining__gt=0, expires_at__lte=now).update(remaining=ZERO)
            affected.extend(user_id for pk, user_id in locked if pk in expired_accounts)
            last_id = ids[-1]


def remind_expiring_bonuses(days: int, at: datetime | None = None) -> int:
    """Tell each customer, in one message, which of their bonuses expire `days` days from
    now (the lots expiring during that day, with amounts and dates). Safe to run twice a
    day: the message's key is the customer, the day and the horizon. Returns customers told."""
    from notifications.services import notify_after_commit

    at = at or timezone.now()
    day = timezone.localdate(at) + timedelta(days=days)
    start = timezone.make_aware(datetime.combine(day, datetime.min.time()))
    lots = (
        BonusLot.objects.filter(remaining__gt=0, expires_at__gte=start, expires_at__lt=start + timedelta(days=1))
        .select_related("account")
        .order_by("account_id", "expires_at")
    )
    batches: dict = {}
    for lot in lots:
        batches.setdefault(lot.account.user_id, []).append(
            {"amount": str(lot.remaining), "date": timezone.localtime(lot.expires_at).strftime("%d.%m.%Y")}
        )
    for user_id, items in batches.items():
        notify_after_commit(
            user_id=user_id,
            messages=[("bonus_expiring", {"days": days, "batches": items})],
            event_key=f"expiring:{day.isoformat()}:{days}",
        )
    return len(batches)
