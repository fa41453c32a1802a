"""`python manage.py seed_demo`: the demo circle. Safe to run again: nothing is duplicated."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from accounts.demo import customer_phone, seed_accounts, staff_phone
from accounts.models import Business, Membership, User


class Command(BaseCommand):
    help = "Load the demo circle: businesses, their staff, customers and a staff superuser."

    def add_arguments(self, parser):
        parser.add_argument(
            "--force",
            action="store_true",
            help="Seed even with DJANGO_DEBUG off (the demo admin has a known password).",
        )

    def handle(self, *args, force=False, **options):
        if not settings.DEBUG and not force:
            raise CommandError("seed_demo creates an admin with a known password; with DJANGO_DEBUG off, pass --force.")
        result = seed_accounts(admin_phone=settings.DEMO_ADMIN_PHONE, admin_password=settings.DEMO_ADMIN_PASSWORD)
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo circle ready: {Business.objects.count()} businesses, "
                f"{Membership.objects.count()} staff memberships, "
                f"{User.objects.filter(memberships__isnull=True, is_staff=False).count()} customers."
            )
        )
        self.stdout.write(f"  Admin login:     phone {result['admin'].phone}  password {settings.DEMO_ADMIN_PASSWORD}")
        self.stdout.write(f"  Partner owner:   phone {staff_phone(1, 1)} ({result['businesses'][0].name})")
        self.stdout.write(f"  Customer:        phone {customer_phone(1)} (log in with an SMS code; see the server log)")
