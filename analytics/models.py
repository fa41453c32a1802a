"""What the analytics app keeps in PostgreSQL: how far the warehouse export has come, and the
churn models with the customers' latest churn scores."""

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class ExportState(models.Model):
    """One row per exported stream (purchases, ledger entries): its watermark, and the last run."""

    name = models.CharField(_("stream"), max_length=50, primary_key=True)
    watermark = models.DateTimeField(_("exported up to"), null=True, blank=True)
    last_run_at = models.DateTimeField(_("last run"), null=True, blank=True)
    last_rows = models.PositiveIntegerField(_("rows in the last run"), default=0)
    total_rows = models.PositiveBigIntegerField(_("rows exported in all"), default=0)
    last_error = models.TextField(_("last error"), blank=True)

    class Meta:
        verbose_name = _("warehouse export")
        verbose_name_plural = _("warehouse exports")

    def __str__(self):
        return self.name

    @property
    def lag_seconds(self) -> float | None:
        """How far the warehouse is behind now (None before the first export)."""
        if self.watermark is None:
            return None
        return max(0.0, (timezone.now() - self.watermark).total_seconds())


class ChurnModel(models.Model):
    """One trained churn model (analytics/churn.py): the fitted estimator and the recency-only
    baseline trained beside it, serialized with joblib, with their holdout metrics. Only a
    model that beat its baseline on the holdout's ROC AUC becomes the current one."""

    as_of = models.DateTimeField(_("data before"), help_text=_("Only purchases and entries before this moment."))
    horizon_days = models.PositiveIntegerField(_("horizon, days"))
    created_at = models.DateTimeField(_("trained at"), default=timezone.now)
    estimator = models.BinaryField(_("fitted model"))
    baseline_estimator = models.BinaryField(_("fitted recency baseline"))
    sklearn_version = models.CharField(_("scikit-learn version"), max_length=30)
    feature_names = models.JSONField(_("features"), default=list)
    metrics = models.JSONField(_("holdout metrics of the model"), default=dict)
    baseline_metrics = models.JSONField(_("holdout metrics of the recency baseline"), default=dict)
    details = models.JSONField(_("training and holdout windows"), default=dict)
    beats_baseline = models.BooleanField(_("beats the baseline"), default=False)
    is_current = models.BooleanField(_("current"), default=False)

    class Meta:
        verbose_name = _("churn model")
        verbose_name_plural = _("churn models")
        ordering = ["-as_of", "-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_current"], condition=models.Q(is_current=True), name="one_current_churn_model"
            )
        ]

    def __str__(self):
        return f"churn model {self.pk} (data before {self.as_of:%Y-%m-%d %H:%M})"


class ChurnScore(models.Model):
    """A customer's latest churn risk in the circle (no business) or at one partner, from the
    nightly `refresh_churn_scores`: the probability of no purchase in the next horizon."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="churn_scores")
    business = models.ForeignKey(
        "accounts.Business", on_delete=models.CASCADE, null=True, blank=True, related_name="churn_scores"
    )
    risk = models.FloatField(_("churn risk"))
    model = models.ForeignKey(ChurnModel, on_delete=models.PROTECT, related_name="scores")
    scored_at = models.DateTimeField(_("scored at"))

    class Meta:
        verbose_name = _("churn score")
        verbose_name_plural = _("churn scores")
        constraints = [
            # Two partial constraints: a plain unique (user, business) lets NULL businesses repeat.
            models.UniqueConstraint(
                fields=["user", "business"],
                condition=models.Q(business__isnull=False),
                name="one_churn_score_per_partner",
            ),
            models.UniqueConstraint(
                fields=["user"], condition=models.Q(business__isnull=True), name="one_churn_score_in_the_circle"
            ),
        ]
        indexes = [models.Index(fields=["business", "-risk"], name="churn_score_by_risk")]

    def __str__(self):
        return f"{self.user} — {self.business or 'circle'}: {self.risk:.2f}"
