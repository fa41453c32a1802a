"""Importing a partner's purchase history in batches: the same ledger as `record_transaction`
(a purchase, its accrual lot and entry, the account's balance, spend and tier), written
with a handful of statements per batch instead of a dozen per purchase.

History is not news: an import sends no messages and grants no welcome bonus (the
customer was the partner's customer before the circle; their first purchase through the
circle's own doors is still the first in the circle only if the import found none).
A purchase whose bonuses would already have expired earns none; it still counts towards
the tier if it is within 365 days."""

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.contrib.auth.hashers import make_password
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from accounts.models import Business, User
from loyalty.models import BonusAccount, BonusLot, LedgerEntry, StatusTier, Transaction
from loyalty.money import ZERO, percent_of
from loyalty.services.ledger import accrual_rate, get_program
from svoykrug import answers


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
    closed = {phone for phone, (_pk, active) in users.items() if not active}
    for row in todo:
        if row.phone in closed:
            result.rejected.append((row.line, "the customer's account is closed"))
    todo = [row for row in todo if row.phone not in closed]
    if not todo:
        return result

    now = timezone.now()
    program = get_program(business)
    tiers = list(StatusTier.objects.order_by("-threshold"))
    rate_by_tier = {None: accrual_rate(program, None)} | {tier.pk: accrual_rate(program, tier) for tier in tiers}
    lifetime, hold = timedelta(days=program.bonus_lifetime_days), timedelta(days=program.hold_days)
    year_ago = now - timedelta(days=365)
    with transaction.atomic():
        accounts = _lock_accounts([users[row.phone][0] for row in todo], tiers)
        tier_before = {account.pk: account.tier_id for account in accounts.values()}
        # Plain rows, not model instances: at hundreds of thousands of rows the instances
        # cost more than the database's work.
        purchases, lots = [], []
        for row in sorted(todo, key=lambda r: (r.occurred_at, r.line)):
            account = accounts[users[row.phone][0]]
            expires_at = row.occurred_at + lifetime
            accrued = percent_of(row.amount, rate_by_tier[account.tier_id]) if expires_at > now else ZERO
            purchase = {
                "id": uuid.uuid4(),
                "business_id": business.pk,
                "customer_id": account.user_id,
                "external_id": row.external_id,
                "source": source,
                "gross_amount": row.amount,
                "bonuses_redeemed": ZERO,
                "coupon_discount": ZERO,
                "paid_amount": row.amount,
                "bonuses_accrued": accrued,
                "refunded_amount": ZERO,
                "money_refunded": ZERO,
                "occurred_at": row.occurred_at,
                "recorded_at": now,
                "updated_at": now,
                "status": Transaction.Status.COMPLETED,
                "tier_id": account.tier_id,
                "request_digest": "",
                "recorded_by_id": None,
            }
            purchases.append(purchase)
            if accrued > 0:
                lots.append(
                    {
                        "account_id": account.pk,
                        "business_id": business.pk,
                        "amount": accrued,
                        "remaining": accrued,
                        "spendable_from": min(row.occurred_at + hold, expires_at - timedelta(seconds=1)),
                        "expires_at": expires_at,
                        "transaction_id": purchase["id"],
                        "tier_id": account.tier_id,
                        "created_at": now,
                    }
                )
                account.lifetime_earned += accrued
                account.balance += accrued
            if account.first_purchase_at is None or row.occurred_at < account.first_purchase_at:
                account.first_purchase_at = row.occurred_at
            if row.occurred_at > year_ago:
                account.spend_365 += row.amount
                account.tier = _tier_for(account.spend_365, tiers)

        _insert_rows(Transaction, purchases)
        settlements = _settle_clawbacks(lots, accounts)
        _insert_rows(BonusLot, lots)
        _insert_rows(LedgerEntry, _entries(lots, settlements, now))
        for account in accounts.values():
            if account.tier_id != tier_before[account.pk]:
                account.tier_updated_at = now
            account.updated_at = now
        _save_accounts(list(accounts.values()))
    result.imported = len(purchases)
    return result


def _insert_rows(model, rows: list[dict]) -> None:
    """Insert plain rows (every column by its attname; an auto id may be left out, and is
    then filled in). On PostgreSQL a COPY, with auto ids drawn from the table's sequence
    first; elsewhere bulk_create."""
    if not rows:
        return
    meta = model._meta
    fields = list(meta.concrete_fields)
    auto_pk = meta.pk.attname not in rows[0]
    expected = {f.attname for f in fields if not (auto_pk and f is meta.pk)}
    if set(rows[0]) != expected:  # a column added to the model must be added here too
        raise ValueError(f"{meta.label} rows have {sorted(set(rows[0]) ^ expected)} wrong")
    if connection.vendor != "postgresql":
        created = model.objects.bulk_create([model(**row) for row in rows])
        if auto_pk:
            for row, obj in zip(rows, created, strict=True):
                row[meta.pk.attname] = obj.pk
        return
    with connection.cursor() as cursor:
        if auto_pk:
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
                [meta.db_table, meta.pk.column, len(rows)],
            )
            for row, (pk,) in zip(rows, cursor.fetchall(), strict=True):
                row[meta.pk.attname] = pk
        names = [f.attname for f in fields]
        columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
        statement = f"COPY {connection.ops.quote_name(meta.db_table)} ({columns}) FROM STDIN"
        # The raw psycopg cursor: its errors are turned into Django's (IntegrityError) here.
        with connection.wrap_database_errors, cursor.cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row([row[name] for name in names])


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
    """Write the batch's accounts back. On PostgreSQL one UPDATE ... FROM unnest(arrays):
    Django's bulk_update builds a CASE per field and row, which costs more than the rest
    of the import."""
    if connection.vendor != "postgresql":
        BonusAccount.objects.bulk_update(accounts, [name.removesuffix("_id") for name in ACCOUNT_FIELDS])
        return
    table = BonusAccount._meta.db_table
    arrays = [[account.pk for account in accounts]]
    arrays += [[getattr(account, name) for account in accounts] for name in ACCOUNT_FIELDS]
    unnest = ", ".join(f"%s::{kind}[]" for kind in ("bigint", *_PG_TYPES))
    assignments = ", ".join(f"{name} = v.{name}" for name in ACCOUNT_FIELDS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS a SET {assignments} "  # noqa: S608 (names are constants above)
            f"FROM unnest({unnest}) AS v(id, {', '.join(ACCOUNT_FIELDS)}) WHERE a.id = v.id",
            arrays,
        )


def _settle_clawbacks(lots: list[dict], accounts: dict) -> dict[int, Decimal]:
    """Where an account still owes bonuses that an earlier refund could not take back, its
    new lots pay them first (as `record_transaction` does). {lot index: amount settled}."""
    owing = {account.pk: account for account in accounts.values() if account.clawback_due > 0}
    settled = {}
    for index, lot in enumerate(lots):
        account = owing.get(lot["account_id"])
        if account is None or account.clawback_due <= 0:
            continue
        part = min(account.clawback_due, lot["remaining"])
        lot["remaining"] -= part
        account.clawback_due -= part
        account.balance -= part
        settled[index] = part
    return settled


def _entries(lots: list[dict], settled: dict[int, Decimal], now: datetime) -> list[dict]:
    """One accrual entry per lot, and a settling entry where a lot paid a clawback."""
    entries = []
    for index, lot in enumerate(lots):
        key = f"accrual:{lot['transaction_id']}"
        common = {
            "account_id": lot["account_id"],
            "business_id": lot["business_id"],
            "refund_id": None,
            "lot_id": lot["id"],
            "created_by_id": None,
            "reason": "",
            "created_at": now,
        }
        entries.append(
            {
                **common,
                "kind": LedgerEntry.Kind.ACCRUAL,
                "amount": lot["amount"],
                "transaction_id": lot["transaction_id"],
                "idempotency_key": key,
            }
        )
        if index in settled:
            entries.append(
                {
                    **common,
                    "kind": LedgerEntry.Kind.REFUND_REVERSAL,
                    "amount": -settled[index],
                    "transaction_id": None,
                    "idempotency_key": f"{key}:settle",
                }
            )
    return entries


def _customers(phones: set[str]) -> dict[str, tuple]:
    """{phone: (user id, is active)} of the circle's people with these phones, new ones
    created (to be claimed at their first login) in one statement; a parallel creator of
    the same phone is fine."""
    people = User.objects.filter(phone__in=phones).values_list("phone", "pk", "is_active")
    found = {phone: (pk, active) for phone, pk, active in people}
    missing = phones - set(found)
    if missing:
        unusable = make_password(None)  # "!…": no password can match it; one value serves the batch
        User.objects.bulk_create([User(phone=phone, password=unusable) for phone in missing], ignore_conflicts=True)
        people = User.objects.filter(phone__in=missing).values_list("phone", "pk", "is_active")
        found.update({phone: (pk, active) for phone, pk, active in people})
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
    by_id = {tier.pk: tier for tier in tiers}
    answers.customers_changed("loyalty", user_ids)
    accounts = {}
    for account in BonusAccount.objects.select_for_update().filter(user_id__in=user_ids).order_by("pk"):
        account.tier = by_id.get(account.tier_id)  # from memory, not a query per account
        accounts[account.user_id] = account
    return accounts


def _tier_for(spend: Decimal, tiers: list) -> StatusTier | None:
    return next((tier for tier in tiers if tier.threshold <= spend), None)
