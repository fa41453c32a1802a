"""The portal's home page for owners and managers (the analytics dashboard), its CSV tables,
the customers list's segment and churn risk columns, the cashier's home, and the pages with
the warehouse down. Purchases go through loyalty.services at their own moments on Moscow's
clock, then to a chDB folder of this module's own (the shared one stays unmigrated)."""

import csv
import io
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.contrib.messages import get_messages

from accounts.phones import mask_phone
from analytics import charts, schema
from analytics import warehouse as warehouse_module
from analytics.export import aggregate_transactions_to_clickhouse
from analytics.models import ChurnModel, ChurnScore
from analytics.services import SEGMENTS
from analytics.warehouse import WarehouseError, get_warehouse, reset_warehouse

MSK = ZoneInfo("Europe/Moscow")
NOW = datetime(2026, 3, 15, 12, 0, tzinfo=MSK)
ANNA, BORIS, OLGA = "+79991110001", "+79991110002", "+79991110009"  # Olga buys only at B


def at(moment):
    return time_machine.travel(moment, tick=False)


def msk(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=MSK)


@pytest.fixture(scope="module")
def chdb_folder(tmp_path_factory):
    return tmp_path_factory.mktemp("dashboard-chdb")


@pytest.fixture
def warehouse(settings, chdb_folder):
    reset_warehouse()
    settings.CHDB_PATH = str(chdb_folder)
    schema.migrate()
    yield get_warehouse()
    reset_warehouse()


@pytest.fixture
def shop(warehouse, business_a, business_b, buy):
    """A: Anna 400 on 06.03 (the week before), 1000 on 13.03; Boris 500 on 15.03 at 09:30.
    B: Olga 777.77 on 14.03. Everything exported at 11:55 on 15.03."""
    with at(msk(6, 10)):
        buy(business_a, ANNA, "400.00")
    with at(msk(13, 10)):
        anna = buy(business_a, ANNA, "1000.00").customer
    with at(msk(15, 9, 30)):
        boris = buy(business_a, BORIS, "500.00").customer
    with at(msk(14, 18)):
        olga = buy(business_b, OLGA, "777.77").customer
    with at(NOW - timedelta(minutes=5)):
        aggregate_transactions_to_clickhouse()
    return {"anna": anna, "boris": boris, "olga": olga}


@pytest.fixture
def scores(shop, business_a, business_b):
    """Churn scores: Anna 0.91 and Boris 0.35 at A; Anna 0.99 at B and Boris 0.97 in the
    circle (neither is A's); Olga 0.95 at B."""
    model = ChurnModel.objects.create(
        as_of=NOW, horizon_days=90, estimator=b"", baseline_estimator=b"", sklearn_version="test"
    )

    def score(user, business, risk):
        ChurnScore.objects.create(user=user, business=business, risk=risk, model=model, scored_at=NOW)

    score(shop["anna"], business_a, 0.91)
    score(shop["boris"], business_a, 0.35)
    score(shop["anna"], business_b, 0.99)
    score(shop["boris"], None, 0.97)
    score(shop["olga"], business_b, 0.95)
    return model


def card(html: str, name: str) -> str:
    """The HTML of one figure's card."""
    start = html.index(f'id="figure-{name}"')
    end = html.find('id="figure-', start + 1)
    return html[start : end if end != -1 else len(html)]


def svg(html: str, chart: str) -> str:
    """The <svg> inside the card with `id="chart-…"`."""
    start = html.index(f'id="{chart}"')
    return html[html.index("<svg", start) : html.index("</svg>", start)]


def read_csv(response) -> list[list[str]]:
    text = response.content.decode("utf-8")
    assert text.startswith("\ufeff")
    return list(csv.reader(io.StringIO(text[1:])))


# --- The dashboard ------------------------------------------------------------------------


@pytest.mark.django_db
def test_owner_sees_the_week_figures_with_the_change_and_charts(client, login, owner, shop):
    login(owner)
    with at(NOW):
        response = client.get("/portal/")

    assert response.status_code == 200
    assert "portal/analytics/dashboard.html" in [t.name for t in response.templates]
    data = response.context["data"]
    assert data.period == "week"
    assert data.current.revenue == Decimal("1500.00")
    assert data.previous.revenue == Decimal("400.00")
    html = response.content.decode()
    revenue = card(html, "revenue")
    assert "1,500.00\u00a0₽" in revenue
    assert "400.00\u00a0₽" in revenue
    assert "+275.0" in revenue and 'class="delta plus"' in revenue
    assert "+100.0" in card(html, "purchases")  # 2 purchases against 1
    assert "09.03.2026–15.03.2026" in html
    # A bar a day for the week, and the week before as faint bars.
    revenue_chart = svg(html, "chart-revenue")
    assert revenue_chart.count('class="bar"') == 7
    assert revenue_chart.count('class="bar-previous"') == 7
    assert "<title" in revenue_chart and "<desc" in revenue_chart
    assert "13.03.2026: 1,000.00\u00a0₽" in revenue_chart
    assert svg(html, "chart-bonuses").count('class="point"') == 3 * 7
    # Another business's purchase shows nowhere; the live overview and the latest purchases stay.
    assert "777.77" not in html and "777,77" not in html
    assert 'id="stat-today"' in html
    assert "15.03.2026 09:30" in html
    # The cross-partner figures and the liability have cards.
    for name in ("revenue_from_others_customers", "own_customers_spent_elsewhere", "bonus_liability"):
        assert f'id="figure-{name}"' in html


@pytest.mark.django_db
@pytest.mark.parametrize(("period", "bars", "revenue"), [("day", 24, "500.00"), ("month", 30, "1,900.00")])
def test_the_period_links_change_the_period(client, login, manager, shop, period, bars, revenue):
    login(manager)
    with at(NOW):
        html = client.get("/portal/").content.decode()
        assert f'href="?period={period}"' in html
        response = client.get("/portal/", {"period": period})

    assert response.context["data"].period == period
    page = response.content.decode()
    assert f"{revenue}\u00a0₽" in card(page, "revenue")
    assert svg(page, "chart-revenue").count('class="bar"') == bars
    assert svg(page, "chart-purchases").count('class="bar"') == bars
    assert 'aria-current="page"' in page


@pytest.mark.django_db
def test_as_of_replays_the_past_and_a_future_day_is_refused(client, login, owner, shop):
    login(owner)
    with at(NOW):
        past = client.get("/portal/", {"period": "week", "as_of": "2026-03-08"})
        future = client.get("/portal/", {"as_of": "2026-03-16"})

    data = past.context["data"]
    assert data.current.revenue == Decimal("400.00")  # 02.03–08.03: Anna's first purchase only
    html = past.content.decode()
    assert "02.03.2026–08.03.2026" in html
    assert 'id="replay"' in html
    revenue = card(html, "revenue")
    assert "400.00\u00a0₽" in revenue
    assert ">—</span>" in revenue  # nothing the week before to compare with
    # The period links keep the day; the CSV links carry both.
    assert 'href="?period=month&amp;as_of=2026-03-08"' in html
    assert 'href="/portal/dashboard/figures.csv?period=week&amp;as_of=2026-03-08"' in html

    assert future.status_code == 200
    assert future.context["data"].current.revenue == Decimal("1500.00")  # back to today
    assert "Choose today or a day in the past." in future.content.decode()


def count_statements(monkeypatch) -> list[str]:
    """The statements sent to the warehouse from now on: each one is rendered once, whichever
    method (execute, columns) sends it."""
    calls = []
    original = warehouse_module.render
    monkeypatch.setattr(warehouse_module, "render", lambda sql, *args: calls.append(sql) or original(sql, *args))
    return calls


@pytest.mark.django_db
def test_the_dashboard_reads_the_warehouse_four_times(client, login, owner, shop, monkeypatch):
    calls = count_statements(monkeypatch)
    login(owner)
    with at(NOW):
        assert client.get("/portal/").status_code == 200

    assert len(calls) == 4


# --- CSV ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_csv_exports_have_a_header_the_rows_and_only_this_business(client, login, owner, shop, scores):
    login(owner)
    with at(NOW):
        figures = client.get("/portal/dashboard/figures.csv", {"period": "week"})
        series = client.get("/portal/dashboard/series.csv")
        segments = client.get("/portal/dashboard/segments.csv")
        at_risk = client.get("/portal/dashboard/at-risk.csv")
        day = client.get("/portal/dashboard/figures.csv", {"period": "day", "as_of": "2026-03-13"})

    for response, name in [(figures, "figures"), (series, "series"), (segments, "segments"), (at_risk, "at-risk")]:
        assert response.status_code == 200
        assert response["Content-Type"] == "text/csv; charset=utf-8"
        assert response["Content-Disposition"] == f'attachment; filename="{name}-week-2026-03-15.csv"'
        text = response.content.decode("utf-8")
        assert "777.77" not in text
        assert str(shop["olga"].pk) not in text and mask_phone(OLGA) not in text

    rows = read_csv(figures)
    assert rows[0] == ["figure", "name", "current", "previous", "change_percent"]
    by_name = {row[0]: row for row in rows[1:]}
    assert by_name["revenue"] == ["revenue", "Revenue", "1500.00", "400.00", "275.0"]
    assert by_name["purchases"] == ["purchases", "Purchases", "2", "1", "100.0"]
    assert by_name["average_check"] == ["average_check", "Average check", "750.00", "400.00", "87.5"]
    assert len(rows) == 1 + 14 + 5  # a header, then every figure, the events block's last
    assert by_name["events_held"] == ["events_held", "Events held", "0", "0", ""]
    assert by_name["event_attendance"][4] == ""  # a rate changes in points, not percent

    rows = read_csv(series)
    assert rows[0] == ["period", "bucket", "revenue", "purchases", "bonuses_issued", "bonuses_spent", "bonuses_expired"]
    assert len(rows) == 1 + 14
    assert ["previous", "2026-03-06", "400.00", "1", "20.00", "0.00", "0.00"] in rows
    assert ["current", "2026-03-13", "1000.00", "1", "50.00", "0.00", "0.00"] in rows
    assert ["current", "2026-03-14", "0.00", "0", "0.00", "0.00", "0.00"] in rows  # B's purchase that day: not here

    rows = read_csv(segments)
    assert rows[0] == ["segment", "name", "customers"]
    assert [row[0] for row in rows[1:]] == list(SEGMENTS)
    assert sum(int(row[2]) for row in rows[1:]) == 2

    rows = read_csv(at_risk)
    assert rows == [
        ["customer_id", "name", "risk_percent", "last_purchase_at"],
        [str(shop["anna"].pk), "'" + mask_phone(ANNA), "91.0", "2026-03-13 10:00"],  # "+…" is not run as a formula
        [str(shop["boris"].pk), "'" + mask_phone(BORIS), "35.0", "2026-03-15 09:30"],
    ]

    assert day["Content-Disposition"] == 'attachment; filename="figures-day-2026-03-13.csv"'
    assert ["revenue", "Revenue", "1000.00", "0.00", ""] in read_csv(day)


@pytest.mark.django_db
def test_a_cashier_gets_the_live_overview_and_no_csv(client, login, cashier, business_a, buy):
    with at(msk(15, 9)):
        buy(business_a, ANNA, "1234.50")
    login(cashier)
    with at(NOW):
        response = client.get("/portal/")
        csv_response = client.get("/portal/dashboard/figures.csv")

    assert response.status_code == 200
    assert [t.name for t in response.templates][0] == "portal/loyalty/dashboard.html"
    assert response.context["today_count"] == 1
    html = response.content.decode()
    assert "1,234.50\u00a0₽" in html
    assert "<svg" not in html and "dashboard/figures.csv" not in html
    assert csv_response.status_code == 403


# --- Segments and churn risk on the customers list ------------------------------------------


@pytest.mark.django_db
def test_a_segment_link_of_the_dashboard_lists_that_segment_customers(client, login, owner, shop):
    login(owner)
    with at(NOW):
        response = client.get("/portal/")
        html = response.content.decode()
        chart = svg(html, "segments")
        counted = {item["key"]: item["count"] for item in response.context["segments"]}
        assert sum(counted.values()) == 2
        for segment in SEGMENTS:
            assert f'href="/portal/customers/?segment={segment}"' in chart
        for segment, count in counted.items():
            page = client.get("/portal/customers/", {"segment": segment}).context["page"]

            assert page.paginator.count == count, segment
            assert {customer.segment for customer in page} <= {segment}


@pytest.mark.django_db
def test_customers_list_shows_segment_and_risk_filters_and_sorts(client, login, owner, shop, scores):
    anna, boris = shop["anna"], shop["boris"]
    login(owner)
    with at(NOW):
        listed = client.get("/portal/customers/")
        risky = client.get("/portal/customers/", {"risk": "50"})
        by_risk = client.get("/portal/customers/", {"sort": "risk"})
        segment = next(c.segment for c in listed.context["page"] if c.pk == anna.pk)
        in_segment = client.get("/portal/customers/", {"segment": segment})
        none = client.get("/portal/customers/", {"risk": "90", "phone": BORIS})

    page = list(listed.context["page"])
    assert [c.pk for c in page] == [boris.pk, anna.pk]  # the latest visit first
    assert [c.churn_risk for c in page] == [0.35, 0.91]  # A's scores, not B's or the circle's
    assert all(c.segment in SEGMENTS for c in page)
    html = listed.content.decode()
    assert "<th>Segment</th>" in html and "Churn risk</a></th>" in html
    assert "91&nbsp;%" in html and "35&nbsp;%" in html and "99&nbsp;%" not in html and "97&nbsp;%" not in html
    assert f'href="?segment={segment}"' in html

    assert [c.pk for c in risky.context["page"]] == [anna.pk]
    assert [c.pk for c in by_risk.context["page"]] == [anna.pk, boris.pk]
    expected = [c.pk for c in page if c.segment == segment]
    assert [c.pk for c in in_segment.context["page"]] == expected
    assert list(none.context["page"]) == []
    assert "No customers match the filters." not in none.content.decode()  # a phone was searched
    assert "No customer of yours has such a phone." in none.content.decode()


@pytest.mark.django_db
def test_customers_list_reads_the_warehouse_once_per_page(client, login, owner, shop, business_a, buy, monkeypatch):
    with at(msk(15, 11, 56)):  # after the shop's export: the next one picks them up
        for n in range(3, 9):
            buy(business_a, f"+7999111000{n}", "100.00")
    with at(NOW - timedelta(minutes=1)):
        aggregate_transactions_to_clickhouse()
    calls = count_statements(monkeypatch)
    login(owner)
    with at(NOW):
        page = client.get("/portal/customers/").context["page"]
        assert len(calls) == 1
        assert len([c for c in page if c.segment]) == 8
        client.get("/portal/customers/", {"segment": "champions"})
        assert len(calls) == 2


# --- The warehouse down -------------------------------------------------------------------


class DownWarehouse:
    backend = "down"

    def execute(self, *args, **kwargs):
        raise WarehouseError("Connection refused")

    columns = insert = execute

    insert_tsv = insert


@pytest.fixture
def warehouse_down(monkeypatch):
    for module in ("analytics.dashboard", "analytics.services", "analytics.export"):
        monkeypatch.setattr(f"{module}.get_warehouse", DownWarehouse)


@pytest.mark.django_db
def test_with_the_warehouse_down_the_pages_render_with_a_message(client, login, owner, business_a, buy, warehouse_down):
    with at(msk(15, 9)):
        buy(business_a, ANNA, "1234.50")
    login(owner)
    with at(NOW):
        dashboard = client.get("/portal/", {"period": "day"})
        customers = client.get("/portal/customers/")
        filtered = client.get("/portal/customers/", {"segment": "champions"})
        download = client.get("/portal/dashboard/figures.csv", {"period": "day"})

    assert dashboard.status_code == 200
    html = dashboard.content.decode()
    assert "the analytics warehouse does not answer" in html
    assert "<svg" not in html
    assert "1,234.50\u00a0₽" in html  # the live overview and the latest purchases still show
    assert 'href="?period=week"' in html

    assert customers.status_code == 200
    assert "Segments are unavailable right now" in customers.content.decode()
    assert [c.segment for c in customers.context["page"]] == [None]
    assert filtered.status_code == 200
    assert "segment" in filtered.context["form"].errors

    assert download.status_code == 302
    assert download["Location"] == "/portal/?period=day"
    assert "the analytics warehouse does not answer" in str(list(get_messages(download.wsgi_request))[0])


# --- The charts ---------------------------------------------------------------------------


def test_charts_escape_every_text_and_draw_a_bar_per_value():
    chart = charts.bar_chart(
        title="<script>alert(1)</script>",
        desc='a "quoted" & <b>bold</b> summary',
        labels=["<a>", "b", "c"],
        values=[Decimal("1.50"), 0, Decimal("3")],
        previous=[1, 2, 3],
        legend=("now & then", "<before>"),
    )

    assert "<script>" not in chart and "&lt;script&gt;" in chart
    assert "<b>" not in chart and "&amp;" in chart and "&lt;before&gt;" in chart
    assert chart.count('class="bar"') == 3 and chart.count('class="bar-previous"') == 3
    assert 'role="img"' in chart and "aria-labelledby" in chart

    rows = charts.horizontal_bar_chart(title="t", desc="d", rows=[("x", 2, '/a?b="c"&d'), ("y", 0, None)])
    assert rows.count('class="hbar"') == 2 and rows.count("<a ") == 1
    assert 'href="/a?b=&quot;c&quot;&amp;d"' in rows


def test_nice_ticks_are_round_and_cover_the_values():
    assert charts.nice_ticks(0, 1500) == [0, 500, 1000, 1500]
    assert charts.nice_ticks(0, 3, integer=True) == [0, 1, 2, 3]
    assert charts.nice_ticks(0, 0) == [0, 0.25, 0.5, 0.75, 1]
    assert charts.nice_ticks(-10, 30)[0] <= -10
