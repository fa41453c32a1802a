"""An uploaded import whose worker dies mid-file (SIGKILL, out of memory, the host gone) is
resumed by the next task that finds it without life: the task Celery delivers again
(acks_late), or the one the periodic sweep queues. Its batches commit with the job's
progress, so the resumed run starts after the last committed batch and every row is
imported once; a live run is never taken over, and a finished job never runs again.

A dead run is played by an exception that no `except Exception` catches, raised after a
batch is written and before it commits: what a killed worker leaves is what the exception
leaves (the transaction rolled back, the job still "running")."""

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import connection
from django.utils import timezone

from integrations import imports, tasks
from integrations.models import ImportJob
from loyalty import services as loyalty_services
from loyalty.models import BonusAccount, LedgerEntry, Transaction
from loyalty.selectors import ledger_mismatches
from tests.integrations.support import D

ANNA, BORIS, VERA = "+79161110001", "+79161110002", "+79161110003"


class WorkerKilled(BaseException):
    """The worker is gone: nothing after this point of the run runs, not even its error handling."""


@pytest.fixture(autouse=True)
def _small_batches(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)
    settings.IMPORT_BATCH_ROWS = 2
    settings.IMPORT_STALE_AFTER_SECONDS = 300


def history_file() -> bytes:
    """Seven rows, two of them rejected: with batches of 2, batch 1 is r-1 and r-2 (rows 1-2),
    batch 2 is r-4 and r-5 (rows 3-5, r-3 rejected), batch 3 is r-7 (rows 6-7, r-6 rejected)."""
    when = (timezone.now() - timedelta(days=3)).date().isoformat()
    lines = [
        "id,phone,amount,date",
        f"r-1,{ANNA},1000,{when}",
        f"r-2,{BORIS},500,{when}",
        f"r-3,bad,1,{when}",
        f"r-4,{ANNA},200,{when}",
        f"r-5,{VERA},300,{when}",
        f"r-6,{BORIS},0,{when}",
        f"r-7,{VERA},400,{when}",
    ]
    return ("\n".join(lines) + "\n").encode()


REJECTED = [
    {"line": 4, "reason": "the phone 'bad' is not a valid number"},
    {"line": 7, "reason": "the amount '0' is not above zero"},
]


@pytest.fixture
def job(shop) -> ImportJob:
    """Uploaded and confirmed in the portal (its rows counted), not started yet."""
    return ImportJob.objects.create(
        business=shop,
        file=ContentFile(history_file(), name="history.csv"),
        original_name="history.csv",
        rows_total=7,
    )


def die_in_batch(monkeypatch, number: int) -> None:
    """The run's worker dies in its batch `number`, once the batch is written and before it commits."""
    real = loyalty_services.import_purchases
    calls = itertools.count(1)

    def import_purchases(**kwargs):
        result = real(**kwargs)
        if next(calls) == number:
            raise WorkerKilled
        return result

    monkeypatch.setattr(loyalty_services, "import_purchases", import_purchases)


def run_and_die_in_batch(monkeypatch, job: ImportJob, number: int) -> None:
    with monkeypatch.context() as patch:
        die_in_batch(patch, number)
        with pytest.raises(WorkerKilled):
            imports.run_import_job(job.pk)


def after_stale_window(seconds: float = 1):
    return time_machine.travel(timezone.now() + timedelta(seconds=settings.IMPORT_STALE_AFTER_SECONDS + seconds))


def job_state(job: ImportJob) -> tuple:
    job.refresh_from_db()
    return job.status, job.attempt, job.rows_done, job.imported, job.duplicates, job.rejected


def purchases() -> list[tuple]:
    return sorted(Transaction.objects.values_list("external_id", "customer__phone", "bonuses_accrued"))


def assert_the_whole_file_was_imported_once(job: ImportJob, *, runs: int) -> None:
    job.refresh_from_db()
    assert (job.status, job.attempt, job.rows_total, job.rows_done) == ("done", runs, 7, 7)
    # The rows the dead run imported count as imported, not as already there.
    assert (job.imported, job.duplicates, job.rejected) == (5, 0, 2)
    assert job.errors == REJECTED
    assert job.finished_at is not None
    assert job.file.name == ""
    assert purchases() == [
        ("r-1", ANNA, D(50)),
        ("r-2", BORIS, D(25)),
        ("r-4", ANNA, D(10)),
        ("r-5", VERA, D(15)),
        ("r-7", VERA, D(20)),
    ]
    accruals = LedgerEntry.objects.filter(kind=LedgerEntry.Kind.ACCRUAL)
    assert accruals.count() == accruals.values("transaction_id").distinct().count() == 5
    assert sorted(BonusAccount.objects.values_list("user__phone", "balance")) == [
        (ANNA, D(60)),
        (BORIS, D(25)),
        (VERA, D(35)),
    ]
    assert ledger_mismatches() == []


def test_a_job_whose_worker_died_is_resumed_by_the_redelivered_task_and_imports_each_row_once(monkeypatch, job):
    run_and_die_in_batch(monkeypatch, job, 2)

    # Batch 1 committed with the job's progress; batch 2 died with its worker.
    assert job_state(job) == ("running", 1, 2, 2, 0, 0)
    assert [external_id for external_id, _phone, _bonus in purchases()] == ["r-1", "r-2"]

    with after_stale_window():
        assert tasks.run_import(str(job.pk)) == "done"

    assert_the_whole_file_was_imported_once(job, runs=2)


def test_a_job_whose_worker_died_twice_is_resumed_after_the_last_committed_batch(monkeypatch, job):
    run_and_die_in_batch(monkeypatch, job, 2)
    with after_stale_window():
        run_and_die_in_batch(monkeypatch, job, 2)  # the second run's batch 2 is the file's batch 3
        assert job_state(job) == ("running", 2, 5, 4, 0, 1)
        with after_stale_window():
            assert tasks.run_import(str(job.pk)) == "done"

    assert_the_whole_file_was_imported_once(job, runs=3)


def test_a_running_job_whose_run_shows_life_is_not_taken_over(monkeypatch, job):
    run_and_die_in_batch(monkeypatch, job, 2)
    job.refresh_from_db()
    heartbeat = job.heartbeat_at

    # Within the window nobody can tell a dead run from a slow one: the task leaves it.
    with time_machine.travel(heartbeat + timedelta(seconds=settings.IMPORT_STALE_AFTER_SECONDS - 1)):
        assert tasks.run_import(str(job.pk)) == "running"
        assert imports.resumable_import_ids() == []

    assert job_state(job) == ("running", 1, 2, 2, 0, 0)
    assert job.heartbeat_at == heartbeat
    assert job.file.storage.exists(job.file.name)
    assert Transaction.objects.count() == 2


def test_a_live_run_writes_its_heartbeat_with_each_batch(monkeypatch, job):
    beats = []
    real_import = loyalty_services.import_purchases
    real_check_row = imports.check_row

    def import_purchases(**kwargs):
        beats.append(ImportJob.objects.values_list("heartbeat_at", flat=True).get(pk=job.pk))
        return real_import(**kwargs)

    with time_machine.travel(timezone.now(), tick=False) as clock:
        started = timezone.now()

        def check_row(*args, **kwargs):  # a second a row
            clock.shift(timedelta(seconds=1))
            return real_check_row(*args, **kwargs)

        monkeypatch.setattr(loyalty_services, "import_purchases", import_purchases)
        monkeypatch.setattr(imports, "check_row", check_row)
        assert tasks.run_import(str(job.pk)) == "done"

    # Each batch finds the heartbeat of the claim or of the batch before it (rows 2 and 5).
    assert beats == [started, started + timedelta(seconds=2), started + timedelta(seconds=5)]
    job.refresh_from_db()
    assert (job.status, job.attempt, job.heartbeat_at) == ("done", 1, started + timedelta(seconds=7))


def test_a_finished_job_is_not_run_again(job):
    assert tasks.run_import(str(job.pk)) == "done"
    job.refresh_from_db()
    finished = (job.status, job.attempt, job.heartbeat_at, job.finished_at, job.imported, job.duplicates)
    assert finished[:2] == ("done", 1) and finished[4:] == (5, 0)

    with time_machine.travel(timezone.now() + timedelta(days=2)):
        assert imports.resumable_import_ids() == []
        assert tasks.run_import(str(job.pk)) == "done"

    job.refresh_from_db()
    assert (job.status, job.attempt, job.heartbeat_at, job.finished_at, job.imported, job.duplicates) == finished
    assert Transaction.objects.count() == 5


def test_a_failed_job_is_not_run_again(job, shop):
    failed = ImportJob.objects.create(
        business=shop, file=ContentFile(b"id,phone,date\n", name="bad.csv"), original_name="bad.csv", rows_total=0
    )
    assert tasks.run_import(str(failed.pk)) == "failed"
    failed.refresh_from_db()
    message = failed.message

    with time_machine.travel(timezone.now() + timedelta(days=2)):
        assert tasks.run_import(str(failed.pk)) == "failed"

    failed.refresh_from_db()
    assert (failed.status, failed.attempt, failed.message) == ("failed", 1, message)


def test_a_run_that_lost_its_job_to_another_writes_nothing_more(monkeypatch, job):
    """A run with no life for the window (a stalled worker, not a dead one) was taken over;
    when it goes on, its batch is undone and it neither finishes the job nor deletes its file."""
    real_check_row = imports.check_row

    def check_row(values, columns, *, line, **kwargs):
        if line == 5:  # the first row of batch 2: meanwhile another run claimed the job (run 2)
            ImportJob.objects.filter(pk=job.pk).update(attempt=2, heartbeat_at=timezone.now())
        return real_check_row(values, columns, line=line, **kwargs)

    monkeypatch.setattr(imports, "check_row", check_row)
    assert tasks.run_import(str(job.pk)) == "running"

    assert job_state(job) == ("running", 2, 2, 2, 0, 0)
    assert job.finished_at is None
    assert job.file.storage.exists(job.file.name)
    assert [external_id for external_id, _phone, _bonus in purchases()] == ["r-1", "r-2"]

    monkeypatch.setattr(imports, "check_row", real_check_row)
    with after_stale_window():  # and run 2 died
        assert tasks.run_import(str(job.pk)) == "done"
    assert_the_whole_file_was_imported_once(job, runs=3)


def test_a_job_whose_runs_keep_dying_fails_after_so_many_runs(job):
    ImportJob.objects.filter(pk=job.pk).update(
        status=ImportJob.Status.RUNNING, attempt=imports.MAX_RUNS, heartbeat_at=timezone.now()
    )
    path = job.file.name

    with after_stale_window():
        assert tasks.run_import(str(job.pk)) == "failed"

    job.refresh_from_db()
    assert (job.status, job.attempt, job.file.name) == ("failed", imports.MAX_RUNS, "")
    assert job.message == f"The import stopped {imports.MAX_RUNS} times before its end; staff were told."
    assert not job.file.storage.exists(path)
    assert Transaction.objects.count() == 0


def test_the_sweep_queues_the_jobs_whose_run_died_or_whose_task_was_lost(monkeypatch, shop, job):
    def make(**fields) -> ImportJob:
        return ImportJob.objects.create(business=shop, original_name="x.csv", file="imports/x.csv", **fields)

    stale = timezone.now() - timedelta(seconds=settings.IMPORT_STALE_AFTER_SECONDS + 1)
    with time_machine.travel(stale):
        dead = make(status=ImportJob.Status.RUNNING, attempt=1, heartbeat_at=timezone.now(), rows_total=9)
        lost = make(rows_total=9)  # confirmed in the portal, its task never ran
        make()  # a draft: never confirmed, not to be run
        make(status=ImportJob.Status.DONE, attempt=1, heartbeat_at=timezone.now(), rows_total=9)
        make(status=ImportJob.Status.FAILED, attempt=1, heartbeat_at=timezone.now(), rows_total=9)
    make(status=ImportJob.Status.RUNNING, attempt=1, heartbeat_at=timezone.now(), rows_total=9)  # alive
    queued = []
    monkeypatch.setattr(tasks.run_import, "delay", queued.append)

    assert tasks.resume_stale_imports() == 2

    assert sorted(queued) == sorted([str(dead.pk), str(lost.pk)])  # and `job`, confirmed just now, waits


def test_the_sweep_resumes_a_job_whose_task_was_lost_with_its_worker(monkeypatch, job):
    run_and_die_in_batch(monkeypatch, job, 1)
    assert job_state(job) == ("running", 1, 0, 0, 0, 0)

    with after_stale_window():
        assert tasks.resume_stale_imports() == 1  # eager here: the queued run runs at once

    assert_the_whole_file_was_imported_once(job, runs=2)


# --- On PostgreSQL, with real connections -------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_tasks_delivered_at_once_for_a_dead_job_resume_it_once(monkeypatch, job):
    """Redelivered, swept and sent again, all at once: one run takes the job over."""
    run_and_die_in_batch(monkeypatch, job, 2)
    times = 6
    start = threading.Barrier(times)

    def run(_index):
        try:
            start.wait()
            return imports.run_import_job(job.pk).status
        finally:
            connection.close()

    with after_stale_window(), ThreadPoolExecutor(max_workers=times) as pool:
        statuses = list(pool.map(run, range(times)))

    assert statuses.count("done") >= 1 and set(statuses) <= {"running", "done"}
    assert_the_whole_file_was_imported_once(job, runs=2)
