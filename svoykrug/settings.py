"""Svoy Krug settings: one file, every value from an environment variable.

Each variable has the embedded default of DESIGN.md ("Storage and services"): with
nothing set the project runs on SQLite under var/, a local-memory cache, eager Celery
tasks and console backends for SMS. Production sets DATABASE_URL, REDIS_URL,
CLICKHOUSE_URL, DJANGO_SECRET_KEY and the providers' credentials. `.env.example` and
the README list every variable.
"""

import re
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path

import environ
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()


def env_positive_int(name: str, default: int) -> int:
    """An integer limit that must be at least 1; a bad value stops start-up.

    Throughout this file an empty variable counts as unset: `.env.example` lists every
    variable, most of them empty."""
    value = env.int(name, default=default)
    if value < 1:
        raise ImproperlyConfigured(f"{name} must be a positive integer, got {value}.")
    return value


def env_non_negative_int(name: str, default: int) -> int:
    """An integer that may be 0 (off); empty means the default; a negative value stops start-up."""
    value = env.int(name, default=default) if env.str(name, default="") else default
    if value < 0:
        raise ImproperlyConfigured(f"{name} must be 0 or more, got {value}.")
    return value


def env_money(name: str, default: str) -> Decimal:
    """An amount of roubles, at least 0 with at most two decimal places; a bad value stops start-up."""
    raw = env.str(name, default="") or default
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ImproperlyConfigured(f"{name} must be an amount of roubles, got {raw!r}.") from None
    if not value.is_finite() or value < 0 or value != value.quantize(Decimal("0.01")):
        raise ImproperlyConfigured(f"{name} must be a non-negative amount with at most two decimals, got {raw!r}.")
    return value.quantize(Decimal("0.01"))


def env_bool_or(name: str, default: bool) -> bool:
    """A 0/1 flag whose default depends on other settings; empty counts as unset."""
    return env.bool(name) if env.str(name, default="") else default


_RATE = re.compile(r"(\d+)/(s|sec|second|m|min|minute|h|hour|d|day)")


def env_rate(name: str, default: str) -> str | None:
    """A throttle rate, `N/s|min|hour|day` (DRF's form), or `off` for no limit (None)."""
    raw = (env.str(name, default="") or default).strip().lower().replace(" ", "")
    if raw == "off":
        return None
    match = _RATE.fullmatch(raw)
    if not match or int(match.group(1)) < 1:
        raise ImproperlyConfigured(f"{name} must be a rate like 100/min (s, min, hour, day) or off, got {raw!r}.")
    return f"{int(match.group(1))}/{match.group(2)}"


def env_phone_code_map(name: str) -> dict[str, str]:
    """`+79990000000:123456,+79990000001:654321` → {phone: code}; the phones stay as written
    here and are normalised by the accounts app, which owns phone parsing."""
    mapping = {}
    for item in env.list(name, default=[]):
        phone, sep, code = item.partition(":")
        if not sep or not phone.strip() or not code.strip().isdigit():
            raise ImproperlyConfigured(f"{name}: expected PHONE:DIGITS pairs separated by commas, got {item!r}.")
        mapping[phone.strip()] = code.strip()
    return mapping


# --- Core -----------------------------------------------------------------------------

DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set. Set DJANGO_SECRET_KEY to a long random string "
            "(or set DJANGO_DEBUG=1 for local development)."
        )
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"

ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=[]) or (["*"] if DEBUG else ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])
# How many reverse proxies stand in front of gunicorn: the client's IP is then taken from
# X-Forwarded-For at that depth. 0 means REMOTE_ADDR is the client.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "anymail",
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "accounts",
    "loyalty",
    "crosspromo",
    "events",
    "analytics",
    "integrations",
    "notifications",
]

MIDDLEWARE = [
    # First: every later log line of the request carries its id.
    "svoykrug.middleware.RequestContextMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    # Before CSRF, which reads the body of form posts.
    "svoykrug.middleware.BodySizeLimitMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "svoykrug.urls"
WSGI_APPLICATION = "svoykrug.wsgi.application"
AUTH_USER_MODEL = "accounts.User"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Storage --------------------------------------------------------------------------

# An empty variable counts as unset, so `DATABASE_URL=` falls back to the embedded default.
DATABASE_URL = env.str("DATABASE_URL", default="") or f"sqlite:///{VAR_DIR / 'svoykrug.sqlite3'}"
DATABASES = {"default": env.db_url_config(DATABASE_URL)}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Wait for a writer instead of failing with "database is locked" under parallel requests.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20

REDIS_URL = env.str("REDIS_URL", default="")
# A Redis that hangs must not hang requests: short socket timeouts (seconds) make it an error,
# which the code answers as "unavailable" (login) or works around (everything else).
REDIS_CONNECT_TIMEOUT_SECONDS = env.float("REDIS_CONNECT_TIMEOUT_SECONDS", default=1.0)
REDIS_SOCKET_TIMEOUT_SECONDS = env.float("REDIS_SOCKET_TIMEOUT_SECONDS", default=3.0)
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "svoykrug.cache.RedisCache",  # Django's, keeping its redis-py clients (svoykrug/cache.py)
            "LOCATION": REDIS_URL,
            "OPTIONS": {
                "socket_connect_timeout": REDIS_CONNECT_TIMEOUT_SECONDS,
                "socket_timeout": REDIS_SOCKET_TIMEOUT_SECONDS,
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "svoykrug"}}

# The mobile app's busiest reads (balance, history, coupons, events) are kept rendered in the
# cache per customer until what they show changes (svoykrug/answers.py); this is the longest
# an answer lives, which bounds how long a renamed partner can lag in one. 0 turns it off,
# the default without Redis: a cache local to each process cannot be renewed by the others.
ANSWER_CACHE_SECONDS = env_non_negative_int("ANSWER_CACHE_SECONDS", 300 if REDIS_URL else 0)

# Uploaded files (CSV imports waiting for the worker). Web and worker must share it:
# one host's disk, or a shared volume, or object storage through Django's STORAGES.
MEDIA_ROOT = env.str("MEDIA_ROOT", default="") or str(VAR_DIR / "media")
MEDIA_URL = "/media/"  # never served: uploads are private

# clickhouse://user:password@host:9000/database; empty means chDB in-process under var/.
CLICKHOUSE_URL = env.str("CLICKHOUSE_URL", default="")
# chDB's folder when there is no CLICKHOUSE_URL (one process owns it).
CHDB_PATH = env.str("CHDB_PATH", default="") or str(VAR_DIR / "chdb")
# Every warehouse read stops after this many seconds.
WAREHOUSE_QUERY_TIMEOUT_SECONDS = env_positive_int("WAREHOUSE_QUERY_TIMEOUT_SECONDS", 30)
# Connecting to the ClickHouse server gives up after this long (a hanging server is an error).
WAREHOUSE_CONNECT_TIMEOUT_SECONDS = env_positive_int("WAREHOUSE_CONNECT_TIMEOUT_SECONDS", 3)
# The export to the warehouse: rows per insert, and how far behind its watermark each run
# looks again (rows committed late by long transactions).
WAREHOUSE_EXPORT_BATCH_ROWS = env_positive_int("WAREHOUSE_EXPORT_BATCH_ROWS", 10_000)
WAREHOUSE_EXPORT_OVERLAP_MINUTES = env_positive_int("WAREHOUSE_EXPORT_OVERLAP_MINUTES", 10)
# Without a Celery worker (the embedded defaults) the web process exports before a
# dashboard when the last export is older than this.
WAREHOUSE_INLINE_EXPORT_SECONDS = env_positive_int("WAREHOUSE_INLINE_EXPORT_SECONDS", 60)
# /readyz reports the warehouse as lagging past this many seconds behind.
WAREHOUSE_MAX_LAG_SECONDS = env_positive_int("WAREHOUSE_MAX_LAG_SECONDS", 600)
# Churn risk (analytics/churn.py): the probability of no purchase in the next this many days.
# Training reads features at as_of − 2·horizon labelled by the next horizon, and checks them
# on features at as_of − horizon labelled by the horizon up to as_of.
CHURN_HORIZON_DAYS = env_positive_int("CHURN_HORIZON_DAYS", 90)
# Training refuses (NotEnoughChurnData) when either window has fewer customers than this…
CHURN_MIN_TRAINING_CUSTOMERS = env_positive_int("CHURN_MIN_TRAINING_CUSTOMERS", 50)
# …or fewer than this many customers who churned, or who stayed.
CHURN_MIN_CLASS_CUSTOMERS = env_positive_int("CHURN_MIN_CLASS_CUSTOMERS", 5)
# The nightly refresh trains a new model when the current one's data is older than this many days.
CHURN_RETRAIN_DAYS = env_positive_int("CHURN_RETRAIN_DAYS", 7)
# A campaign's results count the recipients' purchases at the partner this many days after the send.
CAMPAIGN_ATTRIBUTION_DAYS = env_positive_int("CAMPAIGN_ATTRIBUTION_DAYS", 14)
HEALTHCHECK_TIMEOUT_SECONDS = env_positive_int("HEALTHCHECK_TIMEOUT_SECONDS", 3)

# --- Celery ---------------------------------------------------------------------------

CELERY_BROKER_URL = REDIS_URL or "memory://"
# The broker is Redis too: a hanging one makes enqueueing fail within these timeouts instead of
# holding the request (the OS's TCP connect timeout is minutes). The worker's BRPOP waits 1 s
# at a time, well under the socket timeout.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "socket_connect_timeout": REDIS_CONNECT_TIMEOUT_SECONDS,
    "socket_timeout": REDIS_SOCKET_TIMEOUT_SECONDS,
}
# Without a broker the tasks run in the calling process, so the embedded default works alone.
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
# Messages have their own queue, so a burst of them never delays the ledger's nightly work.
# Queues by the kind of wait (docs/operations.md): the rest goes to "default".
CELERY_TASK_ROUTES = {
    "notifications.tasks.*": {"queue": "notifications"},
    "integrations.tasks.*": {"queue": "integrations"},
    "analytics.tasks.*": {"queue": "analytics"},
}
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE = {
    "flush-expired-tokens": {"task": "accounts.tasks.flush_expired_tokens", "schedule": crontab(hour=3, minute=30)},
    # Times are UTC: 00:10 and 00:40 Moscow time, after the day has turned in the city.
    "expire-bonuses": {"task": "loyalty.tasks.expire_bonuses", "schedule": crontab(hour=21, minute=10)},
    "recompute-tiers": {"task": "loyalty.tasks.recompute_tiers", "schedule": crontab(hour=21, minute=40)},
    "birthday-bonuses": {"task": "loyalty.tasks.grant_birthday_bonuses", "schedule": crontab(hour=6, minute=0)},
    "expiry-reminders": {"task": "loyalty.tasks.remind_expiring_bonuses", "schedule": crontab(hour=7, minute=0)},
    "due-notifications": {"task": "notifications.tasks.send_due_notifications", "schedule": crontab()},
    # Every active integration is synced when its interval is up (INTEGRATIONS_SYNC_INTERVAL_MINUTES).
    "warehouse-export": {"task": "analytics.tasks.aggregate_transactions_to_clickhouse", "schedule": crontab()},
    # 01:30 Moscow time, after the day's bonus expiry and tiers: train the churn model if it is
    # older than CHURN_RETRAIN_DAYS, then score every customer in the circle and at each partner.
    "churn-scores": {"task": "analytics.tasks.refresh_churn_scores", "schedule": crontab(hour=22, minute=30)},
    "crm-sync": {"task": "integrations.tasks.sync_due_integrations", "schedule": crontab(minute="*/5")},
    "crm-webhook-cleanup": {"task": "integrations.tasks.delete_old_webhooks", "schedule": crontab(hour=2, minute=20)},
    "import-upload-cleanup": {
        "task": "integrations.tasks.delete_abandoned_uploads",
        "schedule": crontab(hour=2, minute=25),
    },
    # Imports whose worker died (or whose task was lost) are resumed (IMPORT_STALE_AFTER_SECONDS).
    "import-resume": {"task": "integrations.tasks.resume_stale_imports", "schedule": crontab(minute="*/5")},
    "crosspromo-chains": {"task": "crosspromo.tasks.advance_chains", "schedule": crontab(minute="*/5")},
    "crosspromo-coupon-expiry": {"task": "crosspromo.tasks.expire_coupons", "schedule": crontab(minute="*/10")},
    "crosspromo-referral-rewards": {"task": "crosspromo.tasks.reward_referrals", "schedule": crontab(minute=15)},
    "events-close-votes": {"task": "events.tasks.close_votes", "schedule": crontab(minute="*/5")},
    "events-reminders": {"task": "events.tasks.send_reminders", "schedule": crontab(minute="*/10")},
    "events-finish": {"task": "events.tasks.finish_events", "schedule": crontab(minute=25)},
}

# --- Auth: phone login ------------------------------------------------------------------

PHONE_DEFAULT_REGION = env.str("PHONE_DEFAULT_REGION", default="") or "RU"
# ISO 3166 regions whose numbers get an SMS code; other numbers get a 400 before any SMS.
OTP_ALLOWED_COUNTRIES = [c.strip().upper() for c in env.list("OTP_ALLOWED_COUNTRIES", default=[])] or ["RU"]
OTP_CODE_DIGITS = env_positive_int("OTP_CODE_DIGITS", 6)
OTP_CODE_TTL_SECONDS = env_positive_int("OTP_CODE_TTL_SECONDS", 300)
OTP_MAX_ATTEMPTS = env_positive_int("OTP_MAX_ATTEMPTS", 5)
OTP_RESEND_COOLDOWN_SECONDS = env_positive_int("OTP_RESEND_COOLDOWN_SECONDS", 60)
OTP_MAX_PER_PHONE_PER_DAY = env_positive_int("OTP_MAX_PER_PHONE_PER_DAY", 5)
OTP_MAX_PER_IP_PER_HOUR = env_positive_int("OTP_MAX_PER_IP_PER_HOUR", 10)
# How long a used, expired or locked code is remembered, so that a late verify is told
# why the code is dead instead of "unknown code".
OTP_TOMBSTONE_SECONDS = env_positive_int("OTP_TOMBSTONE_SECONDS", 3600)
# With the code store (Redis) down, login answers 503 and asks to come back after this long.
OTP_UNAVAILABLE_RETRY_AFTER_SECONDS = env_positive_int("OTP_UNAVAILABLE_RETRY_AFTER_SECONDS", 30)
# App-store review logins: PHONE:CODE pairs that log in with a fixed code and get no SMS.
OTP_REVIEW_PHONES = env_phone_code_map("OTP_REVIEW_PHONES")

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env_positive_int("JWT_ACCESS_TTL_MINUTES", 15)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env_positive_int("JWT_REFRESH_TTL_DAYS", 30)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "SIGNING_KEY": env.str("JWT_SIGNING_KEY", default="") or SECRET_KEY,
    "USER_ID_FIELD": "id",
    "USER_ID_CLAIM": "user_id",
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Loyalty ----------------------------------------------------------------------------

# A purchase may be reported this long after it happened (a CRM catching up) ...
LOYALTY_MAX_BACKDATE_DAYS = env_positive_int("LOYALTY_MAX_BACKDATE_DAYS", 365)
# ... and this far "in the future" (clocks of POS terminals drift).
LOYALTY_FUTURE_SKEW_SECONDS = env_positive_int("LOYALTY_FUTURE_SKEW_SECONDS", 300)
LOYALTY_MAX_CHECK_AMOUNT = env.int("LOYALTY_MAX_CHECK_AMOUNT", default=1_000_000)
# Bonuses given back on a refund live at least this long, even if the spent ones were about to expire.
LOYALTY_REFUND_RETURN_MIN_DAYS = env_positive_int("LOYALTY_REFUND_RETURN_MIN_DAYS", 30)
# Lifetime of bonuses granted by a staff adjustment without a business program to follow.
LOYALTY_ADJUSTMENT_LIFETIME_DAYS = env_positive_int("LOYALTY_ADJUSTMENT_LIFETIME_DAYS", 365)
# Accounts locked per statement batch by the nightly expiry and tier recomputation.
LOYALTY_BATCH_ACCOUNTS = env_positive_int("LOYALTY_BATCH_ACCOUNTS", 2000)
# Referrals (circle settings): the bonuses an inviter and a friend get once the friend's
# first paid purchase has stood REFERRAL_HOLD_DAYS unrefunded; an inviter is paid for at most
# REFERRAL_MONTHLY_CAP friends per calendar month; the invitation link is REFERRAL_LINK_BASE + code.
REFERRAL_INVITER_BONUS = env_money("REFERRAL_INVITER_BONUS", "300")
REFERRAL_FRIEND_BONUS = env_money("REFERRAL_FRIEND_BONUS", "200")
REFERRAL_MONTHLY_CAP = env_positive_int("REFERRAL_MONTHLY_CAP", 10)
REFERRAL_HOLD_DAYS = env_positive_int("REFERRAL_HOLD_DAYS", 14)
REFERRAL_LINK_BASE = env.str("REFERRAL_LINK_BASE", default="") or "https://svoykrug.example/r/"
# Events: a customer who cancels at least EVENTS_REFUND_CUTOFF_HOURS before the start gets the
# ticket's bonuses back; the door opens for check-in EVENTS_CHECKIN_OPENS_MINUTES before the
# start; registered customers who did not come are marked no-show EVENTS_NO_SHOW_AFTER_HOURS
# after the end. The mobile list's `near` search takes a radius up to EVENTS_NEAR_MAX_RADIUS_KM.
EVENTS_REFUND_CUTOFF_HOURS = env_positive_int("EVENTS_REFUND_CUTOFF_HOURS", 24)
EVENTS_CHECKIN_OPENS_MINUTES = env_positive_int("EVENTS_CHECKIN_OPENS_MINUTES", 60)
EVENTS_NO_SHOW_AFTER_HOURS = env_positive_int("EVENTS_NO_SHOW_AFTER_HOURS", 24)
EVENTS_MAX_CAPACITY = env_positive_int("EVENTS_MAX_CAPACITY", 10_000)
EVENTS_MAX_DURATION_DAYS = env_positive_int("EVENTS_MAX_DURATION_DAYS", 14)
EVENTS_NEAR_DEFAULT_RADIUS_KM = env_positive_int("EVENTS_NEAR_DEFAULT_RADIUS_KM", 5)
EVENTS_NEAR_MAX_RADIUS_KM = env_positive_int("EVENTS_NEAR_MAX_RADIUS_KM", 50)
# Page size of the mobile app's histories.
API_PAGE_SIZE = env_positive_int("API_PAGE_SIZE", 50)

# --- CRM integrations -------------------------------------------------------------------

# Fernet keys (comma-separated, newest first) that encrypt integrations' credentials at rest;
# older keys still decrypt, so a key is rotated by putting the new one first. Empty: a key
# derived from DJANGO_SECRET_KEY (fine for development; `check --deploy` warns).
INTEGRATIONS_ENCRYPTION_KEYS = env.list("INTEGRATIONS_ENCRYPTION_KEYS", default=[])
# Base URLs of the providers' APIs (tests point them at local fakes). amoCRM, 1C and a
# clinic's Renovatio host can also be set per integration.
YCLIENTS_BASE_URL = (env.str("YCLIENTS_BASE_URL", default="") or "https://api.yclients.com/api/v1").rstrip("/")
IIKO_BASE_URL = (env.str("IIKO_BASE_URL", default="") or "https://api-ru.iiko.services").rstrip("/")
RENOVATIO_BASE_URL = (env.str("RENOVATIO_BASE_URL", default="") or "https://app.rnova.org").rstrip("/")
# YCLIENTS' partner token (one per platform, issued by YCLIENTS to Svoy Krug).
YCLIENTS_PARTNER_TOKEN = env.str("YCLIENTS_PARTNER_TOKEN", default="")
# amoCRM integration (OAuth2 client) registered by Svoy Krug.
AMOCRM_CLIENT_ID = env.str("AMOCRM_CLIENT_ID", default="")
AMOCRM_CLIENT_SECRET = env.str("AMOCRM_CLIENT_SECRET", default="")
AMOCRM_REDIRECT_URI = env.str("AMOCRM_REDIRECT_URI", default="")
# Each HTTP call to a provider: seconds to connect and to read; retries on timeouts and 5xx
# with exponential backoff from this many seconds.
INTEGRATIONS_CONNECT_TIMEOUT_SECONDS = env.float("INTEGRATIONS_CONNECT_TIMEOUT_SECONDS", default=5.0)
INTEGRATIONS_READ_TIMEOUT_SECONDS = env.float("INTEGRATIONS_READ_TIMEOUT_SECONDS", default=30.0)
INTEGRATIONS_HTTP_RETRIES = env.int("INTEGRATIONS_HTTP_RETRIES", default=3)
INTEGRATIONS_HTTP_BACKOFF_SECONDS = env.float("INTEGRATIONS_HTTP_BACKOFF_SECONDS", default=1.0)
# Requests per second to one provider account (YCLIENTS allows 5, amoCRM 7).
INTEGRATIONS_RATE_LIMITS = {
    "yclients": env_positive_int("YCLIENTS_REQUESTS_PER_SECOND", 5),
    "iiko": env_positive_int("IIKO_REQUESTS_PER_SECOND", 5),
    "amocrm": env_positive_int("AMOCRM_REQUESTS_PER_SECOND", 7),
    "onec": env_positive_int("ONEC_REQUESTS_PER_SECOND", 5),
    "renovatio": env_positive_int("RENOVATIO_REQUESTS_PER_SECOND", 3),
}
# Minutes between scheduled syncs, and how far behind the watermark each sync looks again
# (records changed while the last sync ran, clocks that disagree).
INTEGRATIONS_SYNC_INTERVAL_MINUTES = env_positive_int("INTEGRATIONS_SYNC_INTERVAL_MINUTES", 15)
INTEGRATIONS_SYNC_OVERLAP_MINUTES = env_positive_int("INTEGRATIONS_SYNC_OVERLAP_MINUTES", 30)
# A first sync reaches this many days back.
INTEGRATIONS_FIRST_SYNC_DAYS = env_positive_int("INTEGRATIONS_FIRST_SYNC_DAYS", 30)
# Consecutive failed syncs after which an integration is degraded, then failing (owners are told).
INTEGRATIONS_DEGRADED_AFTER = env_positive_int("INTEGRATIONS_DEGRADED_AFTER", 3)
INTEGRATIONS_FAILING_AFTER = env_positive_int("INTEGRATIONS_FAILING_AFTER", 10)
# Raw webhook bodies are kept this long, then deleted; larger bodies are refused (413).
INTEGRATIONS_WEBHOOK_RETENTION_DAYS = env_positive_int("INTEGRATIONS_WEBHOOK_RETENTION_DAYS", 30)
INTEGRATIONS_WEBHOOK_MAX_BYTES = env_positive_int("INTEGRATIONS_WEBHOOK_MAX_BYTES", 1_000_000)
# CSV imports of a partner's history: rows per database batch, the largest upload the
# portal takes, how old a purchase may be, and how many rejected rows a report lists.
IMPORT_BATCH_ROWS = env_positive_int("IMPORT_BATCH_ROWS", 5000)
IMPORT_MAX_UPLOAD_MB = env_positive_int("IMPORT_MAX_UPLOAD_MB", 50)
IMPORT_MAX_AGE_DAYS = env_positive_int("IMPORT_MAX_AGE_DAYS", 3 * 365)
IMPORT_REPORT_MAX_ERRORS = env_positive_int("IMPORT_REPORT_MAX_ERRORS", 1000)
# A running import whose run has written nothing for this long has lost its worker: it is resumed.
IMPORT_STALE_AFTER_SECONDS = env_positive_int("IMPORT_STALE_AFTER_SECONDS", 300)

# --- SMS ------------------------------------------------------------------------------

SMSRU_API_ID = env.str("SMSRU_API_ID", default="")
SMSRU_BASE_URL = (env.str("SMSRU_BASE_URL", default="") or "https://sms.ru").rstrip("/")
SMSRU_SENDER = env.str("SMSRU_SENDER", default="")
SMSRU_TEST_MODE = env.bool("SMSRU_TEST_MODE", default=False)
SMSRU_CONNECT_TIMEOUT_SECONDS = env.float("SMSRU_CONNECT_TIMEOUT_SECONDS", default=3.0)
SMSRU_READ_TIMEOUT_SECONDS = env.float("SMSRU_READ_TIMEOUT_SECONDS", default=10.0)

# --- Push (FCM through firebase-admin) and email (anymail) -----------------------------

# Path to a Firebase service-account JSON file; empty: pushes are logged, not sent.
FCM_CREDENTIALS_FILE = env.str("FCM_CREDENTIALS_FILE", default="")
FCM_PROJECT_ID = env.str("FCM_PROJECT_ID", default="")
# Seconds firebase-admin waits for Google's token endpoint and for each FCM call (its httpTimeout).
FCM_TIMEOUT_SECONDS = env.float("FCM_TIMEOUT_SECONDS", default=10.0)
# Any anymail ESP: "sendgrid" (the default), "mailgun", "postmark", ... with its key below.
EMAIL_ESP = env.str("EMAIL_ESP", default="") or "sendgrid"
EMAIL_ESP_API_KEY = env.str("EMAIL_ESP_API_KEY", default="")
SENDGRID_API_URL = env.str("SENDGRID_API_URL", default="") or "https://api.sendgrid.com/v3/"
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="") or "Свой Круг <noreply@svoykrug.example>"
if EMAIL_ESP_API_KEY:
    EMAIL_BACKEND = f"anymail.backends.{EMAIL_ESP}.EmailBackend"
else:
    # No key: emails are written to the log instead of being sent.
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
ANYMAIL = {
    f"{EMAIL_ESP.upper()}_API_KEY": EMAIL_ESP_API_KEY,
    "SENDGRID_API_URL": SENDGRID_API_URL,
    "SENDGRID_GENERATE_MESSAGE_ID": True,
    # "user:password" that the ESP's event webhook sends with basic auth.
    "WEBHOOK_SECRET": env.str("EMAIL_WEBHOOK_SECRET", default="") or None,
    # SendGrid's signed event webhook: the public key from its settings (base64); checked when set.
    "SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY": env.str("SENDGRID_WEBHOOK_VERIFICATION_KEY", default="") or None,
    # Seconds to wait for the ESP's API (connect and read); past it the send is a temporary error.
    "REQUESTS_TIMEOUT": env.float("EMAIL_TIMEOUT_SECONDS", default=10.0),
}
# Anymail no longer officially supports SendGrid (it still works); the check would warn at every start.
SILENCED_SYSTEM_CHECKS = ["anymail.W003"]

# --- Notifications --------------------------------------------------------------------------

# SMS costs money: past this many roubles of SMS a day, only login codes are sent.
SMS_DAILY_SPEND_CAP_RUB = env.int("SMS_DAILY_SPEND_CAP_RUB", default=2000)
# What one SMS is counted at against the cap (SMS.ru's price for Russia, roughly).
SMS_PRICE_RUB = env.float("SMS_PRICE_RUB", default=5.0)
# Marketing pushes and SMS wait for the morning in the customer's time zone.
NOTIFY_QUIET_HOURS_START = env.str("NOTIFY_QUIET_HOURS_START", default="22:00")
NOTIFY_QUIET_HOURS_END = env.str("NOTIFY_QUIET_HOURS_END", default="09:00")
# How many times a provider's temporary error is retried, with exponential backoff from this many seconds.
NOTIFY_MAX_RETRIES = env_positive_int("NOTIFY_MAX_RETRIES", 5)
NOTIFY_RETRY_BACKOFF_SECONDS = env_positive_int("NOTIFY_RETRY_BACKOFF_SECONDS", 30)
# A message "sending" this long lost its worker and is queued again.
NOTIFY_STALE_SENDING_MINUTES = env_positive_int("NOTIFY_STALE_SENDING_MINUTES", 10)
# An event's messages still undecided this long after their write committed (the broker was
# down, or lost the task) are decided by send_due_notifications instead.
NOTIFY_PENDING_GRACE_SECONDS = env_positive_int("NOTIFY_PENDING_GRACE_SECONDS", 60)
# The sweeper decides them this many at a time, batch after batch for up to this many seconds a
# run (it runs every minute): the backlog of an hour's outage drains in a few runs.
NOTIFY_PENDING_BATCH = env_positive_int("NOTIFY_PENDING_BATCH", 500)
NOTIFY_PENDING_SWEEP_SECONDS = env_positive_int("NOTIFY_PENDING_SWEEP_SECONDS", 45)

# --- API ------------------------------------------------------------------------------

# Rate limits (svoykrug/throttling.py), `N/s|min|hour|day` or `off`. A refused request answers
# 429 with Retry-After. The OTP service's own per-phone and per-address limits stay inside these.
THROTTLE_RATES = {
    # POST /auth/otp/ and POST /auth/otp/verify/, per client address.
    "otp": env_rate("THROTTLE_OTP_RATE", "20/min"),
    "otp_verify": env_rate("THROTTLE_OTP_VERIFY_RATE", "30/min"),
    # The partner API, per API key.
    "partner": env_rate("THROTTLE_PARTNER_RATE", "6000/min"),
    # A CRM's webhook, per integration (the scheduled sync catches up on refused ones).
    "webhook": env_rate("THROTTLE_WEBHOOK_RATE", "600/min"),
    # SMS.ru's delivery callback, per sending address.
    "sms_callback": env_rate("THROTTLE_SMS_CALLBACK_RATE", "600/min"),
}
# The largest request body (bytes, files of multipart uploads not counted) Django reads; a larger
# one answers 413. The API is refused by Content-Length before parsing (svoykrug.middleware);
# the portal's CSV upload is a file, limited by IMPORT_MAX_UPLOAD_MB instead.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_positive_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 1024 * 1024)

REST_FRAMEWORK = {
    "DEFAULT_THROTTLE_RATES": THROTTLE_RATES,
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.authentication.JWTAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "svoykrug.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append("rest_framework.renderers.BrowsableAPIRenderer")

SPECTACULAR_SETTINGS = {
    "TITLE": "Svoy Krug API",
    "DESCRIPTION": (
        "The mobile app's and the partners' API of Svoy Krug, a loyalty network of local "
        'businesses. Errors share one shape: {"error": {"code", "message", "fields"}}.'
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- I18n, time, static -----------------------------------------------------------------

LANGUAGE_CODE = "ru"
LANGUAGES = [("ru", "Русский"), ("en", "English")]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_I18N = True
TIME_ZONE = "Europe/Moscow"
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.str("DJANGO_STATIC_ROOT", default="") or str(BASE_DIR / "staticfiles")

# --- Portal ---------------------------------------------------------------------------

# The partner portal's session login; the admin keeps its own login page.
LOGIN_URL = "/portal/login/"
STATICFILES_DIRS = [BASE_DIR / "svoykrug" / "static"]
# `{% load portal %}`: the portal's template tags (money, phones, navigation) live with its frame.
TEMPLATES[0]["OPTIONS"]["libraries"] = {"portal": "accounts.portal"}

# --- Security ---------------------------------------------------------------------------

# Production sits behind a TLS-terminating proxy that sends X-Forwarded-Proto (set
# DJANGO_BEHIND_TLS_PROXY=1; the proxy must overwrite that header from clients). Then plain
# HTTP is redirected to HTTPS (but not the probes, which the orchestrator calls over HTTP).
BEHIND_TLS_PROXY = env.bool("DJANGO_BEHIND_TLS_PROXY", default=False)
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool_or("DJANGO_SECURE_SSL_REDIRECT", BEHIND_TLS_PROXY and not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
# HSTS on HTTPS answers: a year by default outside DEBUG; 0 turns it off. Preload and
# subdomains are on: every subdomain must serve HTTPS too (turn them off if one does not).
SECURE_HSTS_SECONDS = int(env.str("DJANGO_SECURE_HSTS_SECONDS", default="") or (0 if DEBUG else 31_536_000))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool_or("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool_or("DJANGO_SECURE_HSTS_PRELOAD", True)
SESSION_COOKIE_SECURE = env_bool_or("DJANGO_SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True  # no script of the portal reads it: forms carry {% csrf_token %}
SESSION_COOKIE_SAMESITE = env.str("DJANGO_SESSION_COOKIE_SAMESITE", default="") or "Lax"
if SESSION_COOKIE_SAMESITE not in {"Lax", "Strict"}:
    raise ImproperlyConfigured(
        f"DJANGO_SESSION_COOKIE_SAMESITE must be Lax or Strict, got {SESSION_COOKIE_SAMESITE!r}."
    )
CSRF_COOKIE_SAMESITE = SESSION_COOKIE_SAMESITE
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# --- Demo -------------------------------------------------------------------------------

DEMO_ADMIN_PHONE = env.str("DEMO_ADMIN_PHONE", default="+79990000001")
DEMO_ADMIN_PASSWORD = env.str("DEMO_ADMIN_PASSWORD", default="svoykrug-demo")

# --- Logging ----------------------------------------------------------------------------

# json: one JSON object a line (time, level, logger, message, request_id or task_id/task_name,
# exception); plain: a line for people. JSON outside DEBUG by default.
LOG_FORMAT = (env.str("LOG_FORMAT", default="") or ("plain" if DEBUG else "json")).lower()
if LOG_FORMAT not in {"json", "plain"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or plain, got {LOG_FORMAT!r}.")
LOG_LEVEL = (env.str("LOG_LEVEL", default="") or "INFO").upper()
# A query taking this many milliseconds or more is logged (a WARNING with its SQL, not its
# parameters); 0 logs every query.
SLOW_QUERY_MS = int(env.str("SLOW_QUERY_MS", default="") or 200)
if SLOW_QUERY_MS < 0:
    raise ImproperlyConfigured(f"SLOW_QUERY_MS must be 0 or more, got {SLOW_QUERY_MS}.")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "svoykrug.logs.ContextFilter"}},
    "formatters": {"json": {"()": "svoykrug.logs.JsonFormatter"}, "plain": {"()": "svoykrug.logs.PlainFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django's loggers write through the root's handler, once (not also through Django's defaults).
        "django": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
        "django.server": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
        "django.db.backends": {"level": "WARNING"},
    },
}
