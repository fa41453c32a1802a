"""System checks: the credentials' encryption keys are well formed, and set in production."""

from cryptography.fernet import Fernet
from django.conf import settings
from django.core.checks import Error, Tags, Warning, register


@register()
def encryption_keys_valid(app_configs, **kwargs):
    errors = []
    for index, key in enumerate(settings.INTEGRATIONS_ENCRYPTION_KEYS):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            errors.append(
                Error(
                    f"INTEGRATIONS_ENCRYPTION_KEYS: key #{index + 1} is not a Fernet key.",
                    hint="Make one with: python -c 'from cryptography.fernet import Fernet; "
                    "print(Fernet.generate_key().decode())'",
                    id="integrations.E001",
                )
            )
    return errors


@register(Tags.security, deploy=True)
def encryption_keys_set(app_configs, **kwargs):
    if settings.INTEGRATIONS_ENCRYPTION_KEYS:
        return []
    return [
        Warning(
            "INTEGRATIONS_ENCRYPTION_KEYS is not set: CRM credentials are encrypted with a key derived "
            "from DJANGO_SECRET_KEY, so changing the secret key makes them unreadable.",
            hint="Set INTEGRATIONS_ENCRYPTION_KEYS to a Fernet key, then run manage.py rotate_integration_keys.",
            id="integrations.W001",
        )
    ]
