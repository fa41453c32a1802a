from django.db import migrations, models
from django.utils import timezone


def restart_legacy_running_imports(apps, schema_editor):
    """Imports left running by the code before checkpoints saved no counts with their batches:
    they start again from the first row when resumed (rows already in count as already there),
    and their runs get a full IMPORT_STALE_AFTER_SECONDS from now before being taken over."""
    ImportJob = apps.get_model("integrations", "ImportJob")
    ImportJob.objects.filter(status="running").update(rows_done=0, heartbeat_at=timezone.now())


class Migration(migrations.Migration):
    dependencies = [
        ("integrations", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="importjob",
            name="attempt",
            field=models.PositiveIntegerField(default=0, verbose_name="attempts"),
        ),
        migrations.AddField(
            model_name="importjob",
            name="heartbeat_at",
            field=models.DateTimeField(blank=True, null=True, verbose_name="updated at"),
        ),
        migrations.RunPython(restart_legacy_running_imports, migrations.RunPython.noop),
    ]
