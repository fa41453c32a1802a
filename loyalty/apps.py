from django.apps import AppConfig
from django.db.models.signals import post_migrate


class LoyaltyConfig(AppConfig):
    name = "loyalty"
    verbose_name = "Loyalty"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from loyalty.models import LoyaltyProgram, StatusTier
        from svoykrug import answers

        # The customer's own bonuses are renewed by the one lock helper every bonus write takes
        # (loyalty.services.ledger._lock_account); the tiers are the circle's, edited by staff.
        answers.track(StatusTier, lambda tier: ["tiers"])
        # Read through the cache by every purchase (loyalty.services.ledger.get_program).
        answers.track(LoyaltyProgram, lambda program: [f"program:{program.business_id}"])
        # A migration may change rows without signals (the tiers are seeded by one): nothing
        # cached from before it is used after it.
        post_migrate.connect(_retire_cached, sender=self, dispatch_uid="answers:post_migrate")


def _retire_cached(**kwargs) -> None:
    from svoykrug import answers

    answers.changed(answers.EVERYTHING)
