"""Demo data of the notifications app: a few customers with the app on their phones, some
preferences, and the messages the circle's real events send them (through the console
backends, so nothing leaves the machine). Idempotent like the rest of seed_demo."""

import logging

from django.db import transaction

from accounts.models import User
from loyalty.services import remind_expiring_bonuses
from notifications import services
from notifications.models import Device, NotificationLog

DEVICE_COUNT = 12


def seed_notifications(customers: list[User]) -> dict:
    """Devices for the first DEVICE_COUNT customers, emails and preferences for some, then the
    expiry reminders of today and a promotion to those who agreed to hear about them."""
    # The console backends log every message at WARNING; the demo's are not news.
    logging.getLogger("notifications.channels").setLevel(logging.ERROR)
    for index, customer in enumerate(customers[:DEVICE_COUNT]):
        if not Device.objects.filter(token=f"demo-fcm-token-{index:03d}").exists():
            services.register_device(
                user=customer,
                token=f"demo-fcm-token-{index:03d}",
                platform="ios" if index % 3 == 0 else "android",
                app_version="1.0.0",
            )
        if index % 4 == 0 and not customer.email:
            User.objects.filter(pk=customer.pk).update(email=f"demo{index}@svoykrug.example")
        if index % 5 == 1:
            services.update_preferences(user=customer, promotions=False)
    with transaction.atomic():
        reminded = remind_expiring_bonuses(7) + remind_expiring_bonuses(1)
    for customer in User.objects.filter(pk__in=[c.pk for c in customers[:DEVICE_COUNT]]):
        services.notify(
            customer,
            "promotion",
            {"title": "Неделя кофе", "text": "Двойные бонусы в Кофейне «Зерно» до воскресенья"},
            event_key="demo-promotion-coffee-week",
        )
    return {"devices": Device.objects.count(), "reminded": reminded, "messages": NotificationLog.objects.count()}
