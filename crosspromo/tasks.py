"""Celery tasks of the cross-promo app: thin wrappers, each safe to run twice."""

from celery import shared_task

from crosspromo import services


@shared_task(name="crosspromo.tasks.advance_chains")
def advance_chains() -> int:
    """Every 5 minutes: start accepted chains whose time has come, end those past their end."""
    return services.advance_chains()


@shared_task(name="crosspromo.tasks.expire_coupons")
def expire_coupons() -> int:
    """Every 10 minutes: coupons past their time become expired and free their budget."""
    return services.expire_coupons()


@shared_task(name="crosspromo.tasks.reward_referrals")
def reward_referrals() -> int:
    """Every hour: pay referrals whose qualifying purchase has stood REFERRAL_HOLD_DAYS unrefunded."""
    return services.reward_referrals()
