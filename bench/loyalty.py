"""Loyalty speed on the production shape: gunicorn on PostgreSQL, driven over HTTP.

1. Purchases: starts gunicorn against a fresh PostgreSQL database (and Redis as the
   broker of the notifications each purchase queues), then posts purchases
   from many customers to the partner API from parallel clients (keep-alive sessions) and
   reports purchases per second and p50/p99 latency.
2. Expiry: fills the same database with 1,000,000 expired lots (and their ledger entries,
   so the books balance) spread over 100,000 customers, and times check_bonus_expiration().

    .venv/bin/python bench/loyalty.py
    BENCH_PURCHASES=6000 BENCH_CLIENTS=16 BENCH_WORKERS=4 BENCH_LOTS=1000000 .venv/bin/python bench/loyalty.py

Needs PostgreSQL (BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/svoykrug_bench,
recreated on every run). Run by hand; nothing here is a test.
"""

import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import fill_expired_lots, recreate_database  # noqa: E402

DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/svoykrug_bench")
PURCHASES = int(os.environ.get("BENCH_PURCHASES", "6000"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "16"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "4"))
CUSTOMERS = int(os.environ.get("BENCH_CUSTOMERS", "2000"))
LOTS = int(os.environ.get("BENCH_LOTS", "1000000"))
LOT_ACCOUNTS = int(os.environ.get("BENCH_LOT_ACCOUNTS", "100000"))
PORT = int(os.environ.get("BENCH_PORT", "8765"))
# The production shape: notifications go to a Redis broker (nobody consumes them here; the
# database is emptied afterwards). Set BENCH_REDIS_URL= (empty) to run tasks inline instead.
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")

os.environ.update(
    {
        "DATABASE_URL": DATABASE_URL,
        "DJANGO_SECRET_KEY": "bench-only-secret-key-0123456789abcdef",
        "DJANGO_SETTINGS_MODULE": "svoykrug.settings",
        "LOG_LEVEL": "WARNING",
        "REDIS_URL": REDIS_URL,
        "SMSRU_API_ID": "",
        # The bench measures the purchase path, not the per-key rate limit.
        "THROTTLE_PARTNER_RATE": "off",
    }
)


def prepare_business() -> str:
    import django

    django.setup()
    from accounts.models import Business
    from accounts.services import create_api_key
    from loyalty import services

    business = Business.objects.create(name="Bench café", slug="bench-cafe", category="cafe")
    services.update_program(business=business, changed_by=None, accrual_rate=5, welcome_bonus=100)
    return create_api_key(business=business, name="bench")[1]


def start_gunicorn():
    server = subprocess.Popen(
        [
            str(ROOT / ".venv/bin/gunicorn"),
            "svoykrug.wsgi",
            "--bind",
            f"127.0.0.1:{PORT}",
            "--workers",
            str(WORKERS),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
    )
    import requests

    for _ in range(100):
        try:
            requests.get(f"http://127.0.0.1:{PORT}/healthz", timeout=1)
            return server
        except requests.RequestException:  # not listening yet, or workers still booting
            time.sleep(0.1)
    server.kill()
    raise SystemExit("gunicorn did not start")


def drive_purchases(raw_key: str) -> None:
    import requests

    local = threading.local()
    latencies: list[float] = []
    failures: list[int] = []

    def session():
        if not hasattr(local, "session"):
            local.session = requests.Session()
            local.session.headers["Authorization"] = f"Api-Key {raw_key}"
        return local.session

    def purchase(index):
        body = {
            "external_id": f"bench-{index}",
            "phone": f"+7999{index % CUSTOMERS:07d}",
            "amount": f"{300 + index % 700}.50",
        }
        if index >= CUSTOMERS * 2 and index % 4 == 0:
            body["redeem"] = "10.00"
        started = time.perf_counter()
        response = session().post(f"http://127.0.0.1:{PORT}/api/v1/partner/transactions/", json=body, timeout=30)
        latencies.append(time.perf_counter() - started)
        if response.status_code != 201:
            failures.append(response.status_code)

    # Warm up every worker (imports, connections) before the clock starts.
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(purchase, range(PURCHASES, PURCHASES + 200)))
    latencies.clear()
    failures.clear()

    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(purchase, range(PURCHASES)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    print(
        f"purchases: {PURCHASES} from {CUSTOMERS} customers, {CLIENTS} clients, {WORKERS} gunicorn workers: "
        f"{PURCHASES / elapsed:.0f}/s, p50 {statistics.median(latencies) * 1000:.1f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99) - 1] * 1000:.1f} ms, non-201: {len(failures)}"
    )


def time_expiry() -> None:
    from django.utils import timezone

    from loyalty.models import BonusLot
    from loyalty.selectors import ledger_mismatches
    from loyalty.services import check_bonus_expiration

    open_lots = BonusLot.objects.filter(remaining__gt=0, expires_at__lte=timezone.now()).count()
    started = time.perf_counter()
    affected = check_bonus_expiration()
    elapsed = time.perf_counter() - started
    started = time.perf_counter()
    again = check_bonus_expiration()
    second = time.perf_counter() - started
    print(
        f"expiry: {open_lots} expired lots of {len(set(affected))} customers in {elapsed:.1f} s; "
        f"second run {len(again)} customers in {second:.2f} s; books balance: {ledger_mismatches(limit=1) == []}"
    )


def main():
    recreate_database(DATABASE_URL)
    raw_key = prepare_business()
    server = start_gunicorn()
    try:
        drive_purchases(raw_key)
    finally:
        server.terminate()
        server.wait()
        if REDIS_URL:
            import redis

            redis.Redis.from_url(REDIS_URL).flushdb()
    fill_expired_lots(lots=LOTS, accounts=LOT_ACCOUNTS, tag="bench")
    time_expiry()


if __name__ == "__main__":
    main()
