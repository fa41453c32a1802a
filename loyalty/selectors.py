"""Read queries of the loyalty app that more than one caller needs (mobile API, partner API,
portal, admin). Business-scoped reads take the business as a required argument."""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db.models import Count, F, Max, Q, QuerySet, Sum
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import Business, User
from loyalty.models import BonusAccount, BonusLot, LedgerEntry, StatusTier, Transaction
from loyalty.money import ZERO, as_money


@dataclass(frozen=True)
class Expiry:
    amount: Decimal
    expires_at: datetime
    business_name: str


@dataclass(frozen=True)
class AccountSummary:
    balance: Decimal
    spendable: Decimal
    pending: Decimal
    lifetime_earned: Decimal
    clawback_due: Decimal
    tier: StatusTier | None
    next_tier: StatusTier | None
    spend_365: Decimal
    spend_to_next_tier: Decimal | None
    expiries: list[Expiry]
    # The next moment the summary changes with time alone (bonuses come off hold or
    # expire), None if nothing will; writes change it too.
    changes_at: datetime | None = None


def account_summary(user: User, *, at: datetime | None = None) -> AccountSummary:
    """Everything the customer's card shows: balance, what can be spent now and what is still
    on hold, the tier, the next tier and the spend it still needs, and each coming expiry
    (one per batch, soonest first)."""
    at = at or timezone.now()
    account = BonusAccount.objects.select_related("tier").filter(user=user).first()
    if account is None:
        lowest = StatusTier.objects.order_by("threshold").first()
        following = (
            StatusTier.objects.filter(threshold__gt=lowest.threshold).order_by("threshold").first() if lowest else None
        )
        return AccountSummary(
            balance=ZERO,
            spendable=ZERO,
            pending=ZERO,
            lifetime_earned=ZERO,
            clawback_due=ZERO,
            tier=lowest,
            next_tier=following,
            spend_365=ZERO,
            spend_to_next_tier=following.threshold if following else None,
            expiries=[],
        )
    # Every open lot, once: the totals, the expiries and the next change are all read from them.
    lots = list(
        account.lots.filter(remaining__gt=0, expires_at__gt=at)
        .order_by("expires_at", "id")
        .values_list("remaining", "spendable_from", "expires_at", "business__name")
    )
    next_tier = StatusTier.objects.filter(threshold__gt=account.spend_365).order_by("threshold").first()
    releases = [spendable_from for _remaining, spendable_from, _expires, _name in lots if spendable_from > at]
    return AccountSummary(
        balance=account.balance,
        spendable=as_money(sum(remaining for remaining, spendable_from, _e, _n in lots if spendable_from <= at)),
        pending=as_money(sum(remaining for remaining, spendable_from, _e, _n in lots if spendable_from > at)),
        lifetime_earned=account.lifetime_earned,
        clawback_due=account.clawback_due,
        tier=account.tier,
        next_tier=next_tier,
        spend_365=account.spend_365,
        spend_to_next_tier=(next_tier.threshold - account.spend_365) if next_tier else None,
        expiries=[
            Expiry(amount=remaining, expires_at=expires_at, business_name=name or "")
            for remaining, _spendable_from, expires_at, name in lots
        ],
        changes_at=min([*releases, *(expires_at for _r, _s, expires_at, _n in lots)], default=None),
    )


def customer_ledger(user: User) -> QuerySet[LedgerEntry]:
    """The customer's own bonus movements, newest first."""
    return (
        LedgerEntry.objects.filter(account__user=user)
        .select_related("business")
        .only("kind", "amount", "business__name", "transaction_id", "reason", "created_at")
        .order_by("-created_at", "-id")
    )


def customer_transactions(user: User) -> QuerySet[Transaction]:
    """The customer's own purchases at every partner, newest first."""
    return Transaction.objects.filter(customer=user).select_related("business", "tier").order_by("-occurred_at", "-pk")


def business_transactions(
    *,
    business: Business,
    since: datetime | None = None,
    until: datetime | None = None,
    status: str | None = None,
    phone: str | None = None,
) -> QuerySet[Transaction]:
    """A partner's purchases, newest first, filtered by time, status and customer phone."""
    purchases = Transaction.objects.filter(business=business).select_related("customer", "tier")
    if since:
        purchases = purchases.filter(occurred_at__gte=since)
    if until:
        purchases = purchases.filter(occurred_at__lt=until)
    if status:
        purchases = purchases.filter(status=status)
    if phone:
        purchases = purchases.filter(customer__phone__contains=phone)
    return purchases.order_by("-occurred_at", "-pk")


def business_customers(*, business: Business, phone: str | None = None) -> QuerySet[User]:
    """People who bought at this partner, with their visits, spend there and last visit."""
    customers = User.objects.filter(transactions__business=business)
    if phone:
        customers = customers.filter(phone__contains=phone)
    return (
        customers.annotate(
            visits=Count("transactions", filter=Q(transactions__business=business)),
            spend_here=Sum(
                F("transactions__paid_amount") - F("transactions__money_refunded"),
                filter=Q(transactions__business=business),
            ),
            last_visit=Max("transactions__occurred_at", filter=Q(transactions__business=business)),
        )
        .select_related("bonus_account__tier")
        .order_by("-last_visit")
    )


@dataclass(frozen=True)
class ClearingRow:
    issuer_id: object
    issuer_name: str
    spender_id: object
    spender_name: str
    amount: Decimal


def clearing_matrix(*, since: datetime, until: datetime, business: Business | None = None) -> list[ClearingRow]:
    """For a period: how many bonuses each business issued that were spent at each other
    business (refund returns net out). With `business`, only rows where it is the issuer or
    the spender. Bonuses the platform issued have no issuer id."""
    entries = LedgerEntry.objects.filter(
        kind__in=[LedgerEntry.Kind.REDEMPTION, LedgerEntry.Kind.REFUND_RETURN],
        created_at__gte=since,
        created_at__lt=until,
    )
    if business is not None:
        entries = entries.filter(Q(business=business) | Q(lot__business=business))
    rows = (
        entries.values("lot__business_id", "lot__business__name", "business_id", "business__name")
        .annotate(spent=Sum("amount"))
        .order_by("lot__business__name", "business__name")
    )
    return [
        ClearingRow(
            issuer_id=row["lot__business_id"],
            issuer_name=row["lot__business__name"] or str(_("Svoy Krug")),
            spender_id=row["business_id"],
            spender_name=row["business__name"],
            amount=-row["spent"],
        )
        for row in rows
        if row["spent"]
    ]


@dataclass(frozen=True)
class LedgerMismatch:
    what: str
    id: object
    expected: Decimal
    found: Decimal


def ledger_mismatches(limit: int = 20) -> list[LedgerMismatch]:
    """Where the cached sums disagree with the append-only ledger: accounts whose balance is
    not the sum of their entries or of their lots' remainders, and lots whose remainder is
    not the sum of their entries. Empty when the books balance."""
    from django.db.models import DecimalField, OuterRef, Subquery, Value
    from django.db.models.functions import Coalesce, Round

    money = DecimalField(max_digits=14, decimal_places=2)

    def summed(query):
        # Round in SQL: SQLite sums decimals as floats (0.1 + 0.2), PostgreSQL exactly.
        return Round(Coalesce(Subquery(query, output_field=money), Value(ZERO)), 2, output_field=money)

    entries_sum = (
        LedgerEntry.objects.filter(account=OuterRef("pk")).values("account").annotate(s=Sum("amount")).values("s")
    )
    lots_sum = (
        BonusLot.objects.filter(account=OuterRef("pk")).values("account").annotate(s=Sum("remaining")).values("s")
    )
    accounts = BonusAccount.objects.annotate(
        by_entries=summed(entries_sum),
        by_lots=summed(lots_sum),
    ).filter(~Q(balance=F("by_entries")) | ~Q(balance=F("by_lots")))
    found = []
    for account in accounts.order_by("pk")[:limit]:
        if account.balance != account.by_entries:
            found.append(
                LedgerMismatch("account balance vs entries", account.user_id, account.by_entries, account.balance)
            )
        if account.balance != account.by_lots:
            found.append(LedgerMismatch("account balance vs lots", account.user_id, account.by_lots, account.balance))
    lot_entries = LedgerEntry.objects.filter(lot=OuterRef("pk")).values("lot").annotate(s=Sum("amount")).values("s")
    lots = BonusLot.objects.annotate(by_entries=summed(lot_entries)).filter(~Q(remaining=F("by_entries")))
    for lot in lots.order_by("pk")[:limit]:
        found.append(LedgerMismatch("lot remaining vs entries", lot.pk, lot.by_entries, lot.remaining))
    return found[:limit]
