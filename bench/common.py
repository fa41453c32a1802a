"""What several benchmarks do alike: a fresh PostgreSQL database, and customers with expired lots."""

import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent


def recreate_database(database_url: str, *, migrate: bool = True) -> None:
    """Drop and create the database of `database_url` (never the project's own: each bench
    names its own), then migrate it unless told not to. The caller's environment must point
    DATABASE_URL at it for the migration."""
    import psycopg

    name = urlparse(database_url).path.lstrip("/")
    admin_url = database_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    if migrate:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, check=True)


def fill_expired_lots(*, lots: int, accounts: int, tag: str) -> None:
    """`accounts` customers (phones +7988…, ids from `tag`) with `lots` lots between them,
    10.00 each, all expired a day ago, at the first business, with the accrual entries that
    made them (the books balance before an expiry run)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO accounts_user (id, phone, first_name, last_name, email, marketing_consent, is_staff,
                                       is_active, is_superuser, date_joined, password)
            SELECT md5(%(tag)s || g)::uuid, '+7988' || lpad(g::text, 7, '0'), '', '', '', false, false,
                   true, false, now(), '!'
            FROM generate_series(1, %(accounts)s) g;

            INSERT INTO loyalty_bonusaccount (user_id, balance, lifetime_earned, clawback_due, spend_365,
                                              created_at, updated_at)
            SELECT md5(%(tag)s || g)::uuid, (%(lots)s / %(accounts)s) * 10.00, (%(lots)s / %(accounts)s) * 10.00,
                   0, 0, now(), now()
            FROM generate_series(1, %(accounts)s) g;

            INSERT INTO loyalty_bonuslot (account_id, business_id, amount, remaining, spendable_from, expires_at,
                                          created_at)
            SELECT a.id, b.id, 10.00, 10.00, now() - interval '400 days', now() - interval '1 day', now()
            FROM loyalty_bonusaccount a
            JOIN accounts_user u ON u.id = a.user_id AND u.phone LIKE '+7988%%'
            CROSS JOIN generate_series(1, %(lots)s / %(accounts)s)
            CROSS JOIN (SELECT id FROM accounts_business ORDER BY slug LIMIT 1) b;

            INSERT INTO loyalty_ledgerentry (account_id, kind, amount, business_id, lot_id, idempotency_key,
                                             reason, created_at)
            SELECT l.account_id, 'accrual', l.amount, l.business_id, l.id, %(tag)s || '-accrual:' || l.id, '', now()
            FROM loyalty_bonuslot l
            JOIN loyalty_bonusaccount a ON a.id = l.account_id
            JOIN accounts_user u ON u.id = a.user_id AND u.phone LIKE '+7988%%';
            ANALYZE;
            """,
            {"accounts": accounts, "lots": lots, "tag": tag},
        )
