"""CSV imports of a partner's purchase history (`manage.py import_transactions` and the portal).

The file is streamed: rows are read, checked and handed to `loyalty.services.import_purchases`
IMPORT_BATCH_ROWS at a time, so memory does not grow with the file. Every row ends up
imported, a duplicate (its id is already there: an import run twice changes nothing) or
rejected with its line number and the reason.

Columns map to the fields `external_id`, `phone`, `amount`, `occurred_at`. Without a
mapping a column is taken by its field name or a usual header (`Телефон`, `Сумма`, ...).
The delimiter (`,` `;` or tab) and the encoding (UTF-8, with or without BOM, or
Windows-1251 as Excel saves it in Russia) are detected."""

import csv
import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from accounts.models import Business
from accounts.phones import InvalidPhone, normalize_phone
from integrations.models import ImportJob
from loyalty import services as loyalty
from loyalty.models import Transaction
from loyalty.money import parse_amount

logger = logging.getLogger(__name__)

FIELDS = ("external_id", "phone", "amount", "occurred_at")
ALIASES = {
    "external_id": {"external_id", "id", "номер", "номер чека", "чек", "id покупки", "receipt", "order_id"},
    "phone": {"phone", "телефон", "номер телефона", "мобильный", "phone_number", "tel"},
    "amount": {"amount", "сумма", "сумма чека", "total", "sum"},
    "occurred_at": {"occurred_at", "дата", "дата и время", "время", "date", "datetime", "created_at"},
}
DATE_FORMATS = ("%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d.%m.%Y", "%Y-%m-%d", "%d/%m/%Y %H:%M", "%d/%m/%Y")


class ImportFileError(Exception):
    """The file as a whole cannot be imported (no header, a required column missing)."""


@dataclass
class ImportReport:
    rows: int = 0
    imported: int = 0
    duplicates: int = 0
    rejected: int = 0
    errors: list = field(default_factory=list)  # (line, reason), at most IMPORT_REPORT_MAX_ERRORS
    dry_run: bool = False

    def reject(self, line: int, reason: str) -> None:
        self.rejected += 1
        if len(self.errors) < settings.IMPORT_REPORT_MAX_ERRORS:
            self.errors.append((line, reason))


# --- Reading the file ----------------------------------------------------------------------


def open_text(binary) -> io.TextIOWrapper:
    """The binary file as text, in the encoding its start reads in."""
    head = binary.read(64 * 1024)
    binary.seek(0)
    try:
        head.decode("utf-8-sig")
        encoding = "utf-8-sig"
    except UnicodeDecodeError as exc:
        # A multi-byte letter cut at the end of the sample is still UTF-8.
        encoding = "utf-8-sig" if exc.start >= len(head) - 3 else "cp1251"
    return io.TextIOWrapper(binary, encoding=encoding, newline="")


def _dialect(sample: str):
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        return csv.excel


def parse_mapping(pairs: list[str]) -> dict[str, str]:
    """`["Телефон=phone", ...]` → {column: field}; unknown fields are an error."""
    mapping = {}
    for pair in pairs:
        column, sep, target = pair.rpartition("=")
        if not sep or not column.strip():
            raise ImportFileError(f"A mapping is column=field, got {pair!r}.")
        if target.strip() not in FIELDS:
            raise ImportFileError(f"Unknown field {target!r}: the fields are {', '.join(FIELDS)}.")
        mapping[column.strip()] = target.strip()
    return mapping


def resolve_columns(header: list[str], mapping: dict[str, str]) -> dict[str, int]:
    """{field: column index}: the explicit mapping first, then names and usual headers."""
    normal = [name.strip().lower() for name in header]
    resolved = {}
    for column, target in mapping.items():
        if column.strip().lower() not in normal:
            raise ImportFileError(f"The file has no column {column!r}; it has: {', '.join(header)}.")
        resolved[target] = normal.index(column.strip().lower())
    for target in FIELDS:
        if target in resolved:
            continue
        for index, name in enumerate(normal):
            if name in ALIASES[target] and index not in resolved.values():
                resolved[target] = index
                break
    missing = [target for target in FIELDS if target not in resolved]
    if missing:
        raise ImportFileError(
            f"No column for {', '.join(missing)}. Map one with column=field; the file has: {', '.join(header)}."
        )
    return resolved


def _rows(text) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    sample = text.read(16 * 1024)
    text.seek(0)
    reader = csv.reader(text, _dialect(sample))
    try:
        header = next(reader)
    except StopIteration:
        raise ImportFileError("The file is empty.") from None
    except csv.Error as exc:
        raise ImportFileError(f"The file is not CSV: {exc}.") from exc

    def rows():
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield reader.line_num, exc
                continue
            if any(value.strip() for value in values):
                yield reader.line_num, values

    return header, rows()


# --- Checking a row --------------------------------------------------------------------------


class RowError(ValueError):
    pass


def check_row(
    values: list[str], columns: dict[str, int], *, line: int, tz, now: datetime, phones: dict | None = None
) -> loyalty.ImportRow:
    """One row as a purchase, or RowError. `phones` remembers numbers already read: a
    history repeats its customers, and reading a number is the dearest part of a row."""

    def value(name):
        index = columns[name]
        return values[index].strip() if index < len(values) else ""

    external_id = value("external_id")
    if not external_id:
        raise RowError("no purchase id")
    if len(external_id) > 100:
        raise RowError("the purchase id is longer than 100 characters")
    raw_phone = value("phone")
    if not raw_phone:
        raise RowError("no phone")
    phone = phones.get(raw_phone) if phones is not None else None
    if phone is None:
        try:
            phone = normalize_phone(raw_phone)
        except InvalidPhone:
            raise RowError(f"the phone {raw_phone!r} is not a valid number") from None
        if phones is not None and len(phones) < 100_000:
            phones[raw_phone] = phone
    amount = _amount(value("amount"))
    occurred_at = _when(value("occurred_at"), tz)
    if occurred_at > now + timedelta(seconds=settings.LOYALTY_FUTURE_SKEW_SECONDS):
        raise RowError("the date is in the future")
    if occurred_at < now - timedelta(days=settings.IMPORT_MAX_AGE_DAYS):
        raise RowError(f"the date is more than {settings.IMPORT_MAX_AGE_DAYS} days ago")
    return loyalty.ImportRow(line=line, external_id=external_id, phone=phone, amount=amount, occurred_at=occurred_at)


def _amount(text: str) -> Decimal:
    try:
        amount = parse_amount(text)
    except ValueError:
        raise RowError(f"the amount {text!r} is not a number") from None
    if amount <= 0:
        raise RowError(f"the amount {text!r} is not above zero")
    # The ceiling first: quantizing 1e30 to kopecks needs more digits than Decimal keeps (InvalidOperation).
    if amount > settings.LOYALTY_MAX_CHECK_AMOUNT:
        raise RowError(f"the amount {text[:40]!r} is over {settings.LOYALTY_MAX_CHECK_AMOUNT}")
    if amount != amount.quantize(Decimal("0.01")):
        raise RowError(f"the amount {text!r} has more than two decimal places")
    return amount.quantize(Decimal("0.01"))


def _when(text: str, tz) -> datetime:
    if not text:
        raise RowError("no date")
    parsed = None
    try:
        parsed = parse_datetime(text.replace(" ", "T", 1) if "T" not in text else text)
    except ValueError:
        parsed = None
    if parsed is None:
        for fmt in DATE_FORMATS:
            try:
                parsed = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
    if parsed is None:
        raise RowError(f"the date {text!r} is not a date (use 2026-03-14 12:30 or 14.03.2026 12:30)")
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, tz)


# --- Importing -------------------------------------------------------------------------------


def import_csv(
    binary,
    *,
    business: Business,
    mapping: dict[str, str] | None = None,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import a CSV (a binary file object) for the business. `progress(rows)` is called
    after each batch with the number of rows read so far."""
    import zoneinfo

    tz = zoneinfo.ZoneInfo(business.time_zone)
    text = open_text(binary)
    header, rows = _rows(text)
    columns = resolve_columns(header, mapping or {})
    report = ImportReport(dry_run=dry_run)
    now = timezone.now()
    batch: list = []
    phones: dict = {}

    def flush():
        if not batch:
            return
        if dry_run:
            ids = [row.external_id for row in batch]
            there = set(
                Transaction.objects.filter(business=business, external_id__in=ids).values_list("external_id", flat=True)
            )
            fresh = {row.external_id for row in batch} - there
            report.duplicates += len(batch) - len(fresh)
            report.imported += len(fresh)
        else:
            result = loyalty.import_purchases(business=business, rows=batch)
            report.imported += result.imported
            report.duplicates += result.duplicates
            for line, reason in result.rejected:
                report.reject(line, reason)
        batch.clear()
        if progress:
            progress(report.rows)

    for line, values in rows:
        report.rows += 1
        if isinstance(values, csv.Error):
            report.reject(line, f"unreadable CSV: {values}")
            continue
        try:
            batch.append(check_row(values, columns, line=line, tz=tz, now=now, phones=phones))
        except RowError as exc:
            report.reject(line, str(exc))
        if len(batch) >= settings.IMPORT_BATCH_ROWS:
            flush()
    flush()
    if progress:
        progress(report.rows)
    return report


def count_rows(binary) -> int:
    """Lines after the header (a quick upper bound for a progress bar), without reading it all in."""
    lines, last = 0, b"\n"
    for chunk in iter(lambda: binary.read(1 << 20), b""):
        lines += chunk.count(b"\n")
        last = chunk[-1:]
    binary.seek(0)
    return max(0, lines + (last != b"\n") - 1)


def read_header(binary) -> list[str]:
    """The file's header row (ImportFileError when it has none); the file is left open at its start."""
    text = open_text(binary)
    try:
        return _rows(text)[0]
    finally:
        text.detach()  # the wrapper would close the file when collected
        binary.seek(0)


def preview(binary, *, mapping: dict[str, str] | None = None, rows: int = 10, business: Business) -> dict:
    """The header, the columns chosen for each field and the first rows as they would be
    read (or why not), for the portal to show before the import starts. The file is left
    open at its start."""
    import zoneinfo

    tz = zoneinfo.ZoneInfo(business.time_zone)
    text = open_text(binary)
    try:
        header, reader = _rows(text)
        columns = resolve_columns(header, mapping or {})
        now, shown, phones = timezone.now(), [], {}
        for line, values in reader:
            if len(shown) >= rows:
                break
            if isinstance(values, csv.Error):
                shown.append({"line": line, "values": [], "error": f"unreadable CSV: {values}"})
                continue
            try:
                row = check_row(values, columns, line=line, tz=tz, now=now, phones=phones)
                shown.append({"line": line, "values": values, "row": row, "error": ""})
            except RowError as exc:
                shown.append({"line": line, "values": values, "error": str(exc)})
    finally:
        text.detach()
        binary.seek(0)
    return {"header": header, "columns": {name: header[index] for name, index in columns.items()}, "rows": shown}


def run_import_job(job_id) -> ImportJob:
    """Run an uploaded import once: the job is claimed by a conditional update, so a task
    delivered twice imports once. Progress is written after each batch."""
    claimed = ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.PENDING).update(
        status=ImportJob.Status.RUNNING
    )
    job = ImportJob.objects.select_related("business").get(pk=job_id)
    if not claimed:
        return job

    def progress(rows_done):
        ImportJob.objects.filter(pk=job.pk).update(rows_done=rows_done)

    try:
        with job.file.open("rb") as binary:
            job.rows_total = count_rows(binary)
            ImportJob.objects.filter(pk=job.pk).update(rows_total=job.rows_total)
            report = import_csv(binary, business=job.business, mapping=job.mapping, progress=progress)
    except (ImportFileError, OSError, UnicodeDecodeError) as exc:
        job.status, job.message = ImportJob.Status.FAILED, str(exc)
    except Exception:
        logger.exception("Import %s failed", job.pk)
        job.status, job.message = ImportJob.Status.FAILED, "The import stopped on an internal error; staff were told."
    else:
        job.status = ImportJob.Status.DONE
        job.rows_total = job.rows_done = report.rows
        job.imported, job.duplicates, job.rejected = report.imported, report.duplicates, report.rejected
        job.errors = [{"line": line, "reason": reason} for line, reason in report.errors]
    if job.status == ImportJob.Status.FAILED:
        job.rows_done = ImportJob.objects.values_list("rows_done", flat=True).get(pk=job.pk)
    job.finished_at = timezone.now()
    job.save()
    # The file holds customers' phones and is not needed once read: the report stays.
    job.file.delete(save=False)
    ImportJob.objects.filter(pk=job.pk).update(file="")
    return job


def delete_abandoned_uploads(older_than: timedelta | None = None) -> int:
    """Uploads never confirmed (still pending, no row count: see the portal) for a day, with their files."""
    cutoff = timezone.now() - (older_than or timedelta(days=1))
    abandoned = ImportJob.objects.filter(
        status=ImportJob.Status.PENDING, rows_total__isnull=True, created_at__lt=cutoff
    )
    count = 0
    for job in abandoned:
        job.file.delete(save=False)
        job.delete()
        count += 1
    return count
