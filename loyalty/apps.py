from django.apps import AppConfig


class LoyaltyConfig(AppConfig):
    name = "loyalty"
    verbose_name = "Loyalty"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from loyalty.models import StatusTier
        from svoykrug import answers

        # The customer's own bonuses are renewed by the one lock helper every bonus write takes
        # (loyalty.services.ledger._lock_account); the tiers are the circle's, edited by staff.
        answers.track(StatusTier, lambda tier: ["tiers"])
