"""Celery tasks of the accounts app: thin wrappers around services, safe to run twice."""

from celery import shared_task

from accounts import services


@shared_task(name="accounts.tasks.flush_expired_tokens")
def flush_expired_tokens() -> int:
    return services.flush_expired_tokens()
