"""Faults that need real processes (the in-process ones are tests/svoykrug/test_faults.py).

    .venv/bin/python bench/faults.py kill-worker                   # bonus expiry over 300,000 lots
    .venv/bin/python bench/faults.py kill-worker --task import     # a CSV import of 40,000 rows
    .venv/bin/python bench/faults.py kill-worker --task expire --lots 600000 --visibility-timeout 10

`kill-worker`: a Celery worker is killed with SIGKILL in the middle of a task, and another
worker takes the task over. Tasks are `acks_late` (CELERY_TASK_ACKS_LATE): the message stays
in Redis's `unacked` hash while its task runs, and a worker that dies never acknowledges it,
so Redis hands it out again once its visibility timeout has passed. The production timeout
is kombu's hour; here the workers are started with a short one (`--visibility-timeout`,
default 10 s, passed as `broker_transport_options` in the worker's app config) so that the
rerun comes within seconds. Then the books are checked: `manage.py verify_ledger`, and the
counts of ledger entries, lots and purchases against what one run should have made.

- `--task expire` (default): `loyalty.tasks.expire_bonuses` over `--lots` expired lots of
  `--lots`/10 customers, in batches of LOYALTY_BATCH_ACCOUNTS=1,000 accounts (one
  transaction each). Killed once the first batches have committed.
- `--task import`: `integrations.tasks.run_import` of a CSV of `--rows` purchases (an
  ImportJob as the portal makes it). Killed once the first batch of IMPORT_BATCH_ROWS is in
  (each batch commits with the job's progress and a heartbeat). The redelivered task finds
  the job "running" with a heartbeat older than IMPORT_STALE_AFTER_SECONDS (production:
  5 minutes, well inside the hour of the visibility timeout; here `--stale-after`, default
  3 s, and the second worker starts once the dead run's heartbeat is that old) and resumes
  it after the last committed batch; the job's report must count every row as imported
  once. Then the same file is uploaded again as a new import (what a partner does with an
  import that never finished), to show the rows are not doubled.

Each worker is `celery worker --pool solo` on the task's queue (`default` for the expiry,
`integrations` for the import), started as the deployment starts it, in a process group of
its own; its log goes to a file whose path is printed.

Needs PostgreSQL and Redis: FAULTS_DATABASE_URL (default
postgres://postgres@127.0.0.1:5432/svoykrug_faults_bench, recreated on every run) and
FAULTS_REDIS_URL (default redis://127.0.0.1:6379/14, emptied on every run). Run by hand;
nothing here is a test.
"""

import argparse
import csv
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fill_expired_lots, recreate_database  # noqa: E402

DATABASE_URL = os.environ.get("FAULTS_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/svoykrug_faults_bench")
REDIS_URL = os.environ.get("FAULTS_REDIS_URL", "redis://127.0.0.1:6379/14")
MEDIA_ROOT = tempfile.mkdtemp(prefix="svoykrug-faults-media-")

os.environ.update(
    {
        "DATABASE_URL": DATABASE_URL,
        "REDIS_URL": REDIS_URL,
        "DJANGO_SECRET_KEY": "bench-only-secret-key-0123456789abcdef",
        "DJANGO_SETTINGS_MODULE": "svoykrug.settings",
        "LOG_LEVEL": "WARNING",
        "SMSRU_API_ID": "",
        "MEDIA_ROOT": MEDIA_ROOT,
        "LOYALTY_BATCH_ACCOUNTS": "1000",
    }
)

# The worker: the project's Celery app, with a short visibility timeout and the unacked
# messages looked at every second, so that a dead worker's task comes back within seconds.
WORKER = """
import os, time
from celery.signals import task_postrun, task_prerun, worker_ready
from svoykrug.celery import app

def say(text):  # printed, not logged: the project's logging settings decide what a log shows
    print(time.strftime("%H:%M:%S"), text, flush=True)

worker_ready.connect(lambda **kw: say("FAULTS worker ready"), weak=False)
task_prerun.connect(lambda task_id, task, **kw: say(f"FAULTS task started {task.name}[{task_id}]"), weak=False)
task_postrun.connect(
    lambda task_id, task, retval=None, state=None, **kw: say(f"FAULTS task {state} {task.name}[{task_id}]: {retval!r}"),
    weak=False,
)
app.conf.broker_transport_options = {
    "visibility_timeout": int(os.environ["FAULTS_VISIBILITY_TIMEOUT"]),
    "unacked_restore_interval": 1,
    "unacked_restore_throttle": 1,
}
app.worker_main([
    "worker", "--pool", "solo", "-Q", os.environ["FAULTS_QUEUE"], "--loglevel", "INFO",
    "-n", os.environ["FAULTS_WORKER_NAME"],
    "--without-heartbeat", "--without-gossip", "--without-mingle",
])
"""


STARTED = time.monotonic()
WORKERS: list["Worker"] = []


def say(text: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f} s] {text}", flush=True)


def redis_client():
    import redis

    return redis.Redis.from_url(REDIS_URL)


class Worker:
    """One `celery worker` process (group), its log in a file."""

    def __init__(self, name: str, visibility_timeout: int, logs: Path, queue: str = "default"):
        self.name = name
        self.log = logs / f"{name}.log"
        env = {
            **os.environ,
            "FAULTS_VISIBILITY_TIMEOUT": str(visibility_timeout),
            "FAULTS_WORKER_NAME": name,
            "FAULTS_QUEUE": queue,
        }
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-c", WORKER],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        WORKERS.append(self)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.text():
                return True
            if self.process.poll() is not None:
                return False
            time.sleep(0.1)
        return False

    def start(self) -> None:
        if not self.wait_for("FAULTS worker ready", 60):
            self.stop()
            raise SystemExit(f"worker {self.name} did not start; its log:\n{self.text()}")
        say(f"worker {self.name} ready (pid {self.process.pid}, log {self.log})")

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        say(f"worker {self.name} KILLED with SIGKILL (exit {self.process.returncode})")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def task_lines(self) -> list[str]:
        return [line.replace("FAULTS ", "") for line in self.text().splitlines() if "FAULTS task" in line]


def wait_until(condition, timeout: float, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    return None


def verify_ledger() -> tuple[bool, str]:
    done = subprocess.run(
        [sys.executable, "manage.py", "verify_ledger"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return done.returncode == 0, (done.stdout + done.stderr).strip()


# --- Bonus expiry -----------------------------------------------------------------------------------


def expiry_state() -> dict:
    from django.db.models import Count, Sum

    from loyalty.models import BonusAccount, BonusLot, LedgerEntry

    expiries = LedgerEntry.objects.filter(kind="expiry").aggregate(
        entries=Count("id"), lots=Count("lot_id", distinct=True), amount=Sum("amount")
    )
    return {
        "lots": BonusLot.objects.count(),
        "open_lots": BonusLot.objects.filter(remaining__gt=0).count(),
        "expiry_entries": expiries["entries"],
        "lots_with_expiry": expiries["lots"],
        "expired_amount": -(expiries["amount"] or 0),
        "accounts_with_balance": BonusAccount.objects.filter(balance__gt=0).count(),
    }


def kill_expiry(args, logs: Path) -> bool:
    from accounts.models import Business
    from loyalty import tasks
    from loyalty.models import LedgerEntry

    accounts = max(1, args.lots // 10)
    say(f"filling {args.lots:,} expired lots of {accounts:,} customers")
    Business.objects.create(name="Faults café", slug="faults-cafe", category="cafe")
    fill_expired_lots(lots=args.lots, accounts=accounts, tag="faults")
    ok, ledger = verify_ledger()
    say(f"before: {ledger}")

    first = Worker("faults-1", args.visibility_timeout, logs)
    first.start()
    sent_at = time.monotonic()
    result = tasks.expire_bonuses.delay()
    say(f"sent loyalty.tasks.expire_bonuses ({result.id})")
    batch = 1000 * (args.lots // accounts)  # lots per committed batch
    done = wait_until(
        lambda: (n := LedgerEntry.objects.filter(kind="expiry").count()) >= args.kill_after_batches * batch and n,
        timeout=300,
    )
    if not done:
        first.stop()
        raise SystemExit(f"the task did not get going; worker log:\n{first.text()}")
    first.kill()
    at_kill = expiry_state()
    unacked = redis_client().hlen("unacked")
    say(
        f"at the kill: {at_kill['expiry_entries']:,} of {at_kill['lots']:,} lots expired "
        f"({at_kill['expiry_entries'] * 100 // at_kill['lots']}%), {at_kill['open_lots']:,} still open; "
        f"messages unacknowledged in Redis: {unacked}"
    )

    second = Worker("faults-2", args.visibility_timeout, logs)
    second.start()
    finished = second.wait_for("FAULTS task SUCCESS", timeout=args.visibility_timeout + 600)
    took = time.monotonic() - sent_at
    time.sleep(args.visibility_timeout + 3)  # long enough for a wrongly restored message to show up
    second.stop()
    after = expiry_state()
    ok, ledger = verify_ledger()
    unacked = redis_client().hlen("unacked") + redis_client().llen("default")
    say(f"worker faults-2 ran: {'; '.join(second.task_lines()) or 'nothing'}")
    say(f"task finished after the kill: {finished} ({took:.1f} s after it was sent)")
    checks = {
        "every lot expired exactly once (one expiry entry per lot)": after["expiry_entries"]
        == after["lots_with_expiry"]
        == after["lots"],
        "no lot left open": after["open_lots"] == 0,
        "amount expired = amount that was on the lots": after["expired_amount"] == after["lots"] * 10,
        "every balance is zero": after["accounts_with_balance"] == 0,
        "verify_ledger passes": ok,
        "no message left in Redis": unacked == 0,
    }
    say(f"after: {after}")
    say(f"verify_ledger: {ledger}")
    return report(checks)


# --- CSV import -------------------------------------------------------------------------------------


def write_csv(path: Path, rows: int, customers: int) -> None:
    rng = random.Random(rows)
    now = datetime.now().replace(microsecond=0)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=";")
        writer.writerow(["Номер чека", "Телефон", "Сумма", "Дата"])
        for index in range(rows):
            when = now - timedelta(seconds=rng.randrange(300 * 86400))
            amount = f"{rng.randrange(100, 9000)},{rng.randrange(100):02d}"
            writer.writerow(
                [f"chk-{index}", f"+7 916 {rng.randrange(customers):07d}", amount, when.strftime("%d.%m.%Y %H:%M")]
            )


def new_import(business, path: Path):
    from django.core.files import File

    from integrations.models import ImportJob

    with path.open("rb") as handle:
        return ImportJob.objects.create(
            business=business, file=File(handle, name="history.csv"), original_name=path.name
        )


def import_state(business) -> dict:
    from django.db.models import Count

    from loyalty.models import LedgerEntry, Transaction

    purchases = Transaction.objects.filter(business=business).aggregate(
        rows=Count("id"), ids=Count("external_id", distinct=True)
    )
    accruals = LedgerEntry.objects.filter(kind="accrual", business=business).aggregate(
        rows=Count("id"), purchases=Count("transaction_id", distinct=True)
    )
    return {
        "purchases": purchases["rows"],
        "distinct_purchase_ids": purchases["ids"],
        "accrual_entries": accruals["rows"],
        "purchases_with_accrual": accruals["purchases"],
    }


def kill_import(args, logs: Path) -> bool:
    from django.utils import timezone

    from accounts.models import Business
    from integrations import tasks
    from integrations.models import ImportJob
    from loyalty import services

    business = Business.objects.create(name="Faults café", slug="faults-cafe", category="cafe")
    services.update_program(business=business, changed_by=None, accrual_rate=5)
    path = Path(MEDIA_ROOT) / "history.csv"
    write_csv(path, args.rows, max(1, args.rows // 10))
    job = new_import(business, path)
    say(f"import job {job.pk}: {args.rows:,} rows ({path.stat().st_size / 1e6:.1f} MB)")

    first = Worker("faults-1", args.visibility_timeout, logs, queue="integrations")
    first.start()
    tasks.run_import.delay(str(job.pk))
    say("sent integrations.tasks.run_import")
    if not wait_until(lambda: ImportJob.objects.filter(pk=job.pk, rows_done__gt=0).exists(), timeout=300):
        first.stop()
        raise SystemExit(f"the import did not get going; worker log:\n{first.text()}")
    first.kill()
    job.refresh_from_db()
    at_kill = import_state(business)
    say(
        f"at the kill: job {job.status} (run {job.attempt}), rows read {job.rows_done:,} of {job.rows_total:,}, "
        f"imported {job.imported:,}; {at_kill}; messages unacknowledged in Redis: {redis_client().hlen('unacked')}"
    )
    # In production the visibility timeout (an hour) is far longer than the stale window (5 minutes).
    stale_at = job.heartbeat_at + timedelta(seconds=args.stale_after)
    wait_until(lambda: timezone.now() > stale_at, timeout=args.stale_after + 1)

    second = Worker("faults-2", args.visibility_timeout, logs, queue="integrations")
    second.start()
    second.wait_for("FAULTS task SUCCESS", timeout=args.visibility_timeout + 600)
    job.refresh_from_db()
    rerun = import_state(business)
    say(f"worker faults-2 ran: {'; '.join(second.task_lines()) or 'nothing'}")
    say(
        f"after the rerun: job {job.status} (run {job.attempt}), rows read {job.rows_done:,} of {job.rows_total:,}, "
        f"imported {job.imported:,}, already there {job.duplicates:,}; {rerun}"
    )

    # What a partner does with an import that never finished: upload the file again.
    again = new_import(business, path)
    tasks.run_import.delay(str(again.pk))
    finished = wait_until(
        lambda: ImportJob.objects.filter(pk=again.pk, status__in=["done", "failed"]).first(), timeout=600, every=0.5
    )
    second.stop()
    after = import_state(business)
    ok, ledger = verify_ledger()
    if finished is None:
        say("the file uploaded again: the import did not finish")
    else:
        say(
            f"the file uploaded again: job {finished.status}, imported {finished.imported:,}, "
            f"already there {finished.duplicates:,}"
        )
    say(f"after: {after}")
    say(f"verify_ledger: {ledger}")
    checks = {
        "the rerun of the killed task doubled nothing": rerun["purchases"] == rerun["distinct_purchase_ids"]
        and rerun["accrual_entries"] == rerun["purchases_with_accrual"] == rerun["purchases"],
        "the killed import finished by its rerun": job.status == "done" and rerun["purchases"] == args.rows,
        "its report counts every row once, as imported": (job.imported, job.duplicates, job.rejected)
        == (args.rows, 0, 0),
        "every row is one purchase after the file was sent again": after["purchases"]
        == after["distinct_purchase_ids"]
        == args.rows,
        "one accrual per purchase": after["accrual_entries"] == after["purchases_with_accrual"] == args.rows,
        "verify_ledger passes": ok,
    }
    return report(checks)


def report(checks: dict) -> bool:
    for name, passed in checks.items():
        print(f"  {'ok  ' if passed else 'FAIL'} {name}")
    return all(checks.values())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    kill = commands.add_parser(
        "kill-worker", help="kill a Celery worker mid-task, let another rerun it, check the books"
    )
    kill.add_argument("--task", choices=["expire", "import"], default="expire")
    kill.add_argument("--lots", type=int, default=300_000, help="expired lots for --task expire (10 per customer)")
    kill.add_argument("--rows", type=int, default=40_000, help="CSV rows for --task import")
    kill.add_argument("--visibility-timeout", type=int, default=10, help="seconds before Redis redelivers")
    kill.add_argument("--kill-after-batches", type=int, default=2, help="expire: batches committed before the kill")
    kill.add_argument(
        "--stale-after", type=int, default=3, help="import: IMPORT_STALE_AFTER_SECONDS, before a dead run is resumed"
    )
    args = parser.parse_args()
    os.environ["IMPORT_STALE_AFTER_SECONDS"] = str(args.stale_after)

    say(f"database {DATABASE_URL} (recreated), Redis {REDIS_URL} (emptied), media {MEDIA_ROOT}")
    db = int(urlparse(REDIS_URL).path.lstrip("/") or 0)
    others = [client for client in redis_client().client_list() if int(client.get("db", -1)) == db]
    if len(others) > 1:  # ourselves, and someone else: another worker would take the task
        raise SystemExit(f"Redis db {db} has other clients ({len(others) - 1}); stop them or set FAULTS_REDIS_URL.")
    recreate_database(DATABASE_URL)
    redis_client().flushdb()
    import django

    django.setup()
    logs = Path(tempfile.mkdtemp(prefix="svoykrug-faults-logs-"))
    try:
        passed = kill_expiry(args, logs) if args.task == "expire" else kill_import(args, logs)
    finally:
        for worker in WORKERS:
            worker.stop()
    print("PASSED" if passed else "FAILED")
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
