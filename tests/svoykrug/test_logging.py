"""Structured logs: each request has an id (taken from X-Request-ID or made) that comes back in
the answer and is on every log line written for it; lines are JSON; slow queries and failed
tasks are logged; nothing secret reaches a log."""

import io
import json
import logging
import re
import sys
from datetime import datetime, timedelta

import pytest

from svoykrug import logs
from svoykrug.celery import app
from tests.factories import ApiKeyFactory, BusinessFactory, CRMIntegrationFactory, LoyaltyProgramFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def log_lines():
    """What the configured handler (the one production writes with) prints, as parsed JSON lines."""
    handler = next(h for h in logging.getLogger().handlers if any(isinstance(f, logs.ContextFilter) for f in h.filters))
    assert isinstance(handler.formatter, logs.JsonFormatter)  # LOG_FORMAT defaults to json outside DEBUG
    stream = io.StringIO()
    previous = handler.setStream(stream)

    def read() -> list[dict]:
        return [json.loads(line) for line in stream.getvalue().splitlines()]  # every line is JSON

    yield read
    handler.setStream(previous)


def access_lines(lines: list[dict]) -> list[dict]:
    return [line for line in lines if line["logger"] == "svoykrug.access"]


# --- The request id ---------------------------------------------------------------------------


def test_a_request_gets_an_id_that_comes_back_in_the_answer(client):
    first = client.get("/api/v1/businesses/")
    second = client.get("/api/v1/businesses/")

    assert re.fullmatch(r"[0-9a-f]{32}", first["X-Request-ID"])
    assert first["X-Request-ID"] != second["X-Request-ID"]


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("abc.DEF_123-x", True),
        ("f" * 64, True),
        ("f" * 65, False),
        ("has space", False),
        ("semi;colon", False),
        ("", False),
    ],
)
def test_a_sane_incoming_id_is_kept_and_any_other_replaced(client, sent, kept):
    response = client.get("/healthz", headers={"X-Request-ID": sent})

    if kept:
        assert response["X-Request-ID"] == sent
    else:
        assert re.fullmatch(r"[0-9a-f]{32}", response["X-Request-ID"])


def test_lines_written_during_a_request_carry_its_id(client, settings, log_lines):
    settings.SLOW_QUERY_MS = 0  # every query is "slow": a line written from inside the view

    response = client.get("/api/v1/businesses/", headers={"X-Request-ID": "req-42"})

    assert response["X-Request-ID"] == "req-42"
    lines = log_lines()
    queries = [line for line in lines if line["logger"] == "svoykrug.db.slow"]
    assert queries
    assert {line["request_id"] for line in queries} == {"req-42"}
    [access] = access_lines(lines)
    assert access["request_id"] == "req-42"
    assert logs.current() == {}  # nothing is left behind for the next request


def test_djangos_own_lines_about_an_answer_carry_its_id(client, log_lines):
    client.get("/api/v1/no-such-thing/", headers={"X-Request-ID": "req-404"})

    [not_found] = [line for line in log_lines() if line["logger"] == "django.request"]
    assert not_found["level"] == "WARNING"
    assert not_found["request_id"] == "req-404"
    assert not_found["status_code"] == 404
    assert "request" not in not_found  # objects passed in `extra` are left out


def test_outside_a_request_the_id_is_null(log_lines):
    logging.getLogger("tests.outside").warning("no request here")

    [line] = log_lines()
    assert line["request_id"] is None
    assert line["message"] == "no request here"


# --- The JSON formatter -----------------------------------------------------------------------


def test_the_json_formatter_writes_one_object_with_the_fields():
    token = logs.bind(request_id="req-7")
    try:
        raise ValueError("bad value")
    except ValueError:
        record = logging.getLogger("tests.json").makeRecord(
            "tests.json",
            logging.ERROR,
            __file__,
            1,
            "Failed for %s",
            ("Ольга",),
            sys.exc_info(),
            extra={"duration_ms": 12.5, "request": object()},
        )
    finally:
        logs.unbind(token)

    text = logs.JsonFormatter().format(record)

    assert "\n" not in text
    entry = json.loads(text)
    assert set(entry) == {"time", "level", "logger", "message", "request_id", "duration_ms", "exception"}
    assert (entry["level"], entry["logger"], entry["message"]) == ("ERROR", "tests.json", "Failed for Ольга")
    assert entry["request_id"] is None  # the record was made after the id was unbound, and has none
    assert entry["duration_ms"] == 12.5
    assert entry["exception"].startswith("Traceback") and "ValueError: bad value" in entry["exception"]
    when = datetime.fromisoformat(entry["time"])
    assert when.utcoffset() == timedelta(0)


def test_the_filter_puts_the_ids_on_the_record_for_the_formatter():
    record = logging.LogRecord("tests.json", logging.INFO, __file__, 1, "hello", (), None)
    token = logs.bind(request_id="req-8", task_id="task-1", task_name="tests.task")
    try:
        logs.ContextFilter().filter(record)
    finally:
        logs.unbind(token)

    entry = json.loads(logs.JsonFormatter().format(record))
    assert (entry["request_id"], entry["task_id"], entry["task_name"]) == ("req-8", "task-1", "tests.task")


def test_the_plain_formatter_shows_the_request_id():
    record = logging.LogRecord("tests.plain", logging.INFO, __file__, 1, "hello", (), None)
    record.request_id = "req-9"

    assert logs.PlainFormatter().format(record).endswith("INFO tests.plain [req-9] hello")


# --- Access lines -----------------------------------------------------------------------------


def test_one_access_line_per_request_with_method_path_status_and_duration(client, log_lines):
    client.get("/api/v1/businesses/?city=moscow", headers={"X-Request-ID": "req-a"})

    [access] = access_lines(log_lines())
    assert access["level"] == "INFO"
    assert (access["method"], access["path"], access["status"]) == ("GET", "/api/v1/businesses/", 200)
    assert isinstance(access["duration_ms"], float)
    assert access["message"].startswith("GET /api/v1/businesses/ 200 ")
    assert "moscow" not in json.dumps(access)  # query strings are not logged


def test_probes_are_not_logged(client, log_lines):
    client.get("/healthz")

    assert access_lines(log_lines()) == []


def test_the_access_line_names_the_user_or_the_api_key_not_its_secret(client, api_client, log_lines, tiers):
    from accounts.models import User

    business = LoyaltyProgramFactory(business=BusinessFactory()).business
    api_key, raw_key = ApiKeyFactory(business=business)
    api_client.get("/api/v1/partner/customers/+79991112233/", HTTP_AUTHORIZATION=f"Api-Key {raw_key}")
    user = User.objects.create_user(phone="+79991234500")
    from rest_framework_simplejwt.tokens import RefreshToken

    access_token = str(RefreshToken.for_user(user).access_token)
    api_client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {access_token}")

    lines = log_lines()
    partner, me = access_lines(lines)
    assert partner["api_key"] == api_key.prefix
    assert partner["path"] == "/api/v1/partner/customers/***/"  # the phone is masked
    assert me["user_id"] == str(user.pk)
    text = json.dumps(lines)
    assert raw_key not in text
    assert access_token not in text
    assert "79991112233" not in text


def test_the_webhook_secret_never_reaches_a_log(client, log_lines):
    iiko = CRMIntegrationFactory(provider="iiko", credentials={"api_login": "login-1"})
    secret = iiko.webhook_secret

    client.post(f"/api/v1/integrations/{iiko.pk}/webhook/{secret}/", data=b"{}", content_type="application/json")
    client.post(f"/api/v1/integrations/{iiko.pk}/webhook/not-the-secret/", data=b"{}", content_type="application/json")

    lines = log_lines()
    accesses = access_lines(lines)
    assert [line["path"] for line in accesses] == [f"/api/v1/integrations/{iiko.pk}/webhook/***/"] * 2
    assert any(line["logger"] == "django.request" for line in lines)  # the 404 ("Not Found: <path>")
    text = json.dumps(lines)
    assert secret not in text
    assert "not-the-secret" not in text


def test_login_codes_are_not_logged(api_client, sms, log_lines):
    challenge = api_client.post("/api/v1/auth/otp/", {"phone": "+79990000191"}, format="json").json()
    code = sms.last_code()
    api_client.post("/api/v1/auth/otp/verify/", {"code_id": challenge["code_id"], "code": code}, format="json")

    lines = log_lines()
    assert len(access_lines(lines)) == 2
    assert not any(code in line["message"] for line in lines)
    assert challenge["code_id"] not in json.dumps(lines)


def test_mask_path():
    assert logs.mask_path("/api/v1/integrations/1/webhook/s3cr3t/") == "/api/v1/integrations/1/webhook/***/"
    assert logs.mask_path("/api/v1/me/devices/fcm-token/") == "/api/v1/me/devices/***/"
    assert logs.mask_path("Not Found: /api/v1/partner/customers/+7999/") == "Not Found: /api/v1/partner/customers/***/"
    assert logs.mask_path("/api/v1/businesses/") == "/api/v1/businesses/"


# --- Slow queries -----------------------------------------------------------------------------


def test_a_slow_query_is_logged_with_its_sql_but_not_its_parameters(api_client, settings, log_lines, tiers):
    settings.SLOW_QUERY_MS = 0
    business = LoyaltyProgramFactory(business=BusinessFactory()).business
    _key, raw_key = ApiKeyFactory(business=business)

    api_client.get("/api/v1/partner/customers/+79997654321/", HTTP_AUTHORIZATION=f"Api-Key {raw_key}")

    slow = [line for line in log_lines() if line["logger"] == "svoykrug.db.slow"]
    assert slow
    assert all(line["level"] == "WARNING" for line in slow)
    assert all(isinstance(line["duration_ms"], float) and line["db"] == "default" for line in slow)
    assert any("SELECT" in line["message"] and '"accounts_user"' in line["message"] for line in slow)
    assert "79997654321" not in json.dumps(slow)


def test_fast_queries_are_not_logged(client, settings, log_lines):
    settings.SLOW_QUERY_MS = 60_000

    client.get("/api/v1/businesses/")

    assert [line for line in log_lines() if line["logger"] == "svoykrug.db.slow"] == []


def test_long_sql_is_truncated(settings, caplog):
    from django.db import connection

    settings.SLOW_QUERY_MS = 0
    sql = "SELECT " + " + ".join(["1"] * 1000)
    with (
        caplog.at_level(logging.WARNING, logger="svoykrug.db.slow"),
        connection.execute_wrapper(logs.slow_query_wrapper),
        connection.cursor() as cursor,
    ):
        cursor.execute(sql)

    [record] = [r for r in caplog.records if r.name == "svoykrug.db.slow"]
    assert len(record.getMessage()) < logs.SQL_MAX_CHARS + 50
    assert record.getMessage().endswith("…")


# --- Celery tasks -----------------------------------------------------------------------------


@app.task(name="tests.svoykrug.logged_task")
def logged_task(secret_argument):
    logging.getLogger("tests.task").info("working")
    from accounts.models import User

    return User.objects.count()


@app.task(name="tests.svoykrug.failing_task")
def failing_task(secret_argument):
    raise RuntimeError("the provider said no")


def test_a_tasks_lines_carry_its_id_and_name_and_its_slow_queries_are_logged(settings, log_lines):
    settings.SLOW_QUERY_MS = 0

    result = logged_task.apply(args=("s3cret-argument",))

    lines = log_lines()
    [working] = [line for line in lines if line["logger"] == "tests.task"]
    assert (working["task_id"], working["task_name"]) == (result.id, "tests.svoykrug.logged_task")
    slow = [line for line in lines if line["logger"] == "svoykrug.db.slow"]
    assert slow and {line["task_id"] for line in slow} == {result.id}
    assert logs.current() == {}
    from django.db import connection

    assert logs.slow_query_wrapper not in connection.execute_wrappers  # taken off after the task


def test_a_failed_task_logs_an_error_without_its_arguments(log_lines):
    # As in a worker: the failure is recorded, not raised to the caller (eager tasks that
    # propagate their exception leave it to the caller, whose 500 is logged).
    result = failing_task.apply(args=("s3cret-argument",), task_id="task-123", throw=False)

    assert result.failed()

    lines = log_lines()
    [failure] = [line for line in lines if line["logger"] == "svoykrug.tasks"]
    assert failure["level"] == "ERROR"
    assert failure["message"] == "Task tests.svoykrug.failing_task[task-123] failed: RuntimeError: the provider said no"
    assert (failure["task_id"], failure["task_name"]) == ("task-123", "tests.svoykrug.failing_task")
    assert "RuntimeError" in failure["exception"]
    assert "s3cret-argument" not in json.dumps(lines)


def test_a_task_run_inside_a_request_keeps_the_requests_id(rf, log_lines):
    from django.http import JsonResponse

    from svoykrug.middleware import RequestContextMiddleware

    def view(request):
        logged_task.delay("x")  # eager, as without a broker
        return JsonResponse({})

    RequestContextMiddleware(view)(rf.get("/anything/", HTTP_X_REQUEST_ID="req-task"))

    [working] = [line for line in log_lines() if line["logger"] == "tests.task"]
    assert working["request_id"] == "req-task"
    assert working["task_name"] == "tests.svoykrug.logged_task"


def test_the_worker_keeps_djangos_logging():
    from celery import signals

    assert any(receiver is logs.use_django_logging for _, receiver in signals.setup_logging.receivers)
