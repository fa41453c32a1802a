"""Celery tasks of the loyalty app: thin wrappers around services, each safe to run twice,
also at the same time (the services lock accounts and decide by unique keys)."""

from celery import shared_task

from loyalty import services


@shared_task(name="loyalty.tasks.expire_bonuses")
def expire_bonuses() -> int:
    """Nightly: expire what is left of every lot past its date. Returns customers affected."""
    return len(services.check_bonus_expiration())


@shared_task(name="loyalty.tasks.recompute_tiers")
def recompute_tiers() -> int:
    """Nightly: every account's tier from its last 365 days. Returns how many changed tier."""
    return services.recompute_all_tiers()


@shared_task(name="loyalty.tasks.grant_birthday_bonuses")
def grant_birthday_bonuses() -> int:
    """Daily: birthday bonuses of today. Returns how many were granted."""
    return services.grant_birthday_bonuses()


@shared_task(name="loyalty.tasks.remind_expiring_bonuses")
def remind_expiring_bonuses() -> int:
    """Daily: one message per customer whose bonuses expire in 7 days, one for 1 day."""
    return services.remind_expiring_bonuses(7) + services.remind_expiring_bonuses(1)
