"""The live overview: today, this month, the customers, the latest purchases, straight from
PostgreSQL. At /portal/ it is a cashier's home page; owners and managers get the analytics
dashboard there (`analytics.portal.dashboard`), which shows this overview at its top."""

from django.db.models import Count, Q, Sum
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from accounts.portal import portal_view
from loyalty import selectors
from loyalty.models import LedgerEntry, Transaction
from loyalty.money import ZERO
from loyalty.portal.common import ISSUING_KINDS, local_midnight


def overview_context(business) -> dict:
    """Today's purchases, this month's purchases and bonuses, all-time customers, and the
    ten latest purchases, in the active (the business's) time zone."""
    day_start = local_midnight(timezone.localdate())
    month_start = day_start.replace(day=1)
    purchases = Transaction.objects.filter(business=business).aggregate(
        today_count=Count("pk", filter=Q(occurred_at__gte=day_start)),
        today_total=Sum("gross_amount", filter=Q(occurred_at__gte=day_start)),
        month_count=Count("pk", filter=Q(occurred_at__gte=month_start)),
        month_total=Sum("gross_amount", filter=Q(occurred_at__gte=month_start)),
        customers=Count("customer", distinct=True),
    )
    bonuses = LedgerEntry.objects.filter(business=business, created_at__gte=month_start).aggregate(
        issued=Sum(
            "amount",
            filter=Q(kind__in=ISSUING_KINDS, lot__business=business)
            | Q(kind=LedgerEntry.Kind.ADJUSTMENT, amount__gt=0),
        ),
        spent=Sum("amount", filter=Q(kind=LedgerEntry.Kind.REDEMPTION)),
    )
    return {
        "today_count": purchases["today_count"],
        "today_total": purchases["today_total"] or ZERO,
        "month_count": purchases["month_count"],
        "month_total": purchases["month_total"] or ZERO,
        "customers_count": purchases["customers"],
        "issued": bonuses["issued"] or ZERO,
        "spent": -(bonuses["spent"] or ZERO),
        "month_start": month_start,
        "recent": selectors.business_transactions(business=business)[:10],
    }


def render_overview(request):
    """The overview page of `request.business` (under `portal_view`)."""
    return render(request, "portal/loyalty/dashboard.html", overview_context(request.business))


@require_GET
@portal_view()
def dashboard(request):
    """The overview on a page of its own (/portal/ routes to analytics.portal.dashboard,
    which shows it to cashiers)."""
    return render_overview(request)
