"""`python manage.py score_churn --as-of DATE [--output FILE.csv] [--business ID]`: train the
churn model on data up to the end of DATE only, then write every customer's churn risk at
that moment as CSV (customer_id, phone, risk; riskiest first)."""

import uuid

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from accounts.models import Business
from analytics import churn
from analytics.management.commands.evaluate_churn import day
from analytics.services import cutoff
from analytics.warehouse import WarehouseError


class Command(BaseCommand):
    help = (
        "Train the churn model on data up to the end of --as-of (stored; it becomes current only if it beats the "
        "recency baseline), and write each customer's risk of no purchase in the next CHURN_HORIZON_DAYS as CSV. "
        "If the new model does not beat the baseline, the newest earlier one that did scores instead."
    )

    def add_arguments(self, parser):
        parser.add_argument("--as-of", required=True, help="YYYY-MM-DD: only data up to the end of this day")
        parser.add_argument("--output", help="the CSV file to write (default: standard output)")
        parser.add_argument("--business", help="a partner's id: the risk of no purchase there (default: the circle)")

    def handle(self, *args, **options):
        as_of = day(options["as_of"])
        business = options.get("business")
        if business:
            try:
                business = uuid.UUID(business)
            except ValueError as exc:
                raise CommandError(f"--business {business!r} is not a partner's id.") from exc
            if not Business.objects.filter(pk=business).exists():
                raise CommandError(f"No partner {business}.")
        try:
            trained, model = churn.train_and_choose(as_of)
            scores = churn.score(model, cutoff(as_of), business_id=business or None)
        except churn.ChurnError as exc:
            raise CommandError(str(exc)) from exc
        except WarehouseError as exc:
            raise CommandError(f"The warehouse refused: {exc}") from exc

        report = self.stderr if not options.get("output") else self.stdout
        report.write(
            f"Trained churn model {trained.pk}: holdout ROC AUC {trained.metrics['roc_auc']:.4f}, recency baseline "
            f"{trained.baseline_metrics['roc_auc']:.4f}" + ("" if trained.beats_baseline else " — not better")
        )
        if model.pk != trained.pk:
            report.write(f"Scoring with model {model.pk} (data before {timezone.localtime(model.as_of):%Y-%m-%d}).")
        if options.get("output"):
            with open(options["output"], "w", newline="", encoding="utf-8") as target:
                count = churn.write_csv(scores, target)
            self.stdout.write(self.style.SUCCESS(f"Wrote {count} customers' churn risk to {options['output']}."))
        else:
            churn.write_csv(scores, self.stdout)
