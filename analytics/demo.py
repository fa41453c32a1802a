"""The demo's warehouse for `seed_demo`: the schema, everything exported, and churn scores, so
the dashboard, the segments and the customers at risk show at once in `make run`."""

from analytics import churn, export, schema
from analytics.warehouse import get_warehouse


def seed_analytics() -> dict:
    """Safe to run again: the schema is applied once, the export is idempotent, and scoring
    replaces the scores. Too little history for a churn model is reported, not raised."""
    schema.migrate(get_warehouse())
    exported = export.aggregate_transactions_to_clickhouse(since=None)
    return {"exported": exported, "churn": churn.refresh_churn_scores()}
