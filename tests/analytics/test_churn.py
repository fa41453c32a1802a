"""Churn risk on both backends: the features against hand-computed values and blind to what
comes after as_of; a model that beats the recency baseline on seeded data where recency is
not enough (tests/analytics/churn_data.py); the replace-only-if-better rule; predictions;
the clear error on too little data; the commands; the nightly task."""

import csv
import math
import random
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import Sum
from django.utils import timezone
from sklearn.dummy import DummyClassifier

from accounts.models import Business, User
from analytics import churn, export, tasks
from analytics.models import ChurnModel, ChurnScore
from analytics.services import cutoff, predict_churn_risk
from loyalty import services
from loyalty.models import LedgerEntry
from tests.analytics import churn_data
from tests.factories import BusinessFactory, LoyaltyProgramFactory

pytestmark = pytest.mark.django_db

AS_OF = timezone.localdate() - timedelta(days=1)
END = cutoff(AS_OF)


@pytest.fixture
def dataset(warehouse):
    """churn_data's customers as real users (phones +7916700NNNN) at three real partners."""
    partners = [BusinessFactory(category=category).pk for category in (Business.Category.CAFE, "beauty", "fitness")]
    users = User.objects.bulk_create(
        [User(phone=f"+7916700{n:04d}") for n in range(churn_data.customer_count())], batch_size=500
    )
    kinds = churn_data.load(warehouse, END, [user.pk for user in users], partners)
    by_kind = {}
    for customer, kind in kinds.items():
        by_kind.setdefault(kind, []).append(customer)
    export.aggregate_transactions_to_clickhouse()  # the partners, as the export writes them
    return {"kinds": kinds, "by_kind": by_kind, "partners": partners, "users": {u.pk: u for u in users}}


def test_features_match_hand_computed_values_and_ignore_what_comes_after_as_of(warehouse):
    cafe = LoyaltyProgramFactory(business=BusinessFactory(category="cafe")).business
    salon = LoyaltyProgramFactory(business=BusinessFactory(category="beauty")).business
    gym = LoyaltyProgramFactory(business=BusinessFactory(category="fitness")).business
    moment = END - timedelta(days=3)  # features as of the end of AS_OF − 3 days

    def buy(business, key, days_before, phone="+79161110001", redeem="0"):
        with time_machine.travel(moment - timedelta(days=days_before), tick=False):
            services.record_transaction(
                business=business, external_id=key, amount=Decimal(1000), phone=phone, redeem=Decimal(redeem)
            )

    buy(cafe, "c1", 30)
    buy(cafe, "c2", 20)
    buy(salon, "s1", 10, redeem="30")  # bonuses earned at the café, spent at the salon
    buy(cafe, "c3", 5)
    buy(cafe, "other", 2, phone="+79161110002")  # one purchase: no rhythm yet
    export.aggregate_transactions_to_clickhouse()
    customer = User.objects.get(phone="+79161110001")

    before = churn.features(moment, everywhere=True)
    rows = {(row.customer_id, row.scope): row for row in before.itertuples()}
    circle = rows[(customer.pk, "")]
    assert (circle.frequency, circle.monetary, circle.recency_days, circle.tenure_days) == (4, 3970, 5, 30)
    # Gaps between purchase days: 10, 10, 5.
    assert circle.gap_mean == pytest.approx(25 / 3)
    assert circle.gap_std == pytest.approx(math.sqrt(((10 - 25 / 3) ** 2 * 2 + (5 - 25 / 3) ** 2) / 3))
    assert (circle.gap_last, circle.last_gap_ratio) == (5, 0.5)
    assert circle.recency_ratio == pytest.approx(5 / (25 / 3))
    assert (circle.partners, circle.categories, circle.in_business) == (2, 2, 0)
    balance = LedgerEntry.objects.filter(account__user=customer, created_at__lt=moment).aggregate(s=Sum("amount"))["s"]
    assert circle.bonus_balance == pytest.approx(float(balance)) and balance == Decimal("168.50")
    assert (circle.redemptions, circle.redeemed) == (1, 30)
    at_cafe = rows[(customer.pk, str(cafe.pk))]
    assert (at_cafe.frequency, at_cafe.gap_mean, at_cafe.in_business, at_cafe.partners) == (3, 12.5, 1, 2)
    newcomer = rows[(User.objects.get(phone="+79161110002").pk, "")]
    assert newcomer.frequency == 1 and math.isnan(newcomer.gap_mean) and math.isnan(newcomer.recency_ratio)
    assert len(before) == 5  # the customer in the circle, at the café and at the salon; the newcomer twice

    # A purchase at a third partner (with its accrual) and a redemption a day after the moment change nothing.
    buy(gym, "late", -1, redeem="100")
    export.aggregate_transactions_to_clickhouse(since=moment - timedelta(days=60))  # it is recorded back in time
    after = churn.features(moment, everywhere=True)
    assert after.equals(before)
    later = churn.features(END, user_ids=[customer.pk])  # …while a later moment sees them
    assert (later.frequency[0], later.redemptions[0], later.redeemed[0], later.recency_days[0]) == (5, 2, 130, 2)
    assert (later.partners[0], later.categories[0]) == (3, 3)
    # One customer at one partner.
    (only,) = churn.features(moment, business_id=cafe.pk, user_ids=[customer.pk]).itertuples()
    assert (only.scope, only.frequency, only.recency_days) == (str(cafe.pk), 3, 5)

    # Labels: a purchase in [moment, moment + horizon) in the scope, the end excluded.
    def churned(horizon_days):
        frame = churn.labelled(moment, timedelta(days=horizon_days))
        mine = frame[frame.customer_id == customer.pk]
        return dict(
            zip(mine.scope.map({"": "circle", str(cafe.pk): "cafe", str(salon.pk): "salon"}), mine.churned, strict=True)
        )

    assert churned(1) == {"circle": 1, "cafe": 1, "salon": 1}  # the late purchase is exactly a day after
    assert churned(2) == {"circle": 0, "cafe": 1, "salon": 1}  # no row for the gym: no purchase there before


def test_the_model_beats_the_recency_baseline_on_the_holdout_and_is_stored(dataset):
    model = churn.train(AS_OF)

    assert model.metrics["roc_auc"] > model.baseline_metrics["roc_auc"]
    assert model.metrics["roc_auc"] > 0.7
    assert set(model.metrics) == set(model.baseline_metrics) == {"roc_auc", "pr_auc", "brier"}
    assert 0 < model.metrics["brier"] < model.baseline_metrics["brier"]
    assert (model.beats_baseline, model.is_current, model.as_of, model.horizon_days) == (True, True, END, 90)
    assert model.feature_names == churn.FEATURES
    holdout = model.details["holdout"]
    assert holdout["customers"] == churn_data.customer_count()
    assert holdout["labels_until"] == END.isoformat()  # no label looks past as_of
    assert model.details["training"]["labels_until"] == holdout["features_at"]
    stored = ChurnModel.objects.get(pk=model.pk)
    assert callable(churn.load_estimator(stored).predict_proba)


def test_a_training_that_does_not_beat_the_baseline_does_not_replace_the_current_model(dataset, monkeypatch):
    first = churn.train(AS_OF)
    monkeypatch.setattr(churn, "build_model", lambda: DummyClassifier(strategy="prior"))

    second = churn.train(AS_OF)

    assert second.metrics["roc_auc"] == 0.5 < second.baseline_metrics["roc_auc"]
    assert (second.beats_baseline, second.is_current) == (False, False)
    assert churn.current_model() == first
    assert ChurnModel.objects.count() == 2


def test_predict_churn_risk_is_a_probability_higher_for_a_stopped_customer(dataset, warehouse):
    def home_of(customer):
        ((partner,),) = warehouse.execute(
            "SELECT topK(1)(business_id)[1] FROM purchases FINAL WHERE customer_id = %(customer)s",
            {"customer": customer},
        )
        return partner

    (regular,) = dataset["by_kind"]["probe_regular"]  # every 60 days, the last 45 days ago
    (stopper,) = dataset["by_kind"]["probe_stopper"]  # every 7 days, stopped 25 days ago

    risk_regular = predict_churn_risk(regular, as_of=AS_OF)  # trains the model it needs
    risk_stopper = predict_churn_risk(stopper, as_of=AS_OF)

    assert isinstance(risk_regular, float) and 0 <= risk_regular <= 1 and 0 <= risk_stopper <= 1
    assert risk_stopper > risk_regular  # though the stopper's last purchase is the more recent
    assert ChurnModel.objects.count() == 1
    at_home = predict_churn_risk(stopper, business_id=home_of(stopper), as_of=AS_OF)
    assert isinstance(at_home, float) and 0 <= at_home <= 1
    with pytest.raises(churn.NoPurchaseHistory):
        predict_churn_risk(uuid.uuid4(), as_of=AS_OF)
    # Now: the current model (trained above for AS_OF), without training again.
    assert 0 <= predict_churn_risk(stopper) <= 1
    assert ChurnModel.objects.count() == 1


def test_too_little_data_is_said_clearly(warehouse, settings, tmp_path):
    users = User.objects.bulk_create([User(phone=f"+7916800{n:04d}") for n in range(12)])
    partner = BusinessFactory().pk
    rows = [
        churn_data.purchase_row(random.Random(n), partner, user.pk, END - timedelta(days=d + n))
        for n, user in enumerate(users)
        for d in range(0, 300, 20)
    ]
    warehouse.insert("purchases", churn_data.PURCHASE_COLUMNS, rows)

    with pytest.raises(churn.NotEnoughChurnData, match=r"has 12 customers.*CHURN_MIN_TRAINING_CUSTOMERS asks for 50"):
        churn.train(AS_OF)
    with pytest.raises(CommandError, match="CHURN_MIN_TRAINING_CUSTOMERS"):
        call_command("score_churn", "--as-of", AS_OF.isoformat(), "--output", str(tmp_path / "risk.csv"))
    with pytest.raises(CommandError, match="CHURN_MIN_TRAINING_CUSTOMERS"):
        call_command("evaluate_churn", "--as-of", AS_OF.isoformat())
    with pytest.raises(churn.NotEnoughChurnData):
        predict_churn_risk(users[0].pk)

    # Enough customers, but every one of them keeps buying: one outcome only.
    settings.CHURN_MIN_TRAINING_CUSTOMERS = 10
    with pytest.raises(churn.NotEnoughChurnData, match=r"0 of 12 customers churned.*CHURN_MIN_CLASS_CUSTOMERS"):
        churn.train(AS_OF)

    outcome = tasks.refresh_churn_scores()
    assert outcome["scored"] == 0 and "CHURN_MIN_CLASS_CUSTOMERS" in outcome["problem"]
    assert not ChurnScore.objects.exists() and not ChurnModel.objects.exists()
    assert not (tmp_path / "risk.csv").exists()


def test_score_churn_writes_one_row_per_customer(dataset, tmp_path):
    path = tmp_path / "risk.csv"
    call_command("score_churn", "--as-of", AS_OF.isoformat(), "--output", str(path))

    with path.open(encoding="utf-8", newline="") as source:
        header, *rows = list(csv.reader(source))
    assert header == ["customer_id", "phone", "risk"]
    assert len(rows) == churn_data.customer_count() == len({row[0] for row in rows})
    users = dataset["users"]
    assert all(users[uuid.UUID(customer)].phone == phone for customer, phone, _risk in rows)
    risks = [float(risk) for _customer, _phone, risk in rows]
    assert all(0 <= risk <= 1 for risk in risks) and risks == sorted(risks, reverse=True)
    assert ChurnModel.objects.get().is_current  # the model trained for the date is stored

    with pytest.raises(CommandError, match="future"):
        call_command("score_churn", "--as-of", (AS_OF + timedelta(days=5)).isoformat())


def test_evaluate_churn_prints_the_holdout_metrics_beside_the_baseline(dataset, capsys):
    call_command("evaluate_churn", "--as-of", AS_OF.isoformat())

    out = capsys.readouterr().out
    assert "recency baseline" in out and "beats the recency baseline" in out
    for label in ("ROC AUC", "PR AUC", "Brier score"):
        (line,) = [line for line in out.splitlines() if line.startswith(label)]
        model, baseline = (float(value) for value in line[len(label) :].split())
        assert 0 <= model <= 1 and 0 <= baseline <= 1
    assert not ChurnModel.objects.exists()  # evaluating stores nothing


def test_the_nightly_task_trains_and_fills_churn_scores(dataset, warehouse):
    stranger = uuid.uuid4()  # in the warehouse, not in PostgreSQL: left out
    rng = random.Random(1)
    warehouse.insert(
        "purchases",
        churn_data.PURCHASE_COLUMNS,
        [churn_data.purchase_row(rng, dataset["partners"][0], stranger, END - timedelta(days=d)) for d in (3, 9)],
    )

    outcome = tasks.refresh_churn_scores.delay().get()

    model = ChurnModel.objects.get(is_current=True)
    assert outcome == {"trained": model.pk, "current": model.pk, "scored": ChurnScore.objects.count(), "problem": ""}
    circle = ChurnScore.objects.filter(business=None)
    assert circle.count() == churn_data.customer_count()
    assert set(circle.values_list("user_id", flat=True)) == set(dataset["kinds"])
    at_partners = ChurnScore.objects.exclude(business=None)
    assert set(at_partners.values_list("business_id", flat=True)) == set(dataset["partners"])
    assert at_partners.count() > churn_data.customer_count()  # some customers buy at two partners
    assert all(0 <= risk <= 1 for risk in ChurnScore.objects.values_list("risk", flat=True))
    assert set(ChurnScore.objects.values_list("model_id", flat=True)) == {model.pk}
    (stopper,) = dataset["by_kind"]["probe_stopper"]
    (regular,) = dataset["by_kind"]["probe_regular"]
    assert circle.get(user_id=stopper).risk > circle.get(user_id=regular).risk

    # The next night: the model is fresh, so no training; the scores are replaced, not added.
    again = tasks.refresh_churn_scores()
    assert (again["trained"], again["current"], again["scored"]) == (None, model.pk, outcome["scored"])
    assert ChurnScore.objects.count() == outcome["scored"] and ChurnModel.objects.count() == 1
    assert settings.CELERY_BEAT_SCHEDULE["churn-scores"]["task"] == "analytics.tasks.refresh_churn_scores"
