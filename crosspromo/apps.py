from django.apps import AppConfig


class CrosspromoConfig(AppConfig):
    name = "crosspromo"
    verbose_name = "Cross-promo"
    default_auto_field = "django.db.models.BigAutoField"
