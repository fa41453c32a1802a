"""gunicorn's settings for the web process: `gunicorn -c gunicorn.conf.py svoykrug.wsgi`.

Every value comes from the environment, with the default in brackets:

- GUNICORN_BIND [0.0.0.0:8000]: the address to listen on.
- WEB_CONCURRENCY [2 × the cores this process may use]: worker processes.
- GUNICORN_TIMEOUT [30]: seconds a request may take before its worker is killed and replaced.
- GUNICORN_GRACEFUL_TIMEOUT [30]: seconds a worker has to finish its requests on a restart.
- GUNICORN_MAX_REQUESTS [20000] and GUNICORN_MAX_REQUESTS_JITTER [2000]: a worker is replaced after
  that many requests, plus up to the jitter (so they are not all replaced at once); 0 never. A new
  worker loads Django again (about a second of CPU, while its requests wait), so this is a guard
  against slow leaks, not a routine: at 1,000 a busy worker was replaced every few seconds.
- FORWARDED_ALLOW_IPS [127.0.0.1,::1]: the proxies whose X-Forwarded-Proto gunicorn believes
  (`*` when only the proxy can reach gunicorn).

gunicorn's own lines (starting, a worker booting or timing out) are written as the app's are
(svoykrug.logs: LOG_FORMAT, LOG_LEVEL). Its access log is off: the app's middleware already
writes one access line per request, with its request id.
"""

import os

_TRUE = {"1", "true", "yes", "on", "y", "ok"}


def _env_int(name: str, default: int, *, minimum: int) -> int:
    """An integer from the environment (empty counts as unset); a bad value stops start-up."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}.") from None
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}.")
    return value


def _cores() -> int:
    """The cores this process may run on (a container's CPU set), not the whole machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


bind = os.environ.get("GUNICORN_BIND", "").strip() or "0.0.0.0:8000"
workers = _env_int("WEB_CONCURRENCY", 2 * _cores(), minimum=1)
timeout = _env_int("GUNICORN_TIMEOUT", 30, minimum=1)
graceful_timeout = _env_int("GUNICORN_GRACEFUL_TIMEOUT", 30, minimum=1)
max_requests = _env_int("GUNICORN_MAX_REQUESTS", 20000, minimum=0)
max_requests_jitter = _env_int("GUNICORN_MAX_REQUESTS_JITTER", 2000, minimum=0)
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "").strip() or "127.0.0.1,::1"

# As svoykrug/settings.py decides: JSON lines outside DEBUG.
_debug = os.environ.get("DJANGO_DEBUG", "").strip().lower() in _TRUE
LOG_FORMAT = (os.environ.get("LOG_FORMAT", "").strip() or ("plain" if _debug else "json")).lower()
if LOG_FORMAT not in {"json", "plain"}:
    raise ValueError(f"LOG_FORMAT must be json or plain, got {LOG_FORMAT!r}.")
LOG_LEVEL = (os.environ.get("LOG_LEVEL", "").strip() or "INFO").upper()

loglevel = LOG_LEVEL.lower()
accesslog = None
# The handler, filter and formatters of settings.LOGGING, so the master's lines (before Django
# is loaded) look like every other line. In a worker Django's LOGGING then takes the root's
# handler over; gunicorn's error logger keeps writing through it.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "svoykrug.logs.ContextFilter"}},
    "formatters": {"json": {"()": "svoykrug.logs.JsonFormatter"}, "plain": {"()": "svoykrug.logs.PlainFormatter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context"]},
        "null": {"class": "logging.NullHandler"},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "gunicorn.error": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
        # A logging config turns gunicorn's access log on whatever `accesslog` says: send it nowhere.
        "gunicorn.access": {"handlers": ["null"], "propagate": False},
    },
}
