"""CSV imports of a partner's purchase history (`manage.py import_transactions` and the portal).

The file is streamed: rows are read, checked and handed to `loyalty.services.import_purchases`
IMPORT_BATCH_ROWS at a time, so memory does not grow with the file. Every row ends up
imported, a duplicate (its id is already there: an import run twice changes nothing) or
rejected with its line number and the reason.

Columns map to the fields `external_id`, `phone`, `amount`, `occurred_at`. Without a
mapping a column is taken by its field name or a usual header (`Телефон`, `Сумма`, ...).
The delimiter (`,` `;` or tab) and the encoding (UTF-8, with or without BOM, or
Windows-1251 as Excel saves it in Russia) are detected.

An uploaded import (an ImportJob) runs in a worker, `run_import_job`: each batch commits with
the job's progress, so a run whose worker died is resumed after its last batch by the next
task that finds the job without life for IMPORT_STALE_AFTER_SECONDS (the task redelivered,
or the one `resume_stale_imports` queues)."""

import csv
import io
import itertools
import logging
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Q
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
# Runs of one job: a file that kills its worker every time fails after this many, instead of
# taking a worker down every few minutes for ever.
MAX_RUNS = 5


class ImportFileError(Exception):
    """The file as a whole cannot be imported (no header, a required column missing)."""


class ImportSuperseded(Exception):
    """The job is no longer this run's: another run took it over (this one showed no life for
    IMPORT_STALE_AFTER_SECONDS). The run stops and writes nothing more."""


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
    resume: ImportReport | None = None,
    checkpoint: Callable[[ImportReport], None] | None = None,
) -> ImportReport:
    """Import a CSV (a binary file object) for the business. `progress(rows)` is called
    after each batch with the number of rows read so far.

    `resume` is what an earlier run of the same file reported at its last checkpoint: its
    first `resume.rows` rows are in and are skipped, and its counts go on. `checkpoint(report)`
    is called in each batch's transaction once the batch is written, so what it saves commits
    with the batch or not at all; an exception from it undoes the batch."""
    import zoneinfo

    tz = zoneinfo.ZoneInfo(business.time_zone)
    text = open_text(binary)
    header, rows = _rows(text)
    columns = resolve_columns(header, mapping or {})
    report = ImportReport(dry_run=dry_run)
    if resume is not None:
        report.rows, report.imported, report.duplicates = resume.rows, resume.imported, resume.duplicates
        report.rejected, report.errors = resume.rejected, list(resume.errors)
        rows = itertools.islice(rows, resume.rows, None)
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
            with transaction.atomic() if checkpoint else nullcontext():
                result = loyalty.import_purchases(business=business, rows=batch)
                report.imported += result.imported
                report.duplicates += result.duplicates
                for line, reason in result.rejected:
                    report.reject(line, reason)
                if checkpoint:
                    checkpoint(report)
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


def _stale(now: datetime) -> Q:
    """Running jobs whose run has shown no life for IMPORT_STALE_AFTER_SECONDS: its worker died."""
    cutoff = now - timedelta(seconds=settings.IMPORT_STALE_AFTER_SECONDS)
    return Q(status=ImportJob.Status.RUNNING) & (Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=cutoff))


def _error_rows(report: ImportReport) -> list[dict]:
    return [{"line": line, "reason": reason} for line, reason in report.errors]


def _claim_import_job(job_id) -> tuple[ImportJob, int | None]:
    """The job, and the number of the run that has just claimed it (None: not this run's to
    run). A pending job is claimed, and so is a running one whose run is dead (stale); each
    claim is a conditional update on the run number it read, so of two tasks that find the
    job claimable one claims it."""
    job = ImportJob.objects.select_related("business").get(pk=job_id)
    if job.status not in (ImportJob.Status.PENDING, ImportJob.Status.RUNNING):
        return job, None
    now = timezone.now()
    # The staleness is in the condition, not only in what was read: a live run's batch may
    # have committed since.
    claimable = ImportJob.objects.filter(
        Q(status=ImportJob.Status.PENDING) | _stale(now), pk=job.pk, attempt=job.attempt
    )
    if job.attempt >= MAX_RUNS:
        message = f"The import stopped {job.attempt} times before its end; staff were told."
        if claimable.update(status=ImportJob.Status.FAILED, message=message, finished_at=now, heartbeat_at=now):
            logger.error("Import %s failed: its run stopped %s times", job.pk, job.attempt)
            _delete_file(job)
        job.refresh_from_db()
        return job, None
    if not claimable.update(status=ImportJob.Status.RUNNING, attempt=job.attempt + 1, heartbeat_at=now):
        job.refresh_from_db()
        return job, None
    if job.status == ImportJob.Status.RUNNING:
        logger.warning(
            "Import %s: run %s showed no life since %s; run %s resumes it after row %s",
            job.pk,
            job.attempt,
            job.heartbeat_at,
            job.attempt + 1,
            job.rows_done,
        )
    job.refresh_from_db()
    return job, job.attempt


def _delete_file(job: ImportJob) -> None:
    # The file holds customers' phones and is not needed once read: the report stays.
    job.file.delete(save=False)
    ImportJob.objects.filter(pk=job.pk).update(file="")


def run_import_job(job_id) -> ImportJob:
    """Run an uploaded import to its end, once. The run claims the job (`_claim_import_job`):
    a task delivered again while the job runs does nothing, one that finds its run dead takes
    it over, and a done or failed job is never run again. Each batch commits with the job's
    progress and counts, on condition that the job is still this run's; so a run resumes after
    the last batch of the dead one, counting the rows that one imported as imported, and a
    run that lost the job to another writes nothing more."""
    job, attempt = _claim_import_job(job_id)
    if attempt is None:
        return job
    owned = ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.RUNNING, attempt=attempt)
    resume = ImportReport(
        rows=job.rows_done,
        imported=job.imported,
        duplicates=job.duplicates,
        rejected=job.rejected,
        errors=[(error["line"], error["reason"]) for error in job.errors],
    )

    def checkpoint(report: ImportReport) -> None:
        saved = owned.update(
            rows_done=report.rows,
            imported=report.imported,
            duplicates=report.duplicates,
            rejected=report.rejected,
            errors=_error_rows(report),
            heartbeat_at=timezone.now(),
        )
        if not saved:
            raise ImportSuperseded

    try:
        with job.file.open("rb") as binary:
            if not owned.update(rows_total=count_rows(binary)):
                raise ImportSuperseded
            report = import_csv(
                binary, business=job.business, mapping=job.mapping, resume=resume, checkpoint=checkpoint
            )
    except ImportSuperseded:
        logger.warning("Import %s: run %s lost the job to another run and stopped", job.pk, attempt)
        return ImportJob.objects.select_related("business").get(pk=job.pk)
    except (ImportFileError, OSError, UnicodeDecodeError) as exc:
        outcome = {"status": ImportJob.Status.FAILED, "message": str(exc)}
    except Exception:
        logger.exception("Import %s failed", job.pk)
        outcome = {
            "status": ImportJob.Status.FAILED,
            "message": "The import stopped on an internal error; staff were told.",
        }
    else:
        outcome = {
            "status": ImportJob.Status.DONE,
            "rows_total": report.rows,
            "rows_done": report.rows,
            "imported": report.imported,
            "duplicates": report.duplicates,
            "rejected": report.rejected,
            "errors": _error_rows(report),
        }
    now = timezone.now()
    if owned.update(**outcome, finished_at=now, heartbeat_at=now):
        _delete_file(job)
    else:
        logger.warning("Import %s: run %s lost the job to another run at its end", job.pk, attempt)
    return ImportJob.objects.select_related("business").get(pk=job.pk)


def resumable_import_ids() -> list:
    """Imports whose task is gone: running with no life for IMPORT_STALE_AFTER_SECONDS (the
    worker died), or confirmed in the portal that long ago and never started (the task was
    lost). Queued again, each is claimed by one run (`run_import_job`)."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.IMPORT_STALE_AFTER_SECONDS)
    never_started = Q(status=ImportJob.Status.PENDING, rows_total__isnull=False, created_at__lt=cutoff)
    return list(ImportJob.objects.filter(_stale(now) | never_started).values_list("pk", flat=True))


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
