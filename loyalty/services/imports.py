"""Importing a partner's purchase history in batches: the same ledger as `record_transaction`
(a purchase, its accrual lot and entry, the account's balance, spend and tier), written
with a handful of statements per batch instead of a dozen per purchase.

History is not news: an import sends no messages and grants no welcome bonus (the
customer was the partner's customer before the circle; their first purchase through the
circle's own doors is still the first in the circle only if the import found none).
A purchase whose bonuses would already have expired earns none; it still counts towards
the tier if it is within 365 days."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.contrib.auth.hashers import make_password
from django.db import IntegrityError, connection, models, transaction
from django.utils import timezone

from accounts.models import Business, User
from loyalty.models import BonusAccount, BonusLot, LedgerEntry, StatusTier, Transaction
from loyalty.money import ZERO, percent_of
from loyalty.services.ledger import accrual_rate, get_program


@dataclass(frozen=True)
class ImportRow:
    """One purchase of the history, already checked: phone in E.164, amount positive with
    two places, time aware."""

    line: int
    external_id: str
    phone: str
    amount: Decimal
    occurred_at: datetime


@dataclass
class BatchResult:
    imported: int = 0
    duplicates: int = 0
    rejected: list = field(default_factory=list)  # (line, reason)


def import_purchases(
    *, business: Business, rows: list[ImportRow], source: str = Transaction.Source.IMPORT
) -> BatchResult:
    """Record a batch of history purchases once each: ids the business already has are
    counted as duplicates, so an import run again changes nothing. A parallel writer of
    the same id makes the batch start over, once."""
    try:
        return _import_batch(business, rows, source)
    except IntegrityError:
        return _import_batch(business, rows, source)


def _import_batch(business: Business, rows: list[ImportRow], source: str) -> BatchResult:
    result = BatchResult()
    seen: dict[str, int] = {}
    unique_rows = []
    for row in rows:
        if row.external_id in seen:
            result.duplicates += 1
            continue
        seen[row.external_id] = row.line
        unique_rows.append(row)
    existing = set(
        Transaction.objects.filter(business=business, external_id__in=list(seen)).values_list("external_id", flat=True)
    )
    result.duplicates += sum(1 for row in unique_rows if row.external_id in existing)
    todo = [row for row in unique_rows if row.external_id not in existing]
    if not todo:
        return result

    users = _customers({row.phone for row in todo})
    closed = {phone for phone, user in users.items() if not user.is_active}
    for row in todo:
        if row.phone in closed:
            result.rejected.append((row.line, "the customer's account is closed"))
    todo = [row for row in todo if row.phone not in closed]
    if not todo:
        return result

    now = timezone.now()
    program = get_program(business)
    tiers = list(StatusTier.objects.order_by("-threshold"))
    with transaction.atomic():
        accounts = _lock_accounts([users[row.phone].pk for row in todo], tiers)
        purchases, lots, touched = [], [], {}  # touched: account id → (account, tier id before)
        for row in sorted(todo, key=lambda r: (r.occurred_at, r.line)):
            account = accounts[users[row.phone].pk]
            touched.setdefault(account.pk, (account, account.tier_id))
            tier = account.tier
            expires_at = row.occurred_at + timedelta(days=program.bonus_lifetime_days)
            accrued = percent_of(row.amount, accrual_rate(program, tier)) if expires_at > now else ZERO
            purchase = Transaction(
                business=business,
                customer_id=account.user_id,
                external_id=row.external_id,
                source=source,
                gross_amount=row.amount,
                paid_amount=row.amount,
                bonuses_accrued=accrued,
                occurred_at=row.occurred_at,
                tier=tier,
            )
            purchases.append(purchase)
            if accrued > 0:
                spendable_from = min(
                    row.occurred_at + timedelta(days=program.hold_days), expires_at - timedelta(seconds=1)
                )
                lots.append(
                    BonusLot(
                        account=account,
                        business=business,
                        amount=accrued,
                        remaining=accrued,
                        spendable_from=spendable_from,
                        expires_at=expires_at,
                        transaction=purchase,
                        tier=tier,
                    )
                )
                account.lifetime_earned += accrued
                account.balance += accrued
            if account.first_purchase_at is None or row.occurred_at < account.first_purchase_at:
                account.first_purchase_at = row.occurred_at
            if row.occurred_at > now - timedelta(days=365):
                account.spend_365 += row.amount
                account.tier = _tier_for(account.spend_365, tiers)

        _insert(Transaction, purchases)
        entries = _settle_and_enter(lots, accounts, now)
        _insert(BonusLot, lots)
        for entry in entries:
            entry.lot_id = entry.lot.pk
        _insert(LedgerEntry, entries)
        for account, tier_before in touched.values():
            if account.tier_id != tier_before:
                account.tier_updated_at = now
            account.updated_at = now
        _save_accounts([account for account, _tier in touched.values()])
    result.imported = len(purchases)
    return result


def _insert(model, objects: list) -> None:
    """bulk_create, or on PostgreSQL a COPY: Django's INSERT compiler spends more time per
    row than the database does. Auto ids are drawn from the table's sequence first, so the
    objects have their ids afterwards as with bulk_create."""
    if not objects:
        return
    if connection.vendor != "postgresql":
        model.objects.bulk_create(objects)
        return
    meta = model._meta
    fields = list(meta.concrete_fields)
    with connection.cursor() as cursor:
        if isinstance(meta.pk, models.AutoField | models.BigAutoField) and objects[0].pk is None:
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
                [meta.db_table, meta.pk.column, len(objects)],
            )
            for obj, (pk,) in zip(objects, cursor.fetchall(), strict=True):
                obj.pk = pk
        stamped = [f for f in fields if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)]
        columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
        statement = f"COPY {connection.ops.quote_name(meta.db_table)} ({columns}) FROM STDIN"
        # The raw psycopg cursor: its errors are turned into Django's (IntegrityError) here.
        with connection.wrap_database_errors, cursor.cursor.copy(statement) as copy:
            for obj in objects:
                for field in stamped:
                    field.pre_save(obj, add=True)
                copy.write_row([getattr(obj, f.attname) for f in fields])
    for obj in objects:
        obj._state.adding = False


ACCOUNT_FIELDS = (
    "balance",
    "lifetime_earned",
    "clawback_due",
    "spend_365",
    "tier_id",
    "tier_updated_at",
    "first_purchase_at",
    "updated_at",
)
_PG_TYPES = ("numeric", "numeric", "numeric", "numeric", "bigint", "timestamptz", "timestamptz", "timestamptz")


def _save_accounts(accounts: list[BonusAccount]) -> None:
    """Write the batch's accounts back. On PostgreSQL one UPDATE ... FROM (VALUES ...): Django's
    bulk_update builds a CASE per field and row, which costs more than the rest of the import."""
    if connection.vendor != "postgresql":
        fields = [name.removesuffix("_id") for name in ACCOUNT_FIELDS]
        BonusAccount.objects.bulk_update(accounts, fields)
        return
    table = BonusAccount._meta.db_table
    row = "(%s::bigint, " + ", ".join(f"%s::{kind}" for kind in _PG_TYPES) + ")"
    assignments = ", ".join(f"{name} = v.{name}" for name in ACCOUNT_FIELDS)
    with connection.cursor() as cursor:
        for start in range(0, len(accounts), 1000):
            chunk = accounts[start : start + 1000]
            params = []
            for account in chunk:
                params.append(account.pk)
                params.extend(getattr(account, name) for name in ACCOUNT_FIELDS)
            cursor.execute(
                f"UPDATE {table} AS a SET {assignments} "  # noqa: S608 (names are constants above)
                f"FROM (VALUES {', '.join([row] * len(chunk))}) AS v(id, {', '.join(ACCOUNT_FIELDS)}) "
                "WHERE a.id = v.id",
                params,
            )


def _settle_and_enter(lots: list[BonusLot], accounts: dict, now: datetime) -> list[LedgerEntry]:
    """One accrual entry per lot; where the account still owes bonuses taken back by an
    earlier refund, the new lot pays it first (as `record_transaction` does)."""
    entries = []
    for lot in lots:
        key = f"accrual:{lot.transaction.pk}"
        entries.append(
            LedgerEntry(
                account=lot.account,
                kind=LedgerEntry.Kind.ACCRUAL,
                amount=lot.amount,
                business=lot.business,
                transaction=lot.transaction,
                lot=lot,
                idempotency_key=key,
                created_at=now,
            )
        )
        account = lot.account
        if account.clawback_due > 0:
            settled = min(account.clawback_due, lot.remaining)
            lot.remaining -= settled
            account.clawback_due -= settled
            account.balance -= settled
            entries.append(
                LedgerEntry(
                    account=account,
                    kind=LedgerEntry.Kind.REFUND_REVERSAL,
                    amount=-settled,
                    business=lot.business,
                    lot=lot,
                    idempotency_key=f"{key}:settle",
                    created_at=now,
                )
            )
    return entries


def _customers(phones: set[str]) -> dict[str, User]:
    """The circle's people with these phones, new ones created (to be claimed at their
    first login) in one statement; a parallel creator of the same phone is fine."""
    found = {user.phone: user for user in User.objects.filter(phone__in=phones)}
    missing = phones - set(found)
    if missing:
        User.objects.bulk_create(
            [User(phone=phone, password=make_password(None)) for phone in sorted(missing)], ignore_conflicts=True
        )
        found.update({user.phone: user for user in User.objects.filter(phone__in=missing)})
    return found


def _lock_accounts(user_ids: list, tiers: list) -> dict:
    """Every account of the batch, created where missing, locked in id order (so two
    batches sharing customers wait for each other instead of deadlocking)."""
    user_ids = set(user_ids)
    have = set(BonusAccount.objects.filter(user_id__in=user_ids).values_list("user_id", flat=True))
    if len(have) < len(user_ids):
        base_tier = _tier_for(ZERO, tiers)
        BonusAccount.objects.bulk_create(
            [BonusAccount(user_id=user_id, tier=base_tier) for user_id in user_ids - have], ignore_conflicts=True
        )
    locked = BonusAccount.objects.select_for_update(of=("self",)).select_related("tier").filter(user_id__in=user_ids)
    return {account.user_id: account for account in locked.order_by("pk")}


def _tier_for(spend: Decimal, tiers: list) -> StatusTier | None:
    return next((tier for tier in tiers if tier.threshold <= spend), None)
