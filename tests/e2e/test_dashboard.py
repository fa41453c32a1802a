"""An owner logs in by phone and SMS code through the real forms and lands on the analytics
dashboard: the week's figures and the server-drawn SVG charts, from purchases exported to the
warehouse (chDB in a folder of the test)."""

import re
import uuid
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from analytics import schema
from analytics.export import aggregate_transactions_to_clickhouse
from analytics.warehouse import reset_warehouse
from loyalty import services
from tests.e2e.conftest import expect

pytestmark = pytest.mark.e2e


@pytest.fixture
def warehouse(settings, tmp_path):
    """A migrated chDB of this test's own (the run's shared folder stays unmigrated)."""
    reset_warehouse()
    settings.CHDB_PATH = str(tmp_path / "chdb")
    schema.migrate()
    yield
    reset_warehouse()


@pytest.fixture
def purchases(business_a, warehouse):
    """Two purchases at A today, 1000 ₽ and 500 ₽, exported to the warehouse."""
    for phone, amount in (("+79991110001", "1000.00"), ("+79991110002", "500.00")):
        services.record_transaction(
            business=business_a, external_id=f"pos-{uuid.uuid4().hex[:8]}", phone=phone, amount=Decimal(amount)
        )
    aggregate_transactions_to_clickhouse()


def test_owner_logs_in_by_sms_and_sees_the_dashboard_with_charts(page, shot, log_in, owner, business_a, purchases):
    log_in(owner)

    expect(page).to_have_title(re.compile(r"^Overview"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Кофейня «Зерно»")
    expect(page.locator("#warehouse-down")).to_have_count(0)
    # The live overview from PostgreSQL, and the week's figures from the warehouse.
    expect(page.locator("#stat-today .value")).to_have_text("2")
    expect(page.locator("#stat-today .hint")).to_have_text("for 1,500.00\u00a0₽")
    expect(page.locator("#figure-revenue .value")).to_have_text("1,500.00\u00a0₽")
    expect(page.locator("#figure-purchases .value")).to_have_text("2")
    expect(page.locator("#figure-average_check .value")).to_have_text("750.00\u00a0₽")
    expect(page.locator("#figure-new_customers .value")).to_have_text("2")
    # The charts: a bar a day of the week (and the week before as faint bars), today's with the revenue.
    revenue = page.locator("#chart-revenue svg.chart")
    expect(revenue).to_be_visible()
    expect(revenue.locator("rect.bar")).to_have_count(7)
    expect(revenue.locator("rect.bar-previous")).to_have_count(7)
    today = timezone.localtime(timezone.now(), ZoneInfo(business_a.time_zone)).strftime("%d.%m.%Y")
    expect(revenue.locator("rect.bar title").last).to_have_text(f"{today}: 1,500.00\u00a0₽")
    expect(page.locator("#chart-purchases svg.chart rect.bar")).to_have_count(7)
    bonuses = page.locator("#chart-bonuses svg.chart")
    expect(bonuses).to_be_visible()
    expect(bonuses.locator("circle.point")).to_have_count(3 * 7)
    expect(page.locator("#segments svg.chart rect.hbar").first).to_be_attached()
    # The bars have a height: the revenue of today is drawn, not an empty frame.
    assert float(revenue.locator("rect.bar").last.get_attribute("height")) > 0
    shot("dashboard")

    page.get_by_role("link", name="Day", exact=True).click()
    expect(page).to_have_url(re.compile(r"\?period=day$"))
    expect(page.locator("#chart-revenue svg.chart rect.bar")).to_have_count(24)
    expect(page.locator("#figure-revenue .value")).to_have_text("1,500.00\u00a0₽")
    shot("dashboard-day")
