"""Structured logs: one JSON object a line, each carrying the request id (or the Celery task's
id and name) it was written under; slow queries and failed tasks made visible.

- `bind()` / `unbind()` keep the current request's or task's ids in a context variable; the
  request middleware (svoykrug.middleware) and the Celery signals below set them. A task
  queued during a request carries the request's id in a message header, and its lines in the
  worker carry that id too.
- `ContextFilter`, on the handler, copies them onto every record and masks secrets in paths
  (a webhook's secret segment, phones and device tokens in URLs) whoever logs them.
- `JsonFormatter` writes time (ISO 8601, UTC), level, logger, message, request_id, the task's
  fields, simple `extra` values and the exception text. LOG_FORMAT=json|plain chooses it.
- `slow_query_wrapper` (a `connection.execute_wrapper`) logs a WARNING with the duration and
  the SQL (truncated, never its parameters) for queries over SLOW_QUERY_MS.
"""

import contextlib
import json
import logging
import re
import time
from contextvars import ContextVar, Token
from datetime import UTC, datetime

from django.conf import settings
from django.db import connections

logger = logging.getLogger(__name__)
slow_query_logger = logging.getLogger("svoykrug.db.slow")
task_logger = logging.getLogger("svoykrug.tasks")

CONTEXT_FIELDS = ("request_id", "task_id", "task_name")

_context: ContextVar[dict | None] = ContextVar("svoykrug_log_context", default=None)


def current() -> dict:
    """The ids logs are written under now: request_id, task_id, task_name (those set)."""
    return _context.get() or {}


def bind(**fields) -> Token:
    """Add ids to the current context (a task run eagerly inside a request keeps the request's id)."""
    return _context.set({**current(), **fields})


def unbind(token: Token) -> None:
    _context.reset(token)


# --- What must never reach a log ------------------------------------------------------------

# URL segments that are secrets or personal data: the webhook's secret, a phone in the partner
# API's customer URL, a push device token. Matched in any message, so Django's own "Not Found:
# /path" lines and runserver's request lines are masked too.
_SENSITIVE_PATH = re.compile(r"(/webhook/|/partner/customers/|/me/devices/)[^/?#\s\"']+")
_MASK = r"\1***"
SQL_MAX_CHARS = 1000


def mask_path(path: str) -> str:
    return _SENSITIVE_PATH.sub(_MASK, path)


class ContextFilter(logging.Filter):
    """Put the request/task ids on every record and mask secrets in its message."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = current()
        for name in CONTEXT_FIELDS:
            if getattr(record, name, None) is None:
                setattr(record, name, context.get(name))
        if record.request_id is None:
            # Django logs a 4xx/5xx answer after the middleware has returned, passing the request.
            record.request_id = getattr(getattr(record, "request", None), "request_id", None)
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it for the handler to report
            return True
        masked = mask_path(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


# --- JSON lines ---------------------------------------------------------------------------

# Attributes every LogRecord has; anything else on a record came through `extra=`.
_RECORD_ATTRIBUTES = {
    *vars(logging.LogRecord("", 0, "", 0, "", (), None)),
    "message",
    "asctime",
    "taskName",
    *CONTEXT_FIELDS,
}
_SIMPLE = (str, int, float, bool, type(None))


class JsonFormatter(logging.Formatter):
    """One JSON object per line. `extra` values that are plain strings, numbers or booleans are
    kept as fields; objects (Django passes the request) are left out."""

    def format(self, record: logging.LogRecord) -> str:
        context = current()
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or context.get("request_id"),
        }
        for name in ("task_id", "task_name"):
            value = getattr(record, name, None) or context.get(name)
            if value:
                entry[name] = value
        for key, value in vars(record).items():
            simple = isinstance(value, _SIMPLE)
            if simple and key not in _RECORD_ATTRIBUTES and key not in entry and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


class PlainFormatter(logging.Formatter):
    """Development: `time LEVEL logger [request id] message`."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "request_id", None) is None:
            context = current()
            record.request_id = context.get("request_id") or context.get("task_id") or "-"
        return super().format(record)


# --- Slow queries ---------------------------------------------------------------------------


def slow_query_wrapper(execute, sql, params, many, context):
    """Time each query; past SLOW_QUERY_MS, log it (the SQL without its parameters, which may
    hold personal data)."""
    started = time.monotonic()
    try:
        return execute(sql, params, many, context)
    finally:
        took_ms = (time.monotonic() - started) * 1000
        if took_ms >= settings.SLOW_QUERY_MS:
            text = " ".join(str(sql).split())
            if len(text) > SQL_MAX_CHARS:
                text = text[:SQL_MAX_CHARS] + "…"
            slow_query_logger.warning(
                "Slow query (%d ms): %s",
                took_ms,
                text,
                extra={"duration_ms": round(took_ms, 1), "db": context["connection"].alias},
            )


def watch_queries() -> list:
    """Install the slow-query wrapper on this thread's connections that lack it; returns the
    connections it was added to, for `unwatch_queries`."""
    added = []
    for connection in connections.all():
        if slow_query_wrapper not in connection.execute_wrappers:
            connection.execute_wrappers.append(slow_query_wrapper)
            added.append(connection)
    return added


def unwatch_queries(added: list) -> None:
    for connection in added:
        if slow_query_wrapper in connection.execute_wrappers:
            connection.execute_wrappers.remove(slow_query_wrapper)


# --- Celery ---------------------------------------------------------------------------------

# task id → (context token, connections watched) between task_prerun and task_postrun.
_running_tasks: dict[str, tuple[Token, list]] = {}


# The message header that carries the id of the request (or of the task) that queued a task.
REQUEST_ID_HEADER = "request_id"


def task_queued(sender=None, headers=None, **kwargs):
    """before_task_publish: a task queued while a request (or a task queued by one) is handled
    carries its request id in the message's headers."""
    request_id = current().get("request_id")
    if request_id and headers is not None:
        headers.setdefault(REQUEST_ID_HEADER, request_id)


def queued_under(task) -> str | None:
    """The request id a task's message carries (the worker puts custom headers on the request
    and in its `headers`; `apply(headers=...)` only in `headers`)."""
    request = getattr(task, "request", None)
    value = getattr(request, REQUEST_ID_HEADER, None)
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(REQUEST_ID_HEADER)
    return value if isinstance(value, str) and value else None


def task_started(sender=None, task_id=None, task=None, **kwargs):
    """task_prerun: the task's logs carry its id and name, and the id of the request that queued
    it (a task run eagerly inside a request keeps that request's); its slow queries are logged."""
    name = getattr(task, "name", None) or getattr(sender, "name", None)
    fields = {"task_id": task_id, "task_name": name}
    request_id = queued_under(task)
    if request_id:
        fields["request_id"] = request_id
    _running_tasks[task_id] = (bind(**fields), watch_queries())


def task_finished(sender=None, task_id=None, **kwargs):
    """task_postrun (sent after success and failure alike)."""
    state = _running_tasks.pop(task_id, None)
    if state is None:
        return
    token, added = state
    unwatch_queries(added)
    with contextlib.suppress(ValueError):  # finished in another context than it started: just forget it
        unbind(token)


def task_failed(sender=None, task_id=None, exception=None, einfo=None, **kwargs):
    """task_failure: an ERROR with the task's name, id and exception. Never its arguments,
    which may hold phones, tokens or credentials."""
    name = getattr(sender, "name", None) or "?"
    exc_info = (type(exception), exception, exception.__traceback__) if exception is not None else None
    task_logger.error(
        "Task %s[%s] failed: %s: %s",
        name,
        task_id,
        type(exception).__name__,
        exception,
        exc_info=exc_info,
        extra={"task_id": task_id, "task_name": name},
    )


def connect_celery_signals() -> None:
    from celery import signals

    signals.before_task_publish.connect(task_queued, weak=False, dispatch_uid="svoykrug.logs.task_queued")
    signals.task_prerun.connect(task_started, weak=False, dispatch_uid="svoykrug.logs.task_started")
    signals.task_postrun.connect(task_finished, weak=False, dispatch_uid="svoykrug.logs.task_finished")
    signals.task_failure.connect(task_failed, weak=False, dispatch_uid="svoykrug.logs.task_failed")
    signals.setup_logging.connect(use_django_logging, weak=False, dispatch_uid="svoykrug.logs.setup_logging")


def use_django_logging(**kwargs):
    """setup_logging: the worker keeps Django's LOGGING (JSON lines with ids) instead of
    replacing the root logger's handlers with Celery's own."""
    from django.utils.log import configure_logging

    configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)
