from django.apps import AppConfig


class IntegrationsConfig(AppConfig):
    name = "integrations"
    verbose_name = "CRM integrations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from integrations import checks  # noqa: F401 (registers the system checks)
