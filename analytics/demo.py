"""The demo's warehouse for `seed_demo`: the schema, everything exported, and churn scores, so
the dashboard, the segments and the customers at risk show at once in `make run`."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from analytics import churn, export, schema
from analytics.warehouse import get_warehouse


def seed_analytics() -> dict:
    """Safe to run again: the schema is applied once, the export is idempotent, and scoring
    replaces the scores. Too little history for a churn model is reported, not raised.

    The export reaches back over all the demo can write, not just from the watermark: the
    demo writes its history at its own past times, which can lie behind the watermark of an
    earlier export (a dashboard opened before seeding)."""
    schema.migrate(get_warehouse())
    since = timezone.now() - timedelta(days=settings.LOYALTY_MAX_BACKDATE_DAYS + 1)
    exported = export.aggregate_transactions_to_clickhouse(since=since)
    return {"exported": exported, "churn": churn.refresh_churn_scores()}
