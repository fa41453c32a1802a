"""`python manage.py create_api_key BUSINESS_SLUG [--name NAME]`: a new partner API key, printed once."""

from django.core.management.base import BaseCommand, CommandError

from accounts.models import Business
from accounts.services import create_api_key


class Command(BaseCommand):
    help = "Create a partner API key for a business and print it. It is stored hashed and cannot be shown again."

    def add_arguments(self, parser):
        parser.add_argument("business_slug")
        parser.add_argument("--name", default="API", help="What the key is for, e.g. 'POS front desk'.")

    def handle(self, *args, business_slug, name, **options):
        business = Business.objects.filter(slug=business_slug).first()
        if business is None:
            raise CommandError(f"No business with slug {business_slug!r}.")
        api_key, raw_key = create_api_key(business=business, name=name)
        self.stdout.write(f"API key for {business.name} ({api_key.name}), shown once — store it now:")
        self.stdout.write(raw_key)
