"""`python manage.py evaluate_churn --as-of DATE`: the churn model's holdout metrics beside the
recency baseline's, for a model trained on data up to the end of DATE. Stores nothing."""

from datetime import date

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from analytics import churn
from analytics.warehouse import WarehouseError


def day(value: str) -> date:
    """An --as-of day, not after today."""
    parsed = date.fromisoformat(value)
    if parsed > timezone.localdate():
        raise CommandError(f"--as-of {value} is in the future.")
    return parsed


class Command(BaseCommand):
    help = (
        "Fit the churn model and a recency-only baseline on features at DATE − 2·horizon labelled by the next "
        "horizon, and print both one's metrics on features at DATE − horizon labelled up to the end of DATE. "
        "Nothing is stored (score_churn and the nightly task train and store)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--as-of", required=True, help="YYYY-MM-DD: only data up to the end of this day")

    def handle(self, *args, **options):
        as_of = day(options["as_of"])
        try:
            evaluation = churn.evaluate(as_of)
        except churn.ChurnError as exc:
            raise CommandError(str(exc)) from exc
        except WarehouseError as exc:
            raise CommandError(f"The warehouse refused: {exc}") from exc
        self.stdout.write(
            f"Churn model for data before {timezone.localtime(evaluation.as_of):%Y-%m-%d %H:%M %Z}, "
            f"churn = no purchase in {evaluation.horizon_days} days"
        )
        for name in ("training", "holdout"):
            window = evaluation.details[name]
            self.stdout.write(
                f"{name.capitalize():9} features at {window['features_at'][:10]}, labels up to "
                f"{window['labels_until'][:10]}: {window['customers']} customers "
                f"({window['examples']} rows in the circle and at partners), {window['churn_rate']:.0%} churned"
            )
        self.stdout.write(f"\n{'Holdout':14}{'model':>10}{'recency baseline':>20}")
        for key, label in (("roc_auc", "ROC AUC"), ("pr_auc", "PR AUC"), ("brier", "Brier score")):
            self.stdout.write(
                f"{label:14}{evaluation.model_metrics[key]:>10.4f}{evaluation.baseline_metrics[key]:>20.4f}"
            )
        self.stdout.write("(Brier score: lower is better.)\n")
        if evaluation.beats_baseline:
            self.stdout.write(self.style.SUCCESS("The model beats the recency baseline on ROC AUC."))
        else:
            self.stdout.write(
                self.style.WARNING(
                    "The model does not beat the recency baseline on ROC AUC: trained for this day, it would not "
                    "replace the current model."
                )
            )
