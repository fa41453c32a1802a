"""`python manage.py seed_demo`: the demo circle. Safe to run again: nothing is duplicated."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from accounts.demo import CUSTOMER_COUNT, customer_phone, seed_accounts, staff_phone
from accounts.models import Business, Membership, User
from analytics.demo import seed_analytics
from crosspromo.demo import seed_crosspromo
from events.demo import seed_events
from integrations.demo import seed_integrations
from loyalty.demo import PURCHASE_COUNT, seed_loyalty
from notifications.demo import seed_notifications
from notifications.services import muted


class Command(BaseCommand):
    help = (
        "Load the demo circle: businesses, their staff, customers and a staff superuser; the businesses' "
        "loyalty programs, months of purchases and customers in every tier; devices and notifications; "
        "a CRM integration per provider; the analytics warehouse and churn scores."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--force",
            action="store_true",
            help="Seed even with DJANGO_DEBUG off (the demo admin has a known password).",
        )
        parser.add_argument(
            "--customers", type=int, default=CUSTOMER_COUNT, help=f"Demo customers (default {CUSTOMER_COUNT})."
        )
        parser.add_argument(
            "--purchases",
            type=int,
            default=PURCHASE_COUNT,
            help=f"About how many demo purchases (default {PURCHASE_COUNT}); only on the first run.",
        )

    def handle(self, *args, force=False, customers=CUSTOMER_COUNT, purchases=PURCHASE_COUNT, **options):
        if not settings.DEBUG and not force:
            raise CommandError("seed_demo creates an admin with a known password; with DJANGO_DEBUG off, pass --force.")
        # One bar over the stages on a terminal (the history has its own); silent elsewhere.
        stages = tqdm(total=7, desc="Demo circle", unit=" stages", disable=None)

        def stage(name: str):
            stages.set_postfix_str(name)
            stages.update()

        stage("people")
        result = seed_accounts(
            admin_phone=settings.DEMO_ADMIN_PHONE,
            admin_password=settings.DEMO_ADMIN_PASSWORD,
            customer_count=customers,
        )
        # The demo's history happened to nobody: it sends no push, SMS or email.
        with muted():
            stage("purchases")
            try:
                loyalty = seed_loyalty(
                    admin=result["admin"],
                    businesses=result["businesses"],
                    customers=result["customers"],
                    purchases=purchases,
                )
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
            stage("notifications")
            notifications = seed_notifications(result["customers"])
            stage("integrations")
            integrations = seed_integrations()
            stage("cross-promo")
            crosspromo = seed_crosspromo(result["businesses"], [customer.phone for customer in result["customers"]])
            stage("events")
            events = seed_events(result["businesses"], result["customers"])
        stage("warehouse and churn model")
        analytics = seed_analytics()
        stages.close()
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo circle ready: {Business.objects.count()} businesses, "
                f"{Membership.objects.count()} staff memberships, "
                f"{User.objects.filter(memberships__isnull=True, is_staff=False).count()} customers."
            )
        )
        tiers = ", ".join(f"{name} {count}" for name, count in loyalty["tiers"].items())
        self.stdout.write(
            f"  Loyalty{'' if loyalty['created'] else ' (already seeded)'}: {loyalty['purchases']} purchases, "
            f"{loyalty['in_circulation']} bonuses in circulation; customers per tier: {tiers}."
        )
        self.stdout.write(
            f"  Notifications: {notifications['devices']} devices, {notifications['messages']} messages in the log."
        )
        self.stdout.write(
            f"  Integrations: {integrations['integrations']} CRM connections (one per provider; "
            "one degraded, one failing), with their synced purchases."
        )
        self.stdout.write(
            f"  Cross-promo: {crosspromo['chains']} chains in every status, {crosspromo['coupons']} coupons, "
            f"{crosspromo['redeemed']} redeemed."
        )
        self.stdout.write(
            f"  Events: {events['events']} (past, running now, upcoming, proposed, cancelled), "
            f"{events['registrations']} registrations, {events['checked_in']} check-ins, {events['votes']} votes."
        )
        churn = analytics["churn"]
        scored = f"{churn['scored']} churn scores" if churn["scored"] else f"no churn scores ({churn['problem']})"
        self.stdout.write(f"  Analytics: {analytics['exported']} rows exported to the warehouse; {scored}.")
        first = result["businesses"][0].name
        self.stdout.write("")
        self.stdout.write(f"  Staff (admin):   phone {result['admin'].phone}  password {settings.DEMO_ADMIN_PASSWORD}")
        self.stdout.write(f"  Partner owner:   phone {staff_phone(1, 1)} ({first})")
        self.stdout.write(f"  Partner cashier: phone {staff_phone(1, 3)} ({first})")
        self.stdout.write(f"  Customer:        phone {customer_phone(1)} (the mobile API)")
        self.stdout.write(
            "  The portal and the app log in by phone and SMS code: the code is printed in the server's log "
            "(the console SMS backend)."
        )
