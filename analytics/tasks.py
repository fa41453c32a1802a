"""Celery tasks of the analytics app."""

from celery import shared_task

from analytics import export


@shared_task(name="analytics.tasks.aggregate_transactions_to_clickhouse")
def aggregate_transactions_to_clickhouse() -> int:
    """Every minute: what changed in PostgreSQL since the watermarks, into the warehouse."""
    return export.aggregate_transactions_to_clickhouse()
