"""`python manage.py rotate_integration_keys`: re-encrypt every integration's credentials
with the first key of INTEGRATIONS_ENCRYPTION_KEYS."""

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from integrations import crypto
from integrations.models import CRMIntegration


class Command(BaseCommand):
    help = (
        "Re-encrypt all CRM credentials with the newest key. Put the new key first in "
        "INTEGRATIONS_ENCRYPTION_KEYS (keep the old ones after it), run this, then drop the old keys."
    )

    def handle(self, *args, **options):
        done, unreadable = 0, []
        with transaction.atomic():
            for integration in CRMIntegration.objects.select_for_update().exclude(credentials_encrypted=""):
                try:
                    integration.credentials_encrypted = crypto.rotate(integration.credentials_encrypted)
                except crypto.CredentialsUnreadable:
                    unreadable.append(str(integration.pk))
                    continue
                integration.save(update_fields=["credentials_encrypted", "updated_at"])
                done += 1
        if unreadable:
            raise CommandError(
                f"{done} re-encrypted; {len(unreadable)} do not decrypt with any configured key: "
                + ", ".join(unreadable)
            )
        self.stdout.write(self.style.SUCCESS(f"{done} integrations re-encrypted with the newest key."))
