"""`python manage.py verify_ledger`: prove the books balance, or show where they do not."""

import sys

from django.core.management.base import BaseCommand

from loyalty.models import BonusAccount, BonusLot, LedgerEntry
from loyalty.selectors import ledger_mismatches


class Command(BaseCommand):
    help = (
        "Check that every account's balance equals the sum of its ledger entries and of its lots' "
        "remainders, and every lot's remainder the sum of its entries. Exits 1 on any mismatch."
    )

    def add_arguments(self, parser):
        parser.add_argument("--show", type=int, default=20, help="How many mismatches to print (default 20).")

    def handle(self, *args, show=20, **options):
        mismatches = ledger_mismatches(limit=show)
        if not mismatches:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Ledger balances: {BonusAccount.objects.count()} accounts, {BonusLot.objects.count()} lots, "
                    f"{LedgerEntry.objects.count()} entries."
                )
            )
            return
        self.stderr.write(self.style.ERROR(f"Ledger does NOT balance; first {len(mismatches)} mismatches:"))
        for mismatch in mismatches:
            self.stderr.write(f"  {mismatch.what} {mismatch.id}: expected {mismatch.expected}, found {mismatch.found}")
        sys.exit(1)
