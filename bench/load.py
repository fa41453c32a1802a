"""Mixed load on the production shape: gunicorn, PostgreSQL, Redis, driven by wrk.

    apt-get install -y wrk                       # once, by hand: the load generator
    .venv/bin/python bench/load.py               # 30 s of mixed load
    .venv/bin/python bench/load.py --seconds 60 --workers 4 --threads 4
    .venv/bin/python bench/load.py --only reads  # or --only writes: one side alone
    .venv/bin/python bench/load.py --only reads --readers 300  # 300 customers' apps open

What it does:
1. Recreates a PostgreSQL database (LOAD_DATABASE_URL, default
   postgres://postgres@127.0.0.1:5432/svoykrug_load), migrates it, empties a Redis database
   (LOAD_REDIS_URL, default redis://127.0.0.1:6379/13: cache, rate-limit counters, and the
   broker the purchases' notification tasks and the webhooks' processing tasks are queued in;
   no worker runs, so the queue only grows, as during a worker outage).
2. Seeds a circle: --partners partners (program, API key, a YCLIENTS integration, an active
   cross-promo chain to the next partner), --customers customers with 20 bonus lots and their
   accrual entries each (100,000 bonuses to spend), a device each, a purchase each through the
   service (which issues a coupon through the chains), published events with registrations,
   and one "heavy" customer with 60 of everything, for the query counts at page size 50.
3. Counts the SQL queries of each endpoint in-process (Django's test client and
   CaptureQueriesContext) at API_PAGE_SIZE 1 and 50: the same count at both means no query
   per row.
4. Starts gunicorn (--workers sync workers, or gthread workers with --threads > 1) on a free
   port, warms it up, then runs one wrk per endpoint for --seconds, all at once: mobile reads
   (`/me/loyalty/`, `/me/ledger/`, `/me/coupons/`, `/events/`, each with a JWT of a
   different customer per request) and partner writes (purchases, a third of them spending
   bonuses; partial refunds; a CRM webhook), and prints per endpoint: requests, requests/s,
   p50/p95/p99/max latency and errors (non-2xx, socket errors, timeouts), with the totals
   against the issue's targets (>= 1,000 mobile reads/s with p99 < 50 ms, >= 400
   purchases/s with p99 < 100 ms, no errors), and the share of reads answered from the cache
   (svoykrug/answers.py marks them `X-Cache: hit`). Each read is another customer's until
   all have read (every answer a first view, computed); --readers N cycles through N
   customers only, the steady state of N apps open and refreshing.
5. Checks the books afterwards (`verify_ledger`).

Why wrk: the server is what is measured, and on this 2-core machine the load generator
shares the cores with gunicorn and PostgreSQL. wrk (C, an event loop, a Lua script that only
picks a pre-rendered request) spends a few microseconds of CPU per request; a Python client
(requests in processes) spends several hundred, which would take a large part of the CPU
away from the server and measure the client. Requests are rendered once in Python (tokens,
bodies with unique purchase ids) into files that the Lua script cycles through.

What the figures are: wrk is closed-loop (each connection sends its next request when the
last answer came), so the throughput is what the server sustains at that concurrency
(--connections per endpoint) and the latencies include the time a request waits for a free
gunicorn worker; they are not latencies at a fixed offered rate. Client and server share
the 2 cores, so every figure is lower than the server would give on a machine of its own.
Run by hand; nothing here is a test.
"""

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import recreate_database  # noqa: E402

DATABASE_URL = os.environ.get("LOAD_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/svoykrug_load")
REDIS_URL = os.environ.get("LOAD_REDIS_URL", "redis://127.0.0.1:6379/13")
SERVER_ENV = {
    "DATABASE_URL": DATABASE_URL,
    "REDIS_URL": REDIS_URL,
    "DJANGO_SECRET_KEY": "bench-only-secret-key-0123456789abcdef",
    "DJANGO_SETTINGS_MODULE": "svoykrug.settings",
    "DJANGO_DEBUG": "0",
    "LOG_LEVEL": "WARNING",
    "SMSRU_API_ID": "",
    "JWT_ACCESS_TTL_MINUTES": "240",  # the tokens minted here outlive the run
}
os.environ.update(SERVER_ENV)

READS = ("loyalty", "ledger", "coupons", "events")
WRITES = ("purchases", "refunds", "webhook")
# Connections (concurrent clients) per endpoint: the mix of the load.
CONNECTIONS = {"loyalty": 4, "ledger": 2, "coupons": 2, "events": 2, "purchases": 6, "refunds": 1, "webhook": 1}
HEAVY_PHONE = "+79770000000"
WEBHOOK_BODY = (ROOT / "tests/fixtures/yclients/webhook_record_update.json").read_bytes()

LUA = r"""
-- Cycles through pre-rendered requests (one per line: METHOD, PATH, AUTHORIZATION, BODY, tab-separated),
-- counts the statuses of failed answers per thread, and prints one JSON line at the end.
local requests, index = {}, 0
failed, first_error, cache_hits = {}, "", 0  -- globals: done() reads them from each thread

function init(args)
  for line in io.lines(args[1]) do
    local method, path, auth, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
    local headers = {}
    if auth ~= "" then headers["Authorization"] = auth end
    if body ~= "" then headers["Content-Type"] = "application/json" else body = nil end
    requests[#requests + 1] = wrk.format(method, path, headers, body)
  end
end

function request()
  index = index % #requests + 1
  return requests[index]
end

function response(status, headers, body)
  if headers["X-Cache"] == "hit" then cache_hits = cache_hits + 1 end
  if status >= 400 then
    failed[status] = (failed[status] or 0) + 1
    if first_error == "" then first_error = tostring(status) .. " " .. string.sub(body or "", 1, 200) end
  end
end

local threads = {}
function setup(thread) table.insert(threads, thread) end

function done(summary, latency, requests)
  local statuses, sample, hits = {}, "", 0
  for _, thread in ipairs(threads) do
    hits = hits + thread:get("cache_hits")
    for status, count in pairs(thread:get("failed")) do
      statuses[#statuses + 1] = string.format('"%d": %d', status, count)
    end
    if sample == "" then sample = thread:get("first_error") end
  end
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d, "timeouts": %d, '
      .. '"cache_hits": %d, "p50": %d, "p95": %d, "p99": %d, "max": %d, "statuses": {%s}, "sample": %q}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write, e.timeout, hits,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max,
    table.concat(statuses, ", "), sample))
end
"""


def say(text: str) -> None:
    print(text, flush=True)


# --- The circle ---------------------------------------------------------------------------------------


def seed(partners: int, customers: int) -> dict:
    """The circle, and what the load needs of it: API keys, webhook URLs, phones, tokens."""
    from datetime import timedelta
    from decimal import Decimal

    from django.db import connection
    from django.utils import timezone
    from rest_framework_simplejwt.tokens import AccessToken

    from accounts.models import Business, Membership, User
    from accounts.services import create_api_key
    from crosspromo.models import CrossPromoChain
    from events import services as events
    from integrations.models import CRMIntegration
    from loyalty import services as loyalty
    from loyalty.models import Transaction

    started = time.perf_counter()
    now = timezone.now()
    businesses, keys, webhooks = [], {}, []
    for index in range(partners):
        business = Business.objects.create(name=f"Партнёр {index:02d}", slug=f"load-{index:02d}", category="cafe")
        loyalty.update_program(
            business=business, changed_by=None, accrual_rate=5, max_redeem_share=50, hold_days=0, welcome_bonus=0
        )
        keys[business.pk] = create_api_key(business=business, name="load")[1]
        integration = CRMIntegration(business=business, provider="yclients", config={"company_id": "4564"})
        integration.credentials = {"user_token": "load-token"}
        integration.save()
        webhooks.append(f"/api/v1/integrations/{integration.pk}/webhook/{integration.webhook_secret}/")
        businesses.append(business)
    for source, target in zip(businesses, businesses[1:] + businesses[:1], strict=True):
        CrossPromoChain.objects.create(
            source=source,
            target=target,
            status=CrossPromoChain.Status.ACTIVE,
            reward_kind=CrossPromoChain.Reward.BONUS,
            reward_value=Decimal("50.00"),
            per_customer_limit=1000,
            starts_at=now - timedelta(days=1),
        )

    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO accounts_user (id, phone, first_name, last_name, email, marketing_consent, is_staff,
                                       is_active, is_superuser, date_joined, password, first_app_login_at)
            SELECT md5('load' || g)::uuid, '+7977' || lpad(g::text, 7, '0'), 'Гость', '', '', true, false,
                   true, false, now(), '!', now()
            FROM generate_series(0, %(customers)s) g;

            INSERT INTO loyalty_bonusaccount (user_id, balance, lifetime_earned, clawback_due, spend_365,
                                              created_at, updated_at)
            SELECT id, 100000.00, 100000.00, 0, 0, now(), now() FROM accounts_user WHERE phone LIKE '+7977%%';

            INSERT INTO loyalty_bonuslot (account_id, business_id, amount, remaining, spendable_from, expires_at,
                                          created_at)
            SELECT a.id, (SELECT id FROM accounts_business ORDER BY slug OFFSET (lot %% %(partners)s) LIMIT 1),
                   5000.00, 5000.00, now() - interval '30 days', now() + interval '300 days' + lot * interval '1 day',
                   now() - interval '30 days' + lot * interval '1 hour'
            FROM loyalty_bonusaccount a CROSS JOIN generate_series(1, 20) lot;

            INSERT INTO loyalty_ledgerentry (account_id, kind, amount, business_id, lot_id, idempotency_key,
                                             reason, created_at)
            SELECT account_id, 'accrual', amount, business_id, id, 'load-accrual:' || id, '', created_at
            FROM loyalty_bonuslot;

            INSERT INTO notifications_device (user_id, token, platform, app_version, is_active, created_at,
                                              last_seen_at, deactivated_reason)
            SELECT id, 'fcm-load-' || phone, 'android', '1.0', true, now(), now(), ''
            FROM accounts_user WHERE phone LIKE '+7977%%';
            """,
            {"customers": customers, "partners": partners},
        )
    users = list(User.objects.filter(phone__startswith="+7977").order_by("phone"))
    # A purchase each through the service (accrual, tier, a coupon from the chain), 10,000 roubles
    # to refund a rouble at a time; the heavy customer buys 60 times.
    refundable = []
    for index, user in enumerate(users):
        business = businesses[index % partners]
        for number in range(60 if user.phone == HEAVY_PHONE else 1):
            external_id = f"seed-{index}-{number}"
            loyalty.record_transaction(
                business=business, external_id=external_id, customer=user, amount=Decimal("10000.00")
            )
            refundable.append((keys[business.pk], external_id))
    heavy = next(user for user in users if user.phone == HEAVY_PHONE)
    manager = User.objects.create_user(phone="+79770999999")
    Membership.objects.create(user=manager, business=businesses[0], role=Membership.Role.MANAGER)
    for index in range(60):
        starts = now + timedelta(days=2 + index % 20, hours=index)
        event = events.create_event(
            events.EventCreate(
                business=businesses[index % partners],
                title=f"Событие {index}",
                starts_at=starts,
                ends_at=starts + timedelta(hours=2),
                capacity=500,
            ),
            manager if index % partners == 0 else _manager_of(businesses[index % partners]),
        )
        for user in [heavy, *users[index * 5 : index * 5 + 5]]:
            events.register_for_event(user, event)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    say(
        f"seeded in {time.perf_counter() - started:.0f} s: {partners} partners, {len(users):,} customers, "
        f"{Transaction.objects.count():,} purchases, 60 events"
    )
    return {
        "keys": keys,
        "businesses": [business.pk for business in businesses],
        "webhooks": webhooks,
        "phones": [user.phone for user in users],
        "tokens": [str(AccessToken.for_user(user)) for user in users],
        "heavy_token": str(AccessToken.for_user(heavy)),
        "refundable": refundable,
    }


def _manager_of(business):
    from accounts.models import Membership, User

    user, _created = User.objects.get_or_create(phone=f"+7977099{business.slug[-2:]}00")
    Membership.objects.get_or_create(user=user, business=business, role=Membership.Role.MANAGER)
    return user


# --- Queries per endpoint --------------------------------------------------------------------------


def count_queries(circle: dict) -> None:
    from django.db import connection
    from django.test import override_settings
    from django.test.utils import CaptureQueriesContext
    from rest_framework.test import APIClient

    heavy = {"HTTP_AUTHORIZATION": f"Bearer {circle['heavy_token']}"}
    business = circle["businesses"][0]
    partner = {"HTTP_AUTHORIZATION": f"Api-Key {circle['keys'][business]}"}
    calls = [
        ("GET /me/loyalty/", "get", "/api/v1/me/loyalty/", None, heavy),
        ("GET /me/ledger/", "get", "/api/v1/me/ledger/", None, heavy),
        ("GET /me/transactions/", "get", "/api/v1/me/transactions/", None, heavy),
        ("GET /me/coupons/", "get", "/api/v1/me/coupons/", None, heavy),
        ("GET /me/tickets/", "get", "/api/v1/me/tickets/", None, heavy),
        ("GET /events/", "get", "/api/v1/events/", None, heavy),
        ("GET /businesses/", "get", "/api/v1/businesses/", None, {}),
    ]
    counts: dict[str, list] = {}
    with override_settings(ALLOWED_HOSTS=["*"]):
        client = APIClient()
        for size in (1, 50):
            with override_settings(API_PAGE_SIZE=size):
                for name, method, path, body, headers in calls:
                    record(counts, name, client, method, path, body, headers)
                writes = [
                    (
                        "POST purchase",
                        "/api/v1/partner/transactions/",
                        {"external_id": f"q-{size}", "phone": circle["phones"][1], "amount": "500.00"},
                        partner,
                    ),
                    (
                        "POST purchase + redeem",
                        "/api/v1/partner/transactions/",
                        {
                            "external_id": f"q-r-{size}",
                            "phone": circle["phones"][1],
                            "amount": "500.00",
                            "redeem": "10",
                        },
                        partner,
                    ),
                    (
                        "POST refund (partial)",
                        f"/api/v1/partner/transactions/q-{size}/refund/",
                        {"amount": "1.00", "refund_id": f"q-{size}"},
                        partner,
                    ),
                ]
                for name, path, body, headers in writes:
                    record(counts, name, client, "post", path, body, headers)
                webhook_client = APIClient()
                with CaptureQueriesContext(connection) as queries:
                    response = webhook_client.generic(
                        "POST", circle["webhooks"][0], WEBHOOK_BODY, content_type="application/json"
                    )
                counts.setdefault("POST CRM webhook", []).append((len(queries), response.status_code))
    say("\nSQL queries per request (in-process, Django test client), at API_PAGE_SIZE 1 and 50:")
    say(f"  {'endpoint':<26} {'size 1':>7} {'size 50':>8}")
    for name, ((one, status_one), (fifty, status_fifty)) in counts.items():
        if name.startswith("POST"):
            flag = "   (no page: two different requests)" if one != fifty else ""
        else:
            flag = "" if one == fifty else "   <- grows with the page"
        bad = "" if status_one < 400 and status_fifty < 400 else f"   (HTTP {status_one}/{status_fifty})"
        say(f"  {name:<26} {one:>7} {fifty:>8}{flag}{bad}")


def record(counts, name, client, method, path, body, headers):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        send = client.get if method == "get" else partial(client.post, data=body, format="json")
        response = send(path, **headers)
    counts.setdefault(name, []).append((len(queries), response.status_code))


# --- The load ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gunicorn(port: int, workers: int, threads: int) -> subprocess.Popen:
    import requests

    command = [str(ROOT / ".venv/bin/gunicorn"), "svoykrug.wsgi", "--bind", f"127.0.0.1:{port}"]
    command += ["--workers", str(workers), "--log-level", "warning", "--backlog", "2048"]
    if threads > 1:
        command += ["--worker-class", "gthread", "--threads", str(threads), "--keep-alive", "30"]
    server = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **SERVER_ENV})
    for _ in range(200):
        try:
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return server
        except requests.RequestException:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("gunicorn did not start")


def write_requests(folder: Path, circle: dict, seconds: int, readers: int | None) -> dict[str, Path]:
    """One file of requests per endpoint, enough that purchases never repeat an id."""
    rng = random.Random(9)
    tokens, phones = circle["tokens"], circle["phones"]
    keys, businesses = circle["keys"], circle["businesses"]
    files = {}

    def write(name, lines):
        path = folder / f"{name}.txt"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        files[name] = path

    for name, path in [
        ("loyalty", "/api/v1/me/loyalty/"),
        ("ledger", "/api/v1/me/ledger/"),
        ("coupons", "/api/v1/me/coupons/"),
        ("events", "/api/v1/events/"),
    ]:
        write(name, [f"GET\t{path}\tBearer {token}\t" for token in tokens[:readers]])
    purchases = []
    for index in range(max(20_000, 1500 * seconds)):
        business = businesses[index % len(businesses)]
        body = {"external_id": f"load-{index}", "phone": rng.choice(phones), "amount": f"{rng.randrange(300, 3000)}.00"}
        if index % 3 == 0:
            body["redeem"] = "50.00"
        purchases.append(f"POST\t/api/v1/partner/transactions/\tApi-Key {keys[business]}\t{json.dumps(body)}")
    write("purchases", purchases)
    refunds = []
    for index in range(max(5_000, 300 * seconds)):
        key, external_id = circle["refundable"][index % len(circle["refundable"])]
        body = json.dumps({"amount": "1.00", "refund_id": f"load-r-{index}"})
        refunds.append(f"POST\t/api/v1/partner/transactions/{external_id}/refund/\tApi-Key {key}\t{body}")
    write("refunds", refunds)
    body = json.dumps(json.loads(WEBHOOK_BODY), ensure_ascii=False)
    write("webhook", [f"POST\t{url}\t\t{body}" for url in circle["webhooks"]])
    return files


def run_wrk(port: int, files: dict[str, Path], names, seconds: int, lua: Path) -> dict:
    processes = {}
    for name in names:
        processes[name] = subprocess.Popen(
            [
                "wrk",
                "-t1",
                f"-c{CONNECTIONS[name]}",
                f"-d{seconds}s",
                "--timeout",
                "10s",
                "-s",
                str(lua),
                f"http://127.0.0.1:{port}",
                "--",
                str(files[name]),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    results = {}
    for name, process in processes.items():
        output, _ = process.communicate()
        line = next((line for line in output.splitlines() if line.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"wrk for {name} printed no result:\n{output}")
        results[name] = json.loads(line[len("RESULT ") :])
    return results


def report(results: dict, seconds: int) -> None:
    say(
        f"\n{'endpoint':<12} {'conns':>5} {'requests':>9} {'req/s':>8} {'p50 ms':>7} {'p95 ms':>7} "
        f"{'p99 ms':>7} {'max ms':>7} {'errors':>7} {'cached':>7}"
    )
    for name, result in results.items():
        rate = result["requests"] / (result["duration_us"] / 1e6)
        errors = result["status_errors"] + result["socket_errors"] + result["timeouts"]
        say(
            f"{name:<12} {CONNECTIONS[name]:>5} {result['requests']:>9,} {rate:>8.0f} {result['p50'] / 1000:>7.1f} "
            f"{result['p95'] / 1000:>7.1f} {result['p99'] / 1000:>7.1f} {result['max'] / 1000:>7.1f} {errors:>7}"
            f" {cached_share(result):>7}"
        )
        if errors:
            say(
                f"{'':<12} statuses {result['statuses']}, socket errors {result['socket_errors']}, "
                f"timeouts {result['timeouts']}; e.g. {result['sample']}"
            )
    reads = [results[name] for name in READS if name in results]
    if reads:
        rate = sum(r["requests"] for r in reads) / (max(r["duration_us"] for r in reads) / 1e6)
        worst = max(r["p99"] for r in reads) / 1000
        errors = sum(r["status_errors"] + r["socket_errors"] + r["timeouts"] for r in reads)
        verdict = "met" if rate >= 1000 and worst < 50 and not errors else "MISSED"
        say(
            f"\nmobile reads: {rate:.0f}/s, worst p99 {worst:.1f} ms, {errors} errors "
            f"(target >= 1,000/s, p99 < 50 ms, 0 errors: {verdict})"
        )
    if "purchases" in results:
        r = results["purchases"]
        rate = r["requests"] / (r["duration_us"] / 1e6)
        errors = r["status_errors"] + r["socket_errors"] + r["timeouts"]
        verdict = "met" if rate >= 400 and r["p99"] / 1000 < 100 and not errors else "MISSED"
        say(
            f"purchases: {rate:.0f}/s, p99 {r['p99'] / 1000:.1f} ms, {errors} errors "
            f"(target >= 400/s, p99 < 100 ms, 0 errors: {verdict})"
        )


def cached_share(result: dict) -> str:
    """The share of answers served from the cache (svoykrug/answers.py marks them X-Cache: hit)."""
    if not result["cache_hits"]:
        return "-"
    return f"{result['cache_hits'] / max(1, result['requests']):.0%}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=1, help="threads per worker (> 1: gthread workers)")
    parser.add_argument("--partners", type=int, default=20)
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--only", choices=["reads", "writes"], help="one side of the mix alone")
    parser.add_argument(
        "--readers",
        type=int,
        help="customers whose apps read (default: every customer, each read another's: the cache is cold)",
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install -y wrk")

    say(f"database {DATABASE_URL} (recreated), Redis {REDIS_URL} (emptied); {os.cpu_count()} CPUs")
    recreate_database(DATABASE_URL)
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    import django

    django.setup()
    circle = seed(args.partners, args.customers)
    count_queries(circle)

    names = READS if args.only == "reads" else WRITES if args.only == "writes" else READS + WRITES
    port = free_port()
    server = start_gunicorn(port, args.workers, args.threads)
    kind = f"gthread, {args.threads} threads each" if args.threads > 1 else "sync"
    try:
        with tempfile.TemporaryDirectory() as folder:
            lua = Path(folder) / "mix.lua"
            lua.write_text(LUA)
            files = write_requests(Path(folder), circle, args.seconds, args.readers)
            run_wrk(port, {n: files[n] for n in names}, names, 3, lua)  # warm-up: imports, connections
            readers = f"{min(args.readers or len(circle['tokens']), len(circle['tokens'])):,} customers reading"
            say(
                f"\nload: {args.seconds} s, gunicorn {args.workers} workers ({kind}), wrk 1 thread per endpoint, "
                f"{readers}"
            )
            results = run_wrk(port, files, names, args.seconds, lua)
    finally:
        server.terminate()
        server.wait()
    report(results, args.seconds)
    done = subprocess.run([sys.executable, "manage.py", "verify_ledger"], cwd=ROOT, capture_output=True, text=True)
    say(f"\nverify_ledger: {(done.stdout + done.stderr).strip()}")
    redis.Redis.from_url(REDIS_URL).flushdb()


if __name__ == "__main__":
    main()
