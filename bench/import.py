"""CSV import speed and memory on PostgreSQL.

Generates a CSV of purchases (default 200,000 rows for 20,000 customers, over the last 300
days, semicolon-separated with Russian headers as a partner's export would be), recreates
a PostgreSQL database, and runs the real command

    python manage.py import_transactions FILE --business bench-cafe

in a child process, twice: on a quarter of the file and on the whole file, printing rows/s
and the child's peak memory (max RSS) for each, so one sees whether memory grows with the
file. Then it checks the ledger balances (`verify_ledger`).

    .venv/bin/python bench/import.py
    BENCH_ROWS=200000 BENCH_CUSTOMERS=20000 .venv/bin/python bench/import.py

Needs PostgreSQL (BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/svoykrug_bench,
recreated on every run). Run by hand; nothing here is a test.
"""

import csv
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import recreate_database  # noqa: E402

DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/svoykrug_bench")
ROWS = int(os.environ.get("BENCH_ROWS", "200000"))
CUSTOMERS = int(os.environ.get("BENCH_CUSTOMERS", "20000"))

ENV = {
    **os.environ,
    "DATABASE_URL": DATABASE_URL,
    "DJANGO_SECRET_KEY": "bench-only-secret-key-0123456789abcdef",
    "DJANGO_SETTINGS_MODULE": "svoykrug.settings",
    "LOG_LEVEL": "WARNING",
    "REDIS_URL": "",
    "SMSRU_API_ID": "",
}


def manage(*args, capture=False):
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=ENV, check=True, capture_output=capture, text=True
    )


def prepare_database():
    recreate_database(DATABASE_URL, migrate=False)
    manage("migrate", "-v0")
    manage(
        "shell",
        "-c",
        "from accounts.models import Business; from loyalty import services; "
        "b = Business.objects.create(name='Bench café', slug='bench-cafe', category='cafe'); "
        "services.update_program(business=b, changed_by=None, accrual_rate=5)",
    )


def write_csv(path: Path, rows: int, prefix: str) -> None:
    rng = random.Random(rows)
    now = datetime.now().replace(microsecond=0)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=";")
        writer.writerow(["Номер чека", "Телефон", "Сумма", "Дата"])
        for index in range(rows):
            customer = rng.randrange(CUSTOMERS)
            when = now - timedelta(seconds=rng.randrange(300 * 86400))
            amount = f"{rng.randrange(100, 9000)},{rng.randrange(100):02d}"
            writer.writerow([f"{prefix}-{index}", f"+7 916 {customer:07d}", amount, when.strftime("%d.%m.%Y %H:%M")])


def run_import(path: Path, rows: int) -> None:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    done = manage("import_transactions", str(path), "--business", "bench-cafe", "--no-progress", capture=True)
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"  {done.stdout.strip().splitlines()[0]}")
    print(
        f"  {rows:,} rows in {elapsed:.1f} s = {rows / elapsed:,.0f} rows/s; "
        f"peak memory of the import process {max(peak, before) / 1024:.0f} MB"
    )


def main():
    print(f"Database: {DATABASE_URL} (recreated)")
    prepare_database()
    with tempfile.TemporaryDirectory() as folder:
        small, large = Path(folder) / "quarter.csv", Path(folder) / "full.csv"
        write_csv(small, ROWS // 4, "q")
        write_csv(large, ROWS, "f")
        print(f"Import of {ROWS // 4:,} rows ({small.stat().st_size / 1e6:.1f} MB):")
        run_import(small, ROWS // 4)
        print(f"Import of {ROWS:,} rows for {CUSTOMERS:,} customers ({large.stat().st_size / 1e6:.1f} MB):")
        run_import(large, ROWS)
        print("Same file again (every row is a duplicate):")
        run_import(large, ROWS)
    print(manage("verify_ledger", capture=True).stdout.strip())


if __name__ == "__main__":
    main()
