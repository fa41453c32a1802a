"""What the analytics app keeps in PostgreSQL: how far the warehouse export has come."""

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
