"""The settlement report: whose bonuses were spent where."""

import calendar
from datetime import date, timedelta

from django import forms
from django.shortcuts import render
from django.utils import formats, timezone
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_GET

from accounts.portal import MANAGING_ROLES, PortalForm, portal_view
from crosspromo.selectors import reward_shares
from loyalty import selectors
from loyalty.money import ZERO
from loyalty.portal.common import (
    local_midnight,
)


class MonthForm(PortalForm):
    month = forms.RegexField(
        label=_("Month"),
        regex=r"^\d{4}-(0[1-9]|1[0-2])$",
        required=False,
        error_messages={"invalid": _("Enter a month as YYYY-MM.")},
        widget=forms.TextInput(attrs={"type": "month"}),
    )


def _month_start(value: str | None) -> date:
    if value:
        year, month = (int(part) for part in value.split("-"))
        if year >= 2000:
            return date(year, month, 1)
    return timezone.localdate().replace(day=1)


def _next_month(first: date) -> date:
    return first + timedelta(days=calendar.monthrange(first.year, first.month)[1])


@require_GET
@portal_view(roles=MANAGING_ROLES)
def settlement(request):
    """The month's clearing: bonuses issued by one business and spent at another, from
    this business's side — what it owes for its bonuses spent elsewhere, and what others
    owe it for theirs spent here — and the cross-promo rewards a chain's source agreed to
    share with its target."""
    form = MonthForm(request.GET)
    first = _month_start(form.cleaned_data["month"] if form.is_valid() else None)
    following = _next_month(first)
    business_id = request.business.pk
    rows = selectors.clearing_matrix(
        since=local_midnight(first), until=local_midnight(following), business=request.business
    )
    own = owed_to_us = we_owe = ZERO
    for row in rows:
        if row.issuer_id == business_id and row.spender_id == business_id:
            own += row.amount  # its own bonuses spent at home: nobody owes anybody
        elif row.spender_id == business_id:
            owed_to_us += row.amount
        elif row.issuer_id == business_id:
            we_owe += row.amount
    # Cross-promo rewards whose cost the chain's source agreed to share: it owes the target.
    shares = reward_shares(since=local_midnight(first), until=local_midnight(following), business=request.business)
    for share in shares:
        if share.target_id == business_id:
            owed_to_us += share.owed
        else:
            we_owe += share.owed
    previous = (first - timedelta(days=1)).replace(day=1)
    context = {
        "form": form,
        "rows": rows,
        "shares": shares,
        "month": first,
        "month_label": formats.date_format(first, "F Y"),
        "previous": previous.strftime("%Y-%m"),
        "following": following.strftime("%Y-%m"),
        "owed_to_us": owed_to_us,
        "we_owe": we_owe,
        "own": own,
        "net": owed_to_us - we_owe,
    }
    return render(request, "portal/loyalty/settlement.html", context)
