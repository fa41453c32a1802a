"""`python manage.py migrate_warehouse`: create or update the warehouse's tables."""

from django.core.management.base import BaseCommand, CommandError

from analytics import schema
from analytics.warehouse import WarehouseError, get_warehouse


class Command(BaseCommand):
    help = "Apply the warehouse's schema migrations (analytics/warehouse_migrations/); safe to run again."

    def handle(self, *args, **options):
        warehouse = get_warehouse()
        try:
            applied = schema.migrate(warehouse)
        except WarehouseError as exc:
            raise CommandError(f"The warehouse ({warehouse.backend}) refused: {exc}") from exc
        if applied:
            self.stdout.write(self.style.SUCCESS(f"Warehouse ({warehouse.backend}): applied {', '.join(applied)}."))
        else:
            self.stdout.write(f"Warehouse ({warehouse.backend}): up to date.")
