"""The overview after login: today, this month, the customers."""

from django.db.models import Count, Q, Sum
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from accounts.portal import portal_view
from loyalty import selectors
from loyalty.models import LedgerEntry, Transaction
from loyalty.money import ZERO
from loyalty.portal.common import ISSUING_KINDS, local_midnight


@require_GET
@portal_view()
def dashboard(request):
    """Today's purchases, this month's purchases and bonuses, all-time customers."""
    business = request.business
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
    context = {
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
    return render(request, "portal/loyalty/dashboard.html", context)
