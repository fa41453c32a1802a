"""Staff see the warehouse export's progress and the churn models' metrics in the admin, and
can rebuild one partner's warehouse data."""

from decimal import Decimal

import pytest

from accounts.models import User
from analytics import export
from analytics.models import ChurnModel, ExportState
from loyalty import services
from tests.factories import LoyaltyProgramFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    client.force_login(User.objects.create_superuser(phone="+79990000001", password="correct horse battery"))
    return client


def test_a_partners_warehouse_data_is_rebuilt_from_the_admin(staff_client, warehouse):
    cafe = LoyaltyProgramFactory().business
    services.record_transaction(business=cafe, external_id="A-1", amount=Decimal("500.00"), phone="+79161234567")
    export.aggregate_transactions_to_clickhouse()
    warehouse.execute("TRUNCATE TABLE purchases")  # the warehouse lost the rows
    changelist = staff_client.get("/admin/analytics/exportstate/").content.decode()
    assert "/admin/analytics/exportstate/rebuild/" in changelist
    assert "purchases" in changelist

    response = staff_client.post("/admin/analytics/exportstate/rebuild/", {"business": str(cafe.pk)})

    assert response.status_code == 302
    ((count, money),) = warehouse.execute(
        "SELECT count(), sum(paid_amount) FROM purchases FINAL WHERE business_id = %(cafe)s", {"cafe": cafe.pk}
    )
    assert (count, money) == (1, Decimal("500.00"))
    assert staff_client.post("/admin/analytics/exportstate/rebuild/", {"business": "nope"}).status_code == 200


def test_churn_models_are_listed_with_their_metrics(staff_client):
    ChurnModel.objects.create(
        as_of="2026-11-01T00:00:00Z",
        horizon_days=90,
        estimator=b"",
        baseline_estimator=b"",
        sklearn_version="1.9.1",
        metrics={"roc_auc": 0.9412, "pr_auc": 0.95, "brier": 0.092},
        baseline_metrics={"roc_auc": 0.8901, "pr_auc": 0.88, "brier": 0.145},
        beats_baseline=True,
        is_current=True,
    )
    page = staff_client.get("/admin/analytics/churnmodel/").content.decode()
    assert "0.941" in page and "0.890" in page
    assert ExportState.objects.count() == 0
