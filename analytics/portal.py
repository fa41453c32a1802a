"""The portal's home page for owners and managers: the analytics dashboard, and its tables as CSV.

`dashboard` (/portal/) shows `analytics.dashboard.generate_business_dashboard` for a period
(`?period=day|week|month`, a week by default) ending with a day (`?as_of=YYYY-MM-DD`, today
by default: an earlier day replays the past): a card per figure with the previous period's
value and the change (the events block among them), server-drawn SVG charts
(`analytics.charts`), the segment mix linking
to the customers list filtered by segment, the customers most at risk of leaving, and at the
top the live overview from PostgreSQL (today, this month, the latest purchases), which does
not wait for the warehouse. A cashier's home page is that overview alone, as it was.

`dashboard_csv` gives each table — figures, series, segments, at-risk customers — as CSV for
the same period: a header row, UTF-8 with a BOM (Excel then reads Cyrillic), money as plain
decimals ("1234.50"), times on the business's clock.

When the warehouse fails (WarehouseError) the page still renders, with a message in place of
the analytics; a CSV download goes back to the page with the message."""

import csv
import io
import logging
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_GET

from accounts.portal import MANAGING_ROLES, money, portal_view
from analytics.charts import Line, bar_chart, horizontal_bar_chart, line_chart
from analytics.dashboard import PERIODS, SERIES, DashboardData, generate_business_dashboard
from analytics.models import Campaign
from analytics.services import SEGMENTS
from analytics.warehouse import WarehouseError

logger = logging.getLogger(__name__)

DEFAULT_PERIOD = "week"
PERIOD_LABELS = {"day": _("Day"), "week": _("Week"), "month": _("Month")}
PERIOD_CHOICES = [(period, PERIOD_LABELS[period]) for period in PERIODS]

# The segments' names, defined once with the campaign audiences' choices.
SEGMENT_LABELS = dict(Campaign.Segment.choices)
SEGMENT_CHOICES = [(segment, SEGMENT_LABELS[segment]) for segment in SEGMENTS]

WAREHOUSE_DOWN = _(
    "The analytics are unavailable right now: the analytics warehouse does not answer. "
    "Today's figures and the latest purchases below are up to date; try the analytics again in a few minutes."
)


@dataclass(frozen=True)
class FigureInfo:
    name: str  # the Figures field
    label: str
    hint: str
    is_money: bool
    is_rate: bool = False  # a share in percent, its change in points


FIGURES = [
    FigureInfo("revenue", _("Revenue"), _("paid in money, less refunds"), True),
    FigureInfo("purchases", _("Purchases"), _("not refunded in full"), False),
    FigureInfo("average_check", _("Average check"), _("revenue per purchase"), True),
    FigureInfo("new_customers", _("New customers"), _("first purchase here in the period"), False),
    FigureInfo("returning_customers", _("Returning customers"), _("bought here before, and again"), False),
    FigureInfo("bonuses_issued", _("Bonuses issued"), _("accruals, welcome and birthday bonuses"), True),
    FigureInfo("bonuses_spent", _("Bonuses spent here"), _("whoever issued them"), True),
    FigureInfo("bonuses_expired", _("Bonuses expired"), _("of the bonuses you issued"), True),
    FigureInfo("bonus_liability", _("Bonus liability"), _("your bonuses customers still hold, at the end"), True),
    FigureInfo(
        "revenue_from_others_customers",
        _("Brought by other partners' customers"),
        _("revenue from customers who came to the circle through another partner"),
        True,
    ),
    FigureInfo(
        "own_customers_spent_elsewhere",
        _("Your customers spent elsewhere in the circle"),
        _("at other partners, by customers who came to the circle through you"),
        True,
    ),
    FigureInfo("coupons_issued", _("Coupons sent"), _("issued by your chains to partners"), False),
    FigureInfo("coupons_redeemed", _("Coupons redeemed here"), _("customers other partners sent you"), False),
    FigureInfo("coupon_rewards", _("Coupon rewards given"), _("discounts and bonuses on those coupons"), True),
]
# The events block (the business's own events as host); in the figures CSV after FIGURES.
EVENT_FIGURES = [
    FigureInfo("events_held", _("Events held"), _("started in the period, not cancelled"), False),
    FigureInfo("event_registrations", _("Registrations"), _("seats taken at those events"), False),
    FigureInfo(
        "event_attendance", _("Attendance"), _("checked in, of the seats at those events that ended"), False, True
    ),
    FigureInfo("event_ticket_bonuses", _("Bonuses for tickets"), _("ticket prices paid, less refunds"), True),
    FigureInfo("event_new_attendees", _("New through events"), _("came with no purchase here before the event"), False),
]
SALES = ("revenue", "purchases", "average_check", "new_customers", "returning_customers")
BONUSES = ("bonuses_issued", "bonuses_spent", "bonuses_expired", "bonus_liability")
CIRCLE = ("revenue_from_others_customers", "own_customers_spent_elsewhere")
CROSSPROMO = ("coupons_issued", "coupons_redeemed", "coupon_rewards")
EVENTS = tuple(info.name for info in EVENT_FIGURES)

# Bonus series of the chart: (series, label, colour).
BONUS_LINES = [
    ("bonuses_issued", _("Issued"), "#2a6f4e"),
    ("bonuses_spent", _("Spent here"), "#1e4f91"),
    ("bonuses_expired", _("Expired"), "#b07400"),
]


# --- The period ------------------------------------------------------------------------------


class PeriodForm(forms.Form):
    period = forms.ChoiceField(label=_("Period"), choices=PERIOD_CHOICES, required=False)
    as_of = forms.DateField(
        label=_("As of"),
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
        help_text=_("The period's last day; an earlier day shows the past."),
    )

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)
        self.fields["as_of"].widget.attrs["max"] = timezone.localdate().isoformat()

    def clean_as_of(self):
        day = self.cleaned_data["as_of"]
        if day is not None and day > timezone.localdate():
            raise ValidationError(_("Choose today or a day in the past."))
        return day


@dataclass(frozen=True)
class Selection:
    form: PeriodForm
    period: str
    as_of: date | None

    def query(self, **changes) -> str:
        """The query string of this selection, with `changes` (None drops a key)."""
        values = {"period": self.period, "as_of": self.as_of.isoformat() if self.as_of else None} | changes
        return urlencode({key: value for key, value in values.items() if value})


def _selection(request) -> Selection:
    """The period and the day asked for; what is missing or wrong falls back to a week to today."""
    form = PeriodForm(request.GET)
    form.is_valid()
    cleaned = getattr(form, "cleaned_data", {})
    return Selection(form=form, period=cleaned.get("period") or DEFAULT_PERIOD, as_of=cleaned.get("as_of"))


def _last_day(data: DashboardData) -> date:
    return (data.end - timedelta(days=1)).date()  # wall-clock arithmetic: `end` is a midnight on the business's clock


# --- Cards and charts -------------------------------------------------------------------------


@dataclass(frozen=True)
class Card:
    name: str
    label: str
    hint: str
    is_money: bool
    value: Decimal | int | None
    previous: Decimal | int | None
    delta: Decimal | None  # percent (points for a rate); None when the previous period had nothing
    is_rate: bool = False

    @property
    def trend(self) -> str:
        if self.delta is None or self.delta == 0:
            return "flat"
        return "up" if self.delta > 0 else "down"


def _cards(data: DashboardData) -> dict[str, Card]:
    deltas = data.deltas()
    return {
        info.name: Card(
            name=info.name,
            label=info.label,
            hint=info.hint,
            is_money=info.is_money,
            value=getattr(data.current, info.name),
            previous=getattr(data.previous, info.name),
            delta=deltas[info.name],
            is_rate=info.is_rate,
        )
        for info in FIGURES + EVENT_FIGURES
    }


def _bucket_label(data: DashboardData, bucket) -> str:
    """A bucket on the axis: the hour of a day's chart, else the day."""
    return f"{bucket:%H}:00" if data.period == "day" else f"{bucket:%d.%m}"


def _bucket_name(data: DashboardData, bucket) -> str:
    """A bucket in full, for tooltips and CSV."""
    return f"{bucket:%d.%m.%Y %H}:00" if data.period == "day" else f"{bucket:%d.%m.%Y}"


def _tick(value: float) -> str:
    decimals = 0 if float(value).is_integer() else 2
    return formats.number_format(Decimal(str(value)), decimals, force_grouping=True)


def _count(value) -> str:
    return formats.number_format(value, 0, force_grouping=True)


def _span(data: DashboardData) -> str:
    first = data.start.date()
    last = _last_day(data)
    return f"{first:%d.%m.%Y}" if first == last else f"{first:%d.%m.%Y}–{last:%d.%m.%Y}"


def _series_chart(data: DashboardData, name: str, title: str, is_money: bool):
    current = [value for _bucket, value in data.series[name]]
    previous = [value for _bucket, value in data.previous_series[name]]
    buckets = [bucket for bucket, _value in data.series[name]]
    previous_buckets = [bucket for bucket, _value in data.previous_series[name]]
    shown = money if is_money else _count
    total = sum(current, Decimal(0) if is_money else 0)
    previous_total = sum(previous, Decimal(0) if is_money else 0)
    desc = gettext("%(what)s, %(span)s: %(total)s in all; the previous period: %(previous)s.") % {
        "what": title,
        "span": _span(data),
        "total": shown(total),
        "previous": shown(previous_total),
    }
    return bar_chart(
        title=title,
        desc=desc,
        labels=[_bucket_label(data, bucket) for bucket in buckets],
        values=current,
        previous=previous,
        tooltips=[f"{_bucket_name(data, b)}: {shown(v)}" for b, v in zip(buckets, current, strict=True)],
        previous_tooltips=[
            f"{_bucket_name(data, b)}: {shown(v)}" for b, v in zip(previous_buckets, previous, strict=True)
        ],
        legend=(gettext("This period"), gettext("The previous period")),
        value_format=shown,
        tick_format=_tick,
        integer=not is_money,
        unit="₽" if is_money else "",
    )


def _charts(data: DashboardData, customers_url: str) -> dict[str, dict]:
    """Each chart's visible title and its SVG."""
    hourly = data.period == "day"
    titles = {
        "revenue": gettext("Revenue by hour") if hourly else gettext("Revenue by day"),
        "purchases": gettext("Purchases by hour") if hourly else gettext("Purchases by day"),
        "bonuses": gettext("Bonuses issued, spent and expired"),
        "segments": gettext("Customers by segment"),
    }
    buckets = [bucket for bucket, _value in data.series["revenue"]]
    bonus_title = titles["bonuses"]
    bonus_desc = "; ".join(
        f"{label}: {money(sum((value for _b, value in data.series[name]), Decimal(0)))}"
        for name, label, _colour in BONUS_LINES
    )
    segment_rows = [
        (SEGMENT_LABELS[segment], data.segments.get(segment, 0), f"{customers_url}?{urlencode({'segment': segment})}")
        for segment in SEGMENTS
    ]
    svgs = {
        "revenue": _series_chart(data, "revenue", titles["revenue"], True),
        "purchases": _series_chart(data, "purchases", titles["purchases"], False),
        "bonuses": line_chart(
            title=bonus_title,
            desc=f"{bonus_title}, {_span(data)}: {bonus_desc}.",
            labels=[_bucket_label(data, bucket) for bucket in buckets],
            lines=[
                Line(name=str(label), values=[value for _b, value in data.series[name]], colour=colour)
                for name, label, colour in BONUS_LINES
            ],
            value_format=money,
            tick_format=_tick,
            unit="₽",
        ),
        "segments": horizontal_bar_chart(
            title=titles["segments"],
            desc="; ".join(f"{label}: {count}" for label, count, _link in segment_rows),
            rows=segment_rows,
            value_format=_count,
        ),
    }
    return {name: {"title": titles[name], "svg": svgs[name]} for name in svgs}


# --- The page ---------------------------------------------------------------------------------


@require_GET
@portal_view()
def dashboard(request):
    """The home page: the analytics dashboard for owners and managers, the live overview for cashiers."""
    from loyalty.portal.dashboard import overview_context, render_overview  # loyalty.portal imports this module

    if not request.can_manage:
        return render_overview(request)
    selection = _selection(request)
    try:
        data = generate_business_dashboard(request.business.pk, selection.period, selection.as_of)
    except WarehouseError:
        logger.warning("The dashboard of %s could not read the warehouse", request.business.pk, exc_info=True)
        data = None
    customers_url = reverse("portal:customers")
    query = selection.query()
    context = {
        **overview_context(request.business),
        "form": selection.form,
        "period": selection.period,
        "as_of": selection.as_of,
        "replay": selection.as_of is not None and selection.as_of < timezone.localdate(),
        "period_links": [
            {"key": key, "label": label, "url": f"?{selection.query(period=key)}", "active": key == selection.period}
            for key, label in PERIOD_CHOICES
        ],
        "today_url": f"?{selection.query(as_of=None)}",
        "data": data,
        "warehouse_down": WAREHOUSE_DOWN if data is None else "",
        "churn_horizon_days": settings.CHURN_HORIZON_DAYS,
        "csv": {table: f"{reverse(url_name)}?{query}" for table, (url_name, _write) in CSV_TABLES.items()},
    }
    if data is not None:
        cards = _cards(data)
        context |= {
            "span": _span(data),
            "sales_cards": [cards[name] for name in SALES],
            "bonus_cards": [cards[name] for name in BONUSES],
            "circle_cards": [cards[name] for name in CIRCLE],
            "crosspromo_cards": [cards[name] for name in CROSSPROMO],
            "event_cards": [cards[name] for name in EVENTS],
            "charts": _charts(data, customers_url),
            "segments": [
                {
                    "key": segment,
                    "label": SEGMENT_LABELS[segment],
                    "count": data.segments.get(segment, 0),
                    "url": f"{customers_url}?{urlencode({'segment': segment})}",
                }
                for segment in SEGMENTS
            ],
            "at_risk": data.at_risk,
        }
    return render(request, "portal/analytics/dashboard.html", context)


# --- CSV --------------------------------------------------------------------------------------

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _text(value) -> str:
    """A text cell that a spreadsheet will not run as a formula (a name like "=HYPERLINK(…)")."""
    text = str(value)
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def _plain(value) -> str:
    """A number as plain text: money "1234.50", counts "12", nothing as ""."""
    return "" if value is None else str(value)


def _figures_rows(data: DashboardData):
    header = ["figure", "name", "current", "previous", "change_percent"]
    cards = _cards(data)
    # A rate's change is in points, not percent: its change column is left empty.
    rows = [
        [
            info.name,
            _text(info.label),
            _plain(card.value),
            _plain(card.previous),
            _plain(None if card.is_rate else card.delta),
        ]
        for info in FIGURES + EVENT_FIGURES
        for card in [cards[info.name]]
    ]
    return header, rows


def _series_rows(data: DashboardData):
    fmt = "%Y-%m-%d %H:%M" if data.period == "day" else "%Y-%m-%d"
    header = ["period", "bucket", *SERIES]
    rows = []
    for which, series in (("previous", data.previous_series), ("current", data.series)):
        buckets = [bucket for bucket, _value in series[SERIES[0]]]
        for index, bucket in enumerate(buckets):
            rows.append([which, bucket.strftime(fmt), *(_plain(series[name][index][1]) for name in SERIES)])
    return header, rows


def _segments_rows(data: DashboardData):
    header = ["segment", "name", "customers"]
    return header, [[segment, _text(SEGMENT_LABELS[segment]), data.segments.get(segment, 0)] for segment in SEGMENTS]


def _at_risk_rows(data: DashboardData):
    header = ["customer_id", "name", "risk_percent", "last_purchase_at"]
    rows = [
        [
            str(customer.user_id),
            _text(customer.name),
            _plain((Decimal(str(customer.risk)) * 100).quantize(Decimal("0.1"))),
            timezone.localtime(customer.last_purchase_at).strftime("%Y-%m-%d %H:%M")
            if customer.last_purchase_at
            else "",
        ]
        for customer in data.at_risk
    ]
    return header, rows


# table → (URL name, rows); the URL names are in svoykrug/portal_urls.py.
CSV_TABLES = {
    "figures": ("portal:dashboard-figures-csv", _figures_rows),
    "series": ("portal:dashboard-series-csv", _series_rows),
    "segments": ("portal:dashboard-segments-csv", _segments_rows),
    "at_risk": ("portal:dashboard-at-risk-csv", _at_risk_rows),
}


def csv_response(filename: str, header: list[str], rows) -> HttpResponse:
    """A CSV download: UTF-8 with a BOM, a header row, `filename` (ASCII) to save as."""
    buffer = io.StringIO()
    buffer.write("\ufeff")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    response = HttpResponse(buffer.getvalue().encode("utf-8"), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "private, no-store"
    return response


@require_GET
@portal_view(roles=MANAGING_ROLES)
def dashboard_csv(request, table: str):
    """One of the dashboard's tables as CSV, for the period of the query string."""
    _url_name, write = CSV_TABLES[table]
    selection = _selection(request)
    try:
        data = generate_business_dashboard(request.business.pk, selection.period, selection.as_of)
    except WarehouseError:
        logger.warning("A dashboard CSV of %s could not read the warehouse", request.business.pk, exc_info=True)
        messages.error(request, WAREHOUSE_DOWN)
        return redirect(f"{reverse('portal:dashboard')}?{selection.query()}")
    header, rows = write(data)
    filename = f"{table.replace('_', '-')}-{data.period}-{_last_day(data):%Y-%m-%d}.csv"
    return csv_response(filename, header, rows)
