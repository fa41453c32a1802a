"""What the analytics app keeps in PostgreSQL: how far the warehouse export has come, the
churn models with the customers' latest churn scores, and the partners' campaigns."""

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
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


class Campaign(models.Model):
    """A partner's marketing message to one audience of its customers: an RFM segment
    (analytics.services.SEGMENTS) or everyone whose churn risk at the business is at least
    `min_risk` — one of the two. Sent once, as the "promotion" notification (consent, the
    promotions switch and quiet hours are the notification service's), and judged by the
    purchases that followed (analytics.campaigns)."""

    class Status(models.TextChoices):
        DRAFT = "draft", _("Draft")
        SENDING = "sending", _("Sending")
        SENT = "sent", _("Sent")

    class Segment(models.TextChoices):
        # The codes of analytics.services.SEGMENTS, in its order.
        CHAMPIONS = "champions", _("Champions")
        LOYAL = "loyal", _("Loyal")
        POTENTIAL_LOYALISTS = "potential_loyalists", _("Potential loyalists")
        NEW = "new", _("New")
        AT_RISK = "at_risk", _("At risk")
        CANT_LOSE = "cant_lose", _("Can't lose")
        HIBERNATING = "hibernating", _("Hibernating")
        LOST = "lost", _("Lost")

    # A push shows about this much of a title before cutting it off.
    TITLE_MAX_LENGTH = 60
    # A push body shows a few lines; an SMS of this text with the "Свой Круг: " prefix is at most
    # 5 Cyrillic segments (5 × 67 characters), so one customer's SMS never costs more than 5 SMS.
    TEXT_MAX_LENGTH = 300

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    business = models.ForeignKey("accounts.Business", on_delete=models.CASCADE, related_name="campaigns")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    segment = models.CharField(_("segment"), max_length=30, choices=Segment.choices, blank=True)
    min_risk = models.FloatField(
        _("churn risk from"),
        null=True,
        blank=True,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text=_("0–1: customers whose churn risk at the business is at least this."),
    )
    title = models.CharField(
        _("title"), max_length=TITLE_MAX_LENGTH, help_text=_("The push title; a phone shows about 60 characters.")
    )
    text = models.CharField(
        _("text"),
        max_length=TEXT_MAX_LENGTH,
        help_text=_("The push text and the SMS; 300 characters are at most 5 SMS segments in Cyrillic."),
    )
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.DRAFT)
    audience_size = models.PositiveIntegerField(
        _("audience"), default=0, help_text=_("Customers in the audience: at the last preview, then at the send.")
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)

    class Meta:
        verbose_name = _("campaign")
        verbose_name_plural = _("campaigns")
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(segment="") & models.Q(min_risk__isnull=False))
                | (~models.Q(segment="") & models.Q(min_risk__isnull=True)),
                name="campaign_segment_or_min_risk",
            ),
            models.CheckConstraint(
                condition=models.Q(min_risk__isnull=True) | models.Q(min_risk__gte=0, min_risk__lte=1),
                name="campaign_min_risk_is_a_probability",
            ),
        ]
        indexes = [models.Index(fields=["business", "-created_at"], name="campaign_by_business")]

    def __str__(self):
        return f"{self.business} — {self.title}"

    @property
    def audience_label(self) -> str:
        if self.segment:
            return str(self.get_segment_display())
        return str(_("churn risk from %(percent)d%%") % {"percent": round(self.min_risk * 100)})

    @property
    def event_key(self) -> str:
        """The prefix of the send's notification events (see `event_key_for`)."""
        return f"campaign:{self.pk}"

    def event_key_for(self, user_id) -> str:
        """The notification event of the send to one customer: one message per customer and
        channel, ever. Per customer, not one for the campaign: the notification service keys
        a refusal (no consent, promotions off) by event and kind only, so a shared key would
        record the first refused customer and drop the others' rows."""
        return f"{self.event_key}:{user_id}"
