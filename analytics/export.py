"""The export from PostgreSQL to the warehouse: `aggregate_transactions_to_clickhouse`.

Each stream (partners, purchases, ledger entries, coupons, event registrations) goes by a
watermark kept in PostgreSQL (`ExportState`), looking back WAREHOUSE_EXPORT_OVERLAP_MINUTES
behind it for rows that committed late, in inserts of WAREHOUSE_EXPORT_BATCH_ROWS. Exporting
a row twice changes no figure: the tables are ReplacingMergeTree, and a purchase changed
later (a refund) is exported again with a higher version (its `updated_at`), which the
queries read instead. A registration carries its event's terms too, so it goes again when
either changes (checked in, cancelled; the event moved, finished or cancelled)."""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import F, Q
from django.db.models.functions import Greatest
from django.utils import timezone

from accounts.models import Business
from analytics.models import ExportState
from analytics.warehouse import WarehouseError, get_warehouse
from crosspromo.models import Coupon
from events.models import Registration
from loyalty.models import LedgerEntry, Transaction

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stream:
    """One exported table: the rows of `model` by `time_field`, the ORM paths read, the
    warehouse columns they fill (then `version`), and each row's version."""

    name: str
    model: type
    time_field: str
    paths: tuple[str, ...]
    columns: tuple[str, ...]
    version: Callable[[tuple], int]
    # On PostgreSQL: the same rows as text, straight from COPY (columns, then version), and
    # each column's type for a backend that takes typed values.
    sql: str = ""
    types: tuple[str, ...] = ()
    # One partner's rows (a rebuild): in SQL for COPY, and as ORM filters.
    scope_sql: str = ""
    scope_q: Callable[[object], Q] | None = None
    # Computed ORM fields (name, expression) that `time_field` and `paths` may name.
    annotations: tuple[tuple[str, object], ...] = ()


def _utc(column: str) -> str:
    """A PostgreSQL timestamp as ClickHouse reads a DateTime('UTC') in TabSeparated."""
    return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"


def _micros(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


PURCHASE_FIELDS = (
    "id",
    "business_id",
    "customer_id",
    "external_id",
    "source",
    "status",
    "occurred_at",
    "recorded_at",
    "gross_amount",
    "bonuses_redeemed",
    "coupon_discount",
    "paid_amount",
    "bonuses_accrued",
    "refunded_amount",
    "money_refunded",
)
PURCHASES = Stream(
    name="purchases",
    model=Transaction,
    time_field="updated_at",
    paths=(*PURCHASE_FIELDS, "updated_at"),
    columns=PURCHASE_FIELDS,
    version=lambda values: _micros(values[-1]),  # a later change (a refund) is a higher version
    sql=f"""
        SELECT id, business_id, customer_id, external_id, source, status, {_utc("occurred_at")}, {_utc("recorded_at")},
               gross_amount, bonuses_redeemed, coupon_discount, paid_amount, bonuses_accrued, refunded_amount,
               money_refunded, (extract(epoch FROM updated_at) * 1000000)::bigint
        FROM loyalty_transaction
        WHERE updated_at < %(until)s AND updated_at >= %(start)s {{scope}}
        ORDER BY updated_at, id
    """,  # noqa: S608 (a constant: no input is formatted into it)
    types=("uuid", "uuid", "uuid", "str", "str", "str", "datetime", "datetime", *["decimal"] * 7, "int"),
    scope_sql="AND business_id = %(business)s",
    scope_q=lambda business_id: Q(business_id=business_id),
)
LEDGER = Stream(
    name="ledger_entries",
    model=LedgerEntry,
    time_field="created_at",
    paths=(
        "id",
        "account__user_id",
        "business_id",
        "lot__business_id",
        "transaction_id",
        "kind",
        "amount",
        "created_at",
    ),
    columns=("id", "customer_id", "business_id", "issuer_id", "transaction_id", "kind", "amount", "created_at"),
    version=lambda values: 1,  # entries never change
    sql=f"""
        SELECT e.id, a.user_id, e.business_id, l.business_id, e.transaction_id, e.kind, e.amount,
               {_utc("e.created_at")}, 1
        FROM loyalty_ledgerentry AS e
        JOIN loyalty_bonusaccount AS a ON a.id = e.account_id
        JOIN loyalty_bonuslot AS l ON l.id = e.lot_id
        WHERE e.created_at < %(until)s AND e.created_at >= %(start)s {{scope}}
        ORDER BY e.created_at, e.id
    """,  # noqa: S608 (a constant: no input is formatted into it)
    types=("int", "uuid", "uuid?", "uuid?", "uuid?", "str", "decimal", "datetime", "int"),
    scope_sql="AND (e.business_id = %(business)s OR l.business_id = %(business)s)",
    scope_q=lambda business_id: Q(business_id=business_id) | Q(lot__business_id=business_id),
)
COUPON_COLUMNS = (
    "id",
    "chain_id",
    "source_id",
    "target_id",
    "customer_id",
    "status",
    "issued_at",
    "expires_at",
    "redeemed_at",
    "issuing_transaction_id",
    "redeeming_transaction_id",
    "value_given",
)
COUPONS = Stream(
    name="coupons",
    model=Coupon,
    time_field="updated_at",
    # The partners are the chain's; every other column is the coupon's own field.
    paths=(*(f"chain__{c}" if c in ("source_id", "target_id") else c for c in COUPON_COLUMNS), "updated_at"),
    columns=COUPON_COLUMNS,
    version=lambda values: _micros(values[-1]),  # a later change (redeemed, void) is a higher version
    sql=f"""
        SELECT c.id, c.chain_id, ch.source_id, ch.target_id, c.customer_id, c.status, {_utc("c.issued_at")},
               {_utc("c.expires_at")}, {_utc("c.redeemed_at")}, c.issuing_transaction_id,
               c.redeeming_transaction_id, c.value_given, (extract(epoch FROM c.updated_at) * 1000000)::bigint
        FROM crosspromo_coupon AS c
        JOIN crosspromo_crosspromochain AS ch ON ch.id = c.chain_id
        WHERE c.updated_at < %(until)s AND c.updated_at >= %(start)s {{scope}}
        ORDER BY c.updated_at, c.id
    """,  # noqa: S608 (a constant: no input is formatted into it)
    types=(
        "int",
        "int",
        "uuid",
        "uuid",
        "uuid",
        "str",
        "datetime",
        "datetime",
        "datetime?",
        "uuid",
        "uuid?",
        "decimal",
        "int",
    ),
    scope_sql="AND (ch.source_id = %(business)s OR ch.target_id = %(business)s)",
    scope_q=lambda business_id: Q(chain__source_id=business_id) | Q(chain__target_id=business_id),
)
# A registration with its event's host and terms, so that the dashboard reads one partner's
# range of one table. Its time is the later change of the two rows: a registration checked in
# or cancelled, or its event moved, finished or cancelled, goes again with a higher version.
# No index serves the later of two tables' times, so on PostgreSQL the rows are found by each
# table's own `updated_at` (indexed): a row whose later change is in the window changed in it
# on one side or the other.
# (A new registration changes its event's seat count, so the event's other registrations go
# again too: at most an event's seats a run, each replacing itself.)
REGISTRATION_COLUMNS = (
    "id",
    "event_id",
    "business_id",
    "customer_id",
    "status",
    "event_status",
    "event_starts_at",
    "event_ends_at",
    "registered_at",
    "checked_in_at",
    "cancelled_at",
    "paid_amount",
    "refunded_amount",
    "updated_at",
)
# The columns read from the registration's event, and its payment over every seat on the row
# (a seat given up too late kept its price; registering again paid anew): the others are the
# registration's own fields.
REGISTRATION_PATHS = {
    "business_id": "event__business_id",
    "event_status": "event__status",
    "event_starts_at": "event__starts_at",
    "event_ends_at": "event__ends_at",
    "paid_amount": "paid_in_all",
}
_REGISTRATION_ROWS = f"""
    SELECT r.id, r.event_id, e.business_id, r.customer_id, r.status, e.status, {_utc("e.starts_at")},
           {_utc("e.ends_at")}, {_utc("r.registered_at")}, {_utc("r.checked_in_at")}, {_utc("r.cancelled_at")},
           r.paid_amount + r.kept_before, r.refunded_amount, {_utc("r.updated_at")},
           (extract(epoch FROM greatest(r.updated_at, e.updated_at)) * 1000000)::bigint
    FROM events_registration AS r
    JOIN events_event AS e ON e.id = r.event_id
"""  # noqa: S608 (a constant: no input is formatted into it)
_REGISTRATION_WINDOW = (
    "greatest(r.updated_at, e.updated_at) < %(until)s AND greatest(r.updated_at, e.updated_at) >= %(start)s"
)
REGISTRATIONS = Stream(
    name="event_registrations",
    model=Registration,
    time_field="changed_at",
    paths=(*(REGISTRATION_PATHS.get(column, column) for column in REGISTRATION_COLUMNS), "changed_at"),
    columns=REGISTRATION_COLUMNS,
    version=lambda values: _micros(values[-1]),  # the later change of the registration and its event
    # Two halves, each served by an index: the rows whose registration changed in the window,
    # and those whose event did (and their registration not). Ordered by version, then id.
    sql=f"""
        {_REGISTRATION_ROWS} WHERE r.updated_at >= %(start)s AND {_REGISTRATION_WINDOW} {{scope}}
        UNION ALL
        {_REGISTRATION_ROWS}
        WHERE e.updated_at >= %(start)s AND r.updated_at < %(start)s AND {_REGISTRATION_WINDOW} {{scope}}
        ORDER BY 15, 1
    """,
    types=(
        "int",
        "int",
        "uuid",
        "uuid",
        "str",
        "str",
        "datetime",
        "datetime",
        "datetime",
        "datetime?",
        "datetime?",
        "decimal",
        "decimal",
        "datetime",
        "int",
    ),
    scope_sql="AND e.business_id = %(business)s",
    scope_q=lambda business_id: Q(event__business_id=business_id),
    annotations=(
        ("changed_at", Greatest("updated_at", "event__updated_at")),
        ("paid_in_all", F("paid_amount") + F("kept_before")),
    ),
)
STREAMS = (PURCHASES, LEDGER, COUPONS, REGISTRATIONS)


def _batches(iterable, size: int):
    batch = []
    for item in iterable:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def export_stream(stream: Stream, since: datetime | None = None) -> int:
    """Export the stream's rows whose time is in [start, now) — start being `since`, else
    the watermark less the overlap, else the beginning — and move the watermark to now."""
    state, _created = ExportState.objects.get_or_create(name=stream.name)
    until = timezone.now()
    start = since
    if start is None and state.watermark is not None:
        start = state.watermark - timedelta(minutes=settings.WAREHOUSE_EXPORT_OVERLAP_MINUTES)
    try:
        count = _rows(stream, start, until)
    except WarehouseError as exc:
        ExportState.objects.filter(pk=stream.name).update(last_error=str(exc)[:2000], last_run_at=timezone.now())
        raise
    watermark = until if state.watermark is None else max(until, state.watermark)
    ExportState.objects.filter(pk=stream.name).update(
        watermark=watermark,
        last_run_at=timezone.now(),
        last_rows=count,
        total_rows=F("total_rows") + count,
        last_error="",
    )
    return count


def _rows(stream: Stream, start: datetime | None, until: datetime, business_id=None) -> int:
    if connection.vendor == "postgresql":
        return _copy_rows(stream, start, until, business_id)
    return _orm_rows(stream, start, until, business_id)


def rebuild_business(business_id) -> int:
    """Export all of one partner's purchases, ledger entries, coupons and its events'
    registrations again (after a repair in PostgreSQL, or a warehouse restored from an old
    backup). Rows come back with the same versions, so nothing is counted twice; the
    watermarks do not move."""
    until = timezone.now()
    export_businesses()
    return sum(_rows(stream, None, until, business_id) for stream in STREAMS)


def _orm_rows(stream: Stream, start: datetime | None, until: datetime, business_id=None) -> int:
    """The rows through the ORM, as typed values (SQLite, the embedded default)."""
    rows = stream.model.objects.annotate(**dict(stream.annotations)).filter(**{f"{stream.time_field}__lt": until})
    if business_id is not None:
        rows = rows.filter(stream.scope_q(business_id))
    if start is not None:
        rows = rows.filter(**{f"{stream.time_field}__gte": start})
    rows = rows.order_by(stream.time_field, "pk").values_list(*stream.paths)
    size = settings.WAREHOUSE_EXPORT_BATCH_ROWS
    warehouse, count, width = get_warehouse(), 0, len(stream.columns)
    for batch in _batches(rows.iterator(chunk_size=size), size):
        prepared = [(*values[:width], stream.version(values)) for values in batch]
        count += warehouse.insert(stream.name, [*stream.columns, "version"], prepared, batch_size=size)
    return count


def _copy_rows(stream: Stream, start: datetime | None, until: datetime, business_id=None) -> int:
    """The rows as PostgreSQL's COPY text, which is ClickHouse's TabSeparated (the same
    escapes, NULL as \\N), handed to the warehouse in batches: no Python value per cell,
    which is what the ORM path spends its time on."""
    size = settings.WAREHOUSE_EXPORT_BATCH_ROWS
    warehouse, count = get_warehouse(), 0
    columns = [*stream.columns, "version"]
    params = {"until": until, "start": start or datetime(1970, 1, 1, tzinfo=UTC), "business": business_id}
    sql = stream.sql.format(scope=stream.scope_sql if business_id is not None else "")
    pending, lines = b"", []
    with connection.cursor() as cursor, cursor.cursor.copy(f"COPY ({sql}) TO STDOUT", params) as copy:
        for chunk in copy:
            parts = (pending + bytes(chunk)).split(b"\n")
            pending = parts.pop()
            lines.extend(parts)
            if len(lines) >= size:
                count += warehouse.insert_tsv(stream.name, columns, stream.types, lines)
                lines = []
    if pending:
        lines.append(pending)
    if lines:
        count += warehouse.insert_tsv(stream.name, columns, stream.types, lines)
    return count


def export_businesses() -> int:
    """Every partner, each run (a few hundred rows without a change time of their own)."""
    version = _micros(timezone.now())
    rows = [(*values, version) for values in Business.objects.values_list("pk", "name", "category")]
    return get_warehouse().insert("businesses", ["id", "name", "category", "version"], rows)


def aggregate_transactions_to_clickhouse(since: datetime | None = None) -> int:
    """The catalogue's export: partners, and the purchases, ledger entries, coupons and event
    registrations changed since `since` (default: each stream's watermark less the overlap).
    Returns the rows of the streams exported (partners not counted). One run at a time per
    deployment (a cache lock); a run that finds another going returns 0.

    With the warehouse down a run raises WarehouseError: no watermark moves, each stream
    shows the error (admin), and the next run after the warehouse is back exports all that
    was missed."""
    lock = "warehouse-export"
    if not cache.add(lock, 1, timeout=15 * 60):
        return 0
    try:
        try:
            export_businesses()
        except WarehouseError as exc:
            _record_failure(exc)
            raise
        return sum(export_stream(stream, since) for stream in STREAMS)
    finally:
        cache.delete(lock)


def _record_failure(exc: WarehouseError) -> None:
    """A run that failed before its streams: each stream shows the error, its watermark kept."""
    for stream in STREAMS:
        ExportState.objects.get_or_create(name=stream.name)
    ExportState.objects.filter(name__in=[stream.name for stream in STREAMS]).update(
        last_error=str(exc)[:2000], last_run_at=timezone.now()
    )


def export_lag_seconds() -> float | None:
    """How far behind the purchases in the warehouse are (None before the first export)."""
    state = ExportState.objects.filter(name=PURCHASES.name).first()
    return state.lag_seconds if state else None


def ensure_fresh() -> None:
    """Without a Celery worker (the embedded defaults) nothing runs the minutely export, so
    a page about to read the warehouse exports first when the last run is older than
    WAREHOUSE_INLINE_EXPORT_SECONDS. With a worker it does nothing."""
    if not settings.CELERY_TASK_ALWAYS_EAGER:
        return
    state = ExportState.objects.filter(name=PURCHASES.name).first()
    stale = timezone.now() - timedelta(seconds=settings.WAREHOUSE_INLINE_EXPORT_SECONDS)
    if state is None or state.last_run_at is None or state.last_run_at < stale:
        try:
            aggregate_transactions_to_clickhouse()
        except WarehouseError:
            logger.exception("Inline warehouse export failed")
