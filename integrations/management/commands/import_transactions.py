"""`python manage.py import_transactions FILE --business SLUG [--map column=field ...] [--dry-run]`."""

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from accounts.models import Business
from integrations.imports import FIELDS, ImportFileError, count_rows, import_csv, parse_mapping


class Command(BaseCommand):
    help = (
        "Import a partner's purchase history from a CSV file with the columns "
        f"{', '.join(FIELDS)} (or map yours with --map). Safe to run again: purchases already "
        "there are counted as duplicates. Ends with the rows it rejected and why."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", help="Path to the CSV file (UTF-8 or Windows-1251; comma, semicolon or tab).")
        parser.add_argument("--business", required=True, help="The business's slug.")
        parser.add_argument(
            "--map",
            action="append",
            default=[],
            metavar="COLUMN=FIELD",
            help=f"Use COLUMN of the file for FIELD ({', '.join(FIELDS)}); repeat for each column.",
        )
        parser.add_argument("--dry-run", action="store_true", help="Check every row, write nothing.")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar (for logs).")
        parser.add_argument("--show", type=int, default=50, help="How many rejected rows to print (default 50).")

    def handle(self, *args, file, business, map, dry_run, no_progress, show, **options):
        target = Business.objects.filter(slug=business).first()
        if target is None:
            raise CommandError(f"No business with the slug {business!r}.")
        try:
            mapping = parse_mapping(map)
            with open(file, "rb") as binary:
                total = count_rows(binary)
                with tqdm(
                    total=total, unit="rows", disable=no_progress, file=self.stderr._out, dynamic_ncols=True
                ) as bar:

                    def progress(rows):
                        bar.update(rows - bar.n)

                    report = import_csv(binary, business=target, mapping=mapping, dry_run=dry_run, progress=progress)
        except FileNotFoundError:
            raise CommandError(f"No such file: {file}") from None
        except ImportFileError as exc:
            raise CommandError(str(exc)) from None
        except UnicodeDecodeError as exc:
            # The encoding is told from the file's start; a later part in another one stops here.
            raise CommandError(f"The file is not all in one encoding (UTF-8 or Windows-1251): {exc}.") from None

        verb = "would be imported" if dry_run else "imported"
        self.stdout.write(
            self.style.SUCCESS(
                f"{report.rows} rows: {report.imported} {verb}, {report.duplicates} already there, "
                f"{report.rejected} rejected."
            )
        )
        if report.errors:
            self.stdout.write(self.style.WARNING("Rejected rows (line: reason):"))
            for line, reason in report.errors[:show]:
                self.stdout.write(f"  {line}: {reason}")
            if report.rejected > min(show, len(report.errors)):
                self.stdout.write(f"  … and {report.rejected - min(show, len(report.errors))} more.")
