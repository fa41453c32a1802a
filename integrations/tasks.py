"""Celery tasks of the integrations app: thin wrappers around integrations.services."""

import logging

from celery import shared_task

from integrations import services
from integrations.models import CRMIntegration
from integrations.providers.base import ProviderUnavailable

logger = logging.getLogger(__name__)


@shared_task(name="integrations.tasks.sync_due_integrations")
def sync_due_integrations() -> int:
    """Every few minutes: queue a sync of each active integration whose interval is up."""
    due = services.due_integrations()
    for integration_id in due:
        sync_integration.delay(str(integration_id))
    return len(due)


@shared_task(name="integrations.tasks.sync_integration")
def sync_integration(integration_id: str) -> dict:
    """One sync. Its failures are counted on the integration (health), not retried here: the
    HTTP calls already retried with backoff, and the next interval tries again."""
    integration = CRMIntegration.objects.select_related("business").filter(pk=integration_id, is_active=True).first()
    if integration is None:
        return {"skipped": "inactive"}
    try:
        return services.sync_integration(integration).as_dict()
    except services.SyncBusy:
        return {"skipped": "busy"}
    except services.ProviderError as exc:
        return {"failed": exc.message}


@shared_task(
    name="integrations.tasks.process_webhook_delivery",
    autoretry_for=(ProviderUnavailable,),
    retry_backoff=30,
    retry_backoff_max=3600,
    max_retries=8,
)
def process_webhook_delivery(delivery_id: int) -> str:
    """Apply a stored webhook; a CRM that is down when we ask it for details is asked again later."""
    return services.process_delivery(delivery_id).status


@shared_task(name="integrations.tasks.delete_old_webhooks")
def delete_old_webhooks() -> int:
    """Nightly: raw webhook bodies past their retention."""
    return services.delete_old_webhooks()


@shared_task(name="integrations.tasks.delete_abandoned_uploads")
def delete_abandoned_uploads() -> int:
    """Nightly: CSV uploads the partner never confirmed, with their files."""
    from integrations import imports

    return imports.delete_abandoned_uploads()


@shared_task(name="integrations.tasks.run_import")
def run_import(job_id: str) -> str:
    """An uploaded import, to its end. Safe to deliver again: a job running in a live worker
    is left to it, one whose worker died is resumed, a finished one is not run again."""
    from integrations import imports

    return imports.run_import_job(job_id).status


@shared_task(name="integrations.tasks.resume_stale_imports")
def resume_stale_imports() -> int:
    """Every few minutes: queue again the imports whose worker died or whose task was lost."""
    from integrations import imports

    job_ids = imports.resumable_import_ids()
    for job_id in job_ids:
        run_import.delay(str(job_id))
    return len(job_ids)
