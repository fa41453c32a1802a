from django.apps import AppConfig


class CrosspromoConfig(AppConfig):
    name = "crosspromo"
    verbose_name = "Cross-promo"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from crosspromo.models import Coupon
        from svoykrug import answers

        answers.track(Coupon, lambda coupon: [f"coupons:{coupon.customer_id}"])
