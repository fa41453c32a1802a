"""Churn risk: the probability that a customer makes no purchase in the next CHURN_HORIZON_DAYS.

Features are computed in the warehouse (`FEATURES_SQL`, the same SQL on ClickHouse 18.16 and
chDB) for every customer with a purchase before a moment, in the whole circle and at each
partner they bought from: recency, frequency, money, tenure, the customer's own rhythm (mean
and spread of the gaps between purchase days, the last gap, the current gap relative to the
mean), partners and categories visited in the circle, and the bonus account (balance,
redemptions). One model serves both kinds of scope: it learns from both, with `in_business`
telling them apart, and the label of a partner's row is "no purchase at that partner".

Training for `as_of` (`train`) never reads anything at or after `as_of`:

    features at as_of − 2·H, labelled by purchases in [as_of − 2·H, as_of − H)   → fit
    features at as_of − H,   labelled by purchases in [as_of − H, as_of)         → holdout metrics

Beside the model a recency-only baseline (a logistic regression on `recency_days`) is fitted
and measured on the same holdout: ROC AUC, PR AUC (average precision), Brier score. Both are
then refitted on the two windows together (the newest labelled data) and stored as a
`ChurnModel` with the holdout metrics. The new model becomes the current one only if its
holdout ROC AUC is strictly above the baseline's — and it is not for an earlier `as_of` than
the current one's.

Too little data is said clearly: `NotEnoughChurnData` when a window has fewer customers than
CHURN_MIN_TRAINING_CUSTOMERS or fewer than CHURN_MIN_CLASS_CUSTOMERS who churned or stayed.
There is no silent fallback to the baseline: a risk always comes from a model that beat the
baseline, and when there is none `ChurnModelUnavailable` says why."""

import csv
import io
import logging
import threading
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import joblib
import numpy as np
import pandas as pd
import sklearn
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from analytics.export import ensure_fresh
from analytics.models import ChurnModel, ChurnScore
from analytics.services import cutoff
from analytics.warehouse import get_warehouse

logger = logging.getLogger(__name__)


class ChurnError(Exception):
    """Churn risk cannot be given; the message says why in words for people."""


class NotEnoughChurnData(ChurnError):
    """Too few customers, or only one outcome, to train and check a model."""


class ChurnModelUnavailable(ChurnError):
    """No stored model that beat its baseline may be used for the moment asked."""


class NoPurchaseHistory(ChurnError):
    """The customer has no purchase in the scope before the moment asked."""


FEATURES = [
    "recency_days",
    "frequency",
    "monetary",
    "avg_check",
    "tenure_days",
    "purchases_per_month",
    "gap_mean",
    "gap_std",
    "gap_last",
    "recency_ratio",
    "last_gap_ratio",
    "partners",
    "categories",
    "bonus_balance",
    "redemptions",
    "redeemed",
    "in_business",
]
BASELINE_FEATURES = ["recency_days"]

# The scope column: '' for the whole circle, else the partner's id as text. Every purchase
# counts for the circle and for its partner (arrayJoin makes the two rows); one partner's
# features filter the purchases first.
SCOPES_ALL = "arrayJoin([toString(business_id), ''])"
SCOPE_CIRCLE = "''"
SCOPE_BUSINESS = "toString(business_id)"

# Gaps are between distinct purchase days (two receipts in one visit are one visit), by UTC
# day numbers; recency and tenure are in fractional days. Rhythm features are NULL (NaN for
# the model, which takes missing values) for customers with purchases on one day only.
# No window functions (ClickHouse 18.16): the gaps come from the sorted days array, and one
# JOIN per SELECT level (18.16 again), hence the nesting.
FEATURES_SQL = """
SELECT customer_id, scope,
       recency_days, frequency, monetary, monetary / frequency AS avg_check, tenure_days,
       frequency * 30 / greatest(tenure_days, 1) AS purchases_per_month,
       if(gap_count > 0, gap_sum / gap_count, NULL) AS gap_mean,
       if(gap_count > 0, sqrt(greatest(0, gap_squares / gap_count - pow(gap_sum / gap_count, 2))), NULL) AS gap_std,
       if(gap_count > 0, gap_final, NULL) AS gap_last,
       if(gap_count > 0, recency_days / greatest(gap_sum / gap_count, 1), NULL) AS recency_ratio,
       if(gap_count > 1, gap_final / greatest((gap_sum - gap_final) / (gap_count - 1), 1), NULL) AS last_gap_ratio,
       partners, categories, bonus_balance, redemptions, redeemed,
       toUInt8(scope != '') AS in_business
FROM (
    SELECT customer_id, scope, frequency, monetary, recency_days, tenure_days,
           gap_count, gap_sum, gap_squares, gap_final, partners, categories
    FROM (
        SELECT customer_id, scope, frequency, monetary,
               (moment - last_ts) / 86400 AS recency_days,
               (moment - first_ts) / 86400 AS tenure_days,
               arrayMap((a, b) -> toFloat64(b - a), arrayPopBack(days), arrayPopFront(days)) AS gaps,
               length(gaps) AS gap_count,
               arraySum(gaps) AS gap_sum,
               arraySum(arrayMap(g -> g * g, gaps)) AS gap_squares,
               if(gap_count > 0, gaps[gap_count], 0) AS gap_final
        FROM (
            SELECT customer_id, scope,
                   toInt64(toUnixTimestamp(toDateTime(%(as_of)s, 'UTC'))) AS moment,
                   count() AS frequency,
                   sum(amount) AS monetary,
                   toInt64(max(ts)) AS last_ts,
                   toInt64(min(ts)) AS first_ts,
                   arraySort(groupUniqArray(intDiv(ts, 86400))) AS days
            FROM (
                SELECT customer_id, {scope} AS scope, toUnixTimestamp(occurred_at) AS ts,
                       toFloat64(paid_amount - money_refunded) AS amount
                FROM purchases FINAL
                WHERE occurred_at < toDateTime(%(as_of)s, 'UTC') AND status != 'refunded' {where}
            )
            GROUP BY customer_id, scope
        ) AS totals
    ) AS per_scope
    ANY LEFT JOIN (
        SELECT customer_id, uniqExact(business_id) AS partners, uniqExactIf(category, category != '') AS categories
        FROM (
            SELECT customer_id, business_id
            FROM purchases FINAL
            WHERE occurred_at < toDateTime(%(as_of)s, 'UTC') AND status != 'refunded' {users}
        ) AS visits
        ANY LEFT JOIN (
            SELECT id AS business_id, argMax(category, version) AS category FROM businesses GROUP BY id
        ) AS partner_categories USING business_id
        GROUP BY customer_id
    ) AS reach USING customer_id
) AS purchase_features
ANY LEFT JOIN (
    SELECT customer_id,
           toFloat64(sum(amount)) AS bonus_balance,
           uniqExactIf(ifNull(toString(transaction_id), ''), kind = 'redemption') AS redemptions,
           toFloat64(-sumIf(amount, kind = 'redemption')) AS redeemed
    FROM ledger_entries FINAL
    WHERE created_at < toDateTime(%(as_of)s, 'UTC') {users}
    GROUP BY customer_id
) AS bonuses USING customer_id
ORDER BY customer_id, scope
"""

# Who bought in [start, end), per scope: the label is "churned" for the others.
BUYERS_SQL = """
SELECT customer_id, {scope} AS scope
FROM purchases FINAL
WHERE occurred_at >= toDateTime(%(start)s, 'UTC') AND occurred_at < toDateTime(%(end)s, 'UTC')
      AND status != 'refunded' {where}
GROUP BY customer_id, scope
"""


def _scope(business_id, everywhere: bool, user_ids) -> tuple[str, str, str, dict]:
    """The scope expression, the purchases' filter, the customers' filter, and their params."""
    params, users = {}, ""
    if user_ids is not None:
        # As text: ClickHouse 18.16 will not look a UUID up in an array of strings.
        users, params["users"] = "AND has(%(users)s, toString(customer_id))", [str(user) for user in user_ids]
    if business_id is not None:
        params["business"] = business_id
        return SCOPE_BUSINESS, f"AND business_id = %(business)s {users}", users, params
    return (SCOPES_ALL if everywhere else SCOPE_CIRCLE), users, users, params


def features(moment: datetime, *, business_id=None, everywhere: bool = False, user_ids=None) -> pd.DataFrame:
    """The features at `moment` (only data before it) of customers with a purchase before it:
    in the circle (scope ''), at one partner (`business_id`, scope = its id), or in the circle
    and at every partner (`everywhere`). Columns: customer_id, scope, then FEATURES."""
    scope, where, users, params = _scope(business_id, everywhere, user_ids)
    if user_ids is not None and not params["users"]:
        return pd.DataFrame(columns=["customer_id", "scope", *FEATURES])
    params["as_of"] = moment
    rows = get_warehouse().execute(FEATURES_SQL.format(scope=scope, where=where, users=users), params)
    frame = pd.DataFrame(rows, columns=["customer_id", "scope", *FEATURES])
    frame[FEATURES] = frame[FEATURES].astype(float)
    return frame


def labelled(moment: datetime, horizon: timedelta) -> pd.DataFrame:
    """Features at `moment` in every scope, with `churned` = no purchase in the scope in
    [moment, moment + horizon)."""
    frame = features(moment, everywhere=True)
    rows = get_warehouse().execute(
        BUYERS_SQL.format(scope=SCOPES_ALL, where=""), {"start": moment, "end": moment + horizon}
    )
    bought = set(rows)
    pairs = zip(frame.customer_id, frame.scope, strict=True)
    frame["churned"] = [int(pair not in bought) for pair in pairs]
    return frame


# --- Estimators ---------------------------------------------------------------------------------


def build_model():
    """The churn model: gradient-boosted trees, which take the rhythm's missing values and the
    interplay of recency with the customer's own gaps without hand-made interactions."""
    return HistGradientBoostingClassifier(
        max_iter=200, learning_rate=0.05, max_leaf_nodes=15, min_samples_leaf=20, l2_regularization=1.0, random_state=0
    )


def build_baseline():
    """The yardstick: a logistic regression on recency alone."""
    return make_pipeline(StandardScaler(), LogisticRegression())


# One OpenMP thread for fitting and predicting: at a circle's sizes (thousands of rows) the
# trees' threads cost more than they give (seconds instead of a tenth of one on two cores),
# and a Celery worker shares its cores with others.
def _fit(estimator, matrix, labels):
    with threadpool_limits(limits=1):
        return estimator.fit(matrix, labels)


def _risk(estimator, matrix) -> np.ndarray:
    """The probability of the positive class (churned)."""
    classes = list(estimator.classes_)
    with threadpool_limits(limits=1):
        return estimator.predict_proba(matrix)[:, classes.index(1)]


def metrics(labels, risks) -> dict:
    return {
        "roc_auc": round(float(roc_auc_score(labels, risks)), 4),
        "pr_auc": round(float(average_precision_score(labels, risks)), 4),
        "brier": round(float(brier_score_loss(labels, risks)), 4),
    }


def _dump(estimator) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    return buffer.getvalue()


_loaded: dict[tuple[int, str], object] = {}
_loaded_lock = threading.Lock()


def load_estimator(model: ChurnModel, which: str = "estimator"):
    """The row's fitted estimator (or `baseline_estimator`), unpickled once per process."""
    key = (model.pk, which)
    with _loaded_lock:
        if key not in _loaded:
            if model.sklearn_version != sklearn.__version__:
                logger.warning(
                    "Churn model %s was trained with scikit-learn %s, this is %s",
                    model.pk,
                    model.sklearn_version,
                    sklearn.__version__,
                )
            _loaded[key] = joblib.load(io.BytesIO(bytes(getattr(model, which))))
        return _loaded[key]


def predict(model: ChurnModel, frame: pd.DataFrame) -> np.ndarray:
    """The model's churn risk of each row of a features frame."""
    if frame.empty:
        return np.array([])
    return _risk(load_estimator(model), frame[model.feature_names].to_numpy(dtype=float))


# --- Training and evaluation -----------------------------------------------------------------


@dataclass
class Evaluation:
    """A model and the recency baseline fitted on the first window and measured on the second."""

    as_of: datetime
    horizon_days: int
    model_metrics: dict
    baseline_metrics: dict
    details: dict
    frames: list = field(repr=False, default_factory=list)

    @property
    def beats_baseline(self) -> bool:
        return self.model_metrics["roc_auc"] > self.baseline_metrics["roc_auc"]


def _window(frame: pd.DataFrame, features_at: datetime, horizon: timedelta) -> dict:
    circle = frame[frame.scope == ""]
    return {
        "features_at": features_at.isoformat(),
        "labels_until": (features_at + horizon).isoformat(),
        "customers": int(len(circle)),
        "examples": int(len(frame)),
        "churned_customers": int(circle.churned.sum()),
        "churn_rate": round(float(frame.churned.mean()), 4) if len(frame) else 0.0,
    }


def _check(name: str, window: dict) -> None:
    least, least_class = settings.CHURN_MIN_TRAINING_CUSTOMERS, settings.CHURN_MIN_CLASS_CUSTOMERS
    customers, churned = window["customers"], window["churned_customers"]
    period = f"{window['features_at'][:10]} … {window['labels_until'][:10]}"
    if customers < least:
        raise NotEnoughChurnData(
            f"Not enough data to train the churn model: the {name} window ({period}) has {customers} customers "
            f"with purchases, CHURN_MIN_TRAINING_CUSTOMERS asks for {least}."
        )
    if min(churned, customers - churned) < least_class:
        raise NotEnoughChurnData(
            f"Not enough data to train the churn model: in the {name} window ({period}) {churned} of {customers} "
            f"customers churned and {customers - churned} stayed; CHURN_MIN_CLASS_CUSTOMERS asks for at least "
            f"{least_class} of each."
        )


def _moment(as_of: date | datetime | None) -> datetime:
    return cutoff(default_as_of() if as_of is None else as_of)


def default_as_of() -> date:
    """The day the nightly training stops at: yesterday, the last whole day."""
    return timezone.localdate() - timedelta(days=1)


def evaluate(as_of: date | datetime | None = None) -> Evaluation:
    """Fit the model and the baseline on features at as_of − 2·H labelled by [as_of − 2·H,
    as_of − H), and measure both on features at as_of − H labelled by [as_of − H, as_of).
    `as_of` is a day (up to its end) or a moment; default yesterday. Stores nothing."""
    ensure_fresh()
    moment = _moment(as_of)
    if moment > timezone.now() + timedelta(days=1):
        raise ChurnError(f"Cannot train for {moment:%Y-%m-%d}: it is in the future, whose purchases are unknown.")
    horizon_days = settings.CHURN_HORIZON_DAYS
    horizon = timedelta(days=horizon_days)
    starts = (moment - 2 * horizon, moment - horizon)
    train_frame, holdout_frame = (labelled(start, horizon) for start in starts)
    details = {
        "training": _window(train_frame, starts[0], horizon),
        "holdout": _window(holdout_frame, starts[1], horizon),
    }
    _check("training", details["training"])
    _check("holdout", details["holdout"])
    model, baseline = build_model(), build_baseline()
    _fit(model, train_frame[FEATURES].to_numpy(dtype=float), train_frame.churned)
    _fit(baseline, train_frame[BASELINE_FEATURES].to_numpy(dtype=float), train_frame.churned)
    return Evaluation(
        as_of=moment,
        horizon_days=horizon_days,
        model_metrics=metrics(holdout_frame.churned, _risk(model, holdout_frame[FEATURES].to_numpy(dtype=float))),
        baseline_metrics=metrics(
            holdout_frame.churned, _risk(baseline, holdout_frame[BASELINE_FEATURES].to_numpy(dtype=float))
        ),
        details=details,
        frames=[train_frame, holdout_frame],
    )


def train(as_of: date | datetime | None = None) -> ChurnModel:
    """Evaluate (see `evaluate`), refit model and baseline on both windows, store them with the
    holdout metrics, and make the new model current if it beats the baseline's ROC AUC and is
    not for an earlier moment than the current model. Raises NotEnoughChurnData."""
    evaluation = evaluate(as_of)
    both = pd.concat(evaluation.frames, ignore_index=True)
    model, baseline = build_model(), build_baseline()
    _fit(model, both[FEATURES].to_numpy(dtype=float), both.churned)
    _fit(baseline, both[BASELINE_FEATURES].to_numpy(dtype=float), both.churned)
    with transaction.atomic():
        current = ChurnModel.objects.select_for_update().filter(is_current=True).first()
        promote = evaluation.beats_baseline and (current is None or current.as_of <= evaluation.as_of)
        if promote and current is not None:
            ChurnModel.objects.filter(pk=current.pk).update(is_current=False)
        row = ChurnModel.objects.create(
            as_of=evaluation.as_of,
            horizon_days=evaluation.horizon_days,
            estimator=_dump(model),
            baseline_estimator=_dump(baseline),
            sklearn_version=sklearn.__version__,
            feature_names=FEATURES,
            metrics=evaluation.model_metrics,
            baseline_metrics=evaluation.baseline_metrics,
            details=evaluation.details,
            beats_baseline=evaluation.beats_baseline,
            is_current=promote,
        )
    logger.info(
        "Churn model %s for data before %s: ROC AUC %.3f vs the recency baseline's %.3f%s",
        row.pk,
        row.as_of,
        row.metrics["roc_auc"],
        row.baseline_metrics["roc_auc"],
        ", now current" if promote else ", not made current",
    )
    return row


def current_model() -> ChurnModel | None:
    return ChurnModel.objects.filter(is_current=True).first()


def train_and_choose(as_of: date | datetime) -> tuple[ChurnModel, ChurnModel]:
    """Train for `as_of` (stored, current by the usual rule), and the model to score that moment
    with: the new one if it beat the baseline, else the newest earlier one that did. Raises
    NotEnoughChurnData, or ChurnModelUnavailable when neither exists."""
    trained = train(as_of)
    chosen = trained if trained.beats_baseline else _newest_winner(trained.as_of)
    if chosen is None:
        raise ChurnModelUnavailable(_lost(trained))
    return trained, chosen


def model_for(as_of: date | datetime | None = None) -> ChurnModel:
    """The model to score with. Now (`as_of` None): the current model, trained first if there
    is none. For a past `as_of`: the newest model that beat its baseline among those trained on
    data before that moment, trained for `as_of` first if there is none. Raises
    NotEnoughChurnData, or ChurnModelUnavailable when the model trained does not beat the baseline."""
    if as_of is None:
        model = current_model()
        if model is None:
            model = train()
            if not model.is_current:
                raise ChurnModelUnavailable(_lost(model))
        return model
    moment = cutoff(as_of)
    model = _newest_winner(moment)
    if model is None:
        trained = train(as_of)
        if not trained.beats_baseline:
            raise ChurnModelUnavailable(_lost(trained))
        model = trained
    return model


def _newest_winner(moment: datetime) -> ChurnModel | None:
    return ChurnModel.objects.filter(beats_baseline=True, as_of__lte=moment).order_by("-as_of", "-created_at").first()


def _lost(model: ChurnModel) -> str:
    return (
        f"No churn model to use: the one trained on data before {model.as_of:%Y-%m-%d %H:%M} does not beat the "
        f"recency baseline on the holdout (ROC AUC {model.metrics['roc_auc']:.3f} vs "
        f"{model.baseline_metrics['roc_auc']:.3f}), and no earlier model did."
    )


# --- Scoring ------------------------------------------------------------------------------------


def predict_churn_risk(user_id, business_id=None, as_of=None) -> float:
    """The probability that the customer makes no purchase in the next CHURN_HORIZON_DAYS after
    `as_of` (now by default) — in the circle, or at `business_id` — from data before `as_of`.
    The model is `model_for(as_of)`. Raises NoPurchaseHistory for a customer with no purchase
    in the scope, NotEnoughChurnData / ChurnModelUnavailable when there is no model to use."""
    ensure_fresh()
    model = model_for(as_of)
    frame = features(cutoff(as_of), business_id=business_id, user_ids=[user_id])
    if frame.empty:
        where = "at this partner" if business_id is not None else "in the circle"
        raise NoPurchaseHistory(f"Customer {user_id} has no purchase {where} before that moment.")
    return float(predict(model, frame)[0])


@dataclass(frozen=True)
class Score:
    customer_id: uuid.UUID
    business_id: uuid.UUID | None
    risk: float


def score(model: ChurnModel, moment: datetime, *, business_id=None, everywhere: bool = False) -> list[Score]:
    """Every customer's risk at `moment` by `model`: in the circle, at one partner, or both
    and at every partner (`everywhere`)."""
    frame = features(moment, business_id=business_id, everywhere=everywhere)
    risks = predict(model, frame)
    return [
        Score(customer, uuid.UUID(scope) if scope else None, float(risk))
        for customer, scope, risk in zip(frame.customer_id, frame.scope, risks, strict=True)
    ]


def training_needed() -> bool:
    current = current_model()
    return current is None or current.as_of < timezone.now() - timedelta(days=settings.CHURN_RETRAIN_DAYS)


def refresh_churn_scores() -> dict:
    """The nightly job: train if there is no current model or it is older than CHURN_RETRAIN_DAYS,
    then replace every ChurnScore with the current model's risks now (the circle and each
    partner). Too little data or a model that loses to the baseline is logged, not raised:
    the scores then stay as the last current model left them, or absent."""
    ensure_fresh()
    outcome = {"trained": None, "current": None, "scored": 0, "problem": ""}
    if training_needed():
        try:
            outcome["trained"] = train().pk
        except NotEnoughChurnData as exc:
            outcome["problem"] = str(exc)
            logger.warning("Churn model not trained: %s", exc)
    model = current_model()
    if model is None:
        outcome["problem"] = outcome["problem"] or "No churn model beats the recency baseline yet."
        logger.warning("Churn scores not refreshed: %s", outcome["problem"])
        return outcome
    outcome["current"] = model.pk
    outcome["scored"] = store_scores(model)
    return outcome


def store_scores(model: ChurnModel, moment: datetime | None = None) -> int:
    """Replace all ChurnScore rows with the model's risks at `moment` (now). Customers or
    partners the warehouse knows but PostgreSQL does not (removed since) are left out."""
    from accounts.models import Business, User

    moment = moment or timezone.now()
    scores = score(model, moment, everywhere=True)
    users = _existing(User, {item.customer_id for item in scores})
    partners = _existing(Business, {item.business_id for item in scores if item.business_id is not None})
    rows = [
        ChurnScore(
            user_id=item.customer_id,
            business_id=item.business_id,
            risk=item.risk,
            model=model,
            scored_at=moment,
        )
        for item in scores
        if item.customer_id in users and (item.business_id is None or item.business_id in partners)
    ]
    with transaction.atomic():
        ChurnScore.objects.all().delete()
        ChurnScore.objects.bulk_create(rows, batch_size=2000)
    return len(rows)


def _existing(model, ids: set, chunk: int = 5000) -> set:
    ids, found = list(ids), set()
    for start in range(0, len(ids), chunk):
        found.update(model.objects.filter(pk__in=ids[start : start + chunk]).values_list("pk", flat=True))
    return found


def write_csv(scores: list[Score], target) -> int:
    """customer_id, phone, risk — riskiest first; the phone empty for a closed or unknown account."""
    from accounts.models import User

    phones = {}
    ids = list({item.customer_id for item in scores})
    for start in range(0, len(ids), 5000):
        phones.update(User.objects.filter(pk__in=ids[start : start + 5000]).values_list("pk", "phone"))
    writer = csv.writer(target)
    writer.writerow(["customer_id", "phone", "risk"])
    ordered = sorted(scores, key=lambda item: (-item.risk, str(item.customer_id)))
    for item in ordered:
        writer.writerow([item.customer_id, phones.get(item.customer_id) or "", f"{item.risk:.4f}"])
    return len(ordered)
