"""The warehouse's schema: numbered SQL files in `analytics/warehouse_migrations/`, applied in
order by `python manage.py migrate_warehouse` and recorded in the warehouse itself
(`schema_migrations`), so running it again applies nothing twice."""

from pathlib import Path

from django.utils import timezone

from analytics.warehouse import Warehouse, get_warehouse

MIGRATIONS_DIR = Path(__file__).resolve().parent / "warehouse_migrations"


def migration_files() -> list[Path]:
    return sorted(MIGRATIONS_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql"))


def statements(path: Path) -> list[str]:
    """The file's statements: `;`-separated, `--` comment lines dropped."""
    text = "\n".join(
        line for line in path.read_text(encoding="utf-8").splitlines() if not line.strip().startswith("--")
    )
    return [statement.strip() for statement in text.split(";") if statement.strip()]


def applied(warehouse: Warehouse) -> set[str]:
    warehouse.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (name String, applied_at DateTime('UTC')) "
        "ENGINE = MergeTree ORDER BY name"
    )
    return {name for (name,) in warehouse.execute("SELECT DISTINCT name FROM schema_migrations")}


def migrate(warehouse: Warehouse | None = None, *, reset_export: bool = True) -> list[str]:
    """Apply the migrations not yet recorded; returns their names. Each statement is written
    to be harmless if repeated (IF NOT EXISTS), so a run cut short can simply run again.
    On an empty warehouse the export's watermarks are reset (unless `reset_export` is off:
    a caller without the database), so everything is sent again."""
    warehouse = warehouse or get_warehouse()
    done = applied(warehouse)
    new = []
    for path in migration_files():
        if path.stem in done:
            continue
        for statement in statements(path):
            warehouse.execute(statement)
        warehouse.insert("schema_migrations", ["name", "applied_at"], [(path.stem, timezone.now())])
        new.append(path.stem)
    if new and not done and reset_export:
        # An empty warehouse (new, or lost and made again): whatever the export's watermarks
        # say was sent is not there, so the next export starts from the beginning.
        from analytics.models import ExportState

        ExportState.objects.all().delete()
    return new
