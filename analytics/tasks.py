"""Celery tasks of the analytics app."""

from celery import shared_task

from analytics import export


@shared_task(name="analytics.tasks.aggregate_transactions_to_clickhouse")
def aggregate_transactions_to_clickhouse() -> int:
    """Every minute: what changed in PostgreSQL since the watermarks, into the warehouse."""
    return export.aggregate_transactions_to_clickhouse()


@shared_task(name="analytics.tasks.refresh_churn_scores")
def refresh_churn_scores() -> dict:
    """Nightly: train the churn model if the current one is older than CHURN_RETRAIN_DAYS (or
    missing), then score every customer in the circle and at each partner (ChurnScore)."""
    from analytics import churn

    return churn.refresh_churn_scores()


@shared_task(name="analytics.tasks.rebuild_business")
def rebuild_business(business_id: str) -> int:
    """From the admin: one partner's purchases and ledger entries exported again."""
    return export.rebuild_business(business_id)


@shared_task(name="analytics.tasks.send_campaign")
def send_campaign(campaign_id: str) -> int:
    """A big campaign's messages, queued after the portal's "Send" (analytics.campaigns.send).
    Safe to run twice: a customer already notified for the campaign is not notified again."""
    from analytics import campaigns
    from analytics.models import Campaign

    campaign = Campaign.objects.select_related("business").filter(pk=campaign_id).first()
    if campaign is None:
        return 0
    return campaigns.deliver(campaign)
