"""gunicorn.conf.py: settings from the environment, gunicorn's own lines in the app's JSON, and no
second access line per request."""

import json
import os
import runpy
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "gunicorn.conf.py"
GUNICORN_VARIABLES = (
    "GUNICORN_BIND",
    "WEB_CONCURRENCY",
    "GUNICORN_TIMEOUT",
    "GUNICORN_GRACEFUL_TIMEOUT",
    "GUNICORN_MAX_REQUESTS",
    "GUNICORN_MAX_REQUESTS_JITTER",
    "FORWARDED_ALLOW_IPS",
    "LOG_FORMAT",
    "LOG_LEVEL",
    "DJANGO_DEBUG",
)


@pytest.fixture
def load(monkeypatch):
    """gunicorn.conf.py's settings, read as gunicorn reads them, under these environment variables."""
    for name in GUNICORN_VARIABLES:
        monkeypatch.delenv(name, raising=False)

    def load(**variables) -> dict:
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        return runpy.run_path(str(CONF))

    return load


def test_gunicorns_lines_go_through_the_apps_json_formatter_and_its_access_log_nowhere(load):
    conf = load()

    logconfig = conf["logconfig_dict"]
    assert logconfig["formatters"]["json"] == {"()": "svoykrug.logs.JsonFormatter"}
    assert logconfig["filters"]["context"] == {"()": "svoykrug.logs.ContextFilter"}
    assert logconfig["handlers"]["console"] == {
        "class": "logging.StreamHandler",
        "formatter": "json",
        "filters": ["context"],
    }
    assert logconfig["root"] == {"handlers": ["console"], "level": "INFO"}
    assert logconfig["loggers"]["gunicorn.error"] == {"handlers": [], "level": "INFO", "propagate": True}
    assert logconfig["loggers"]["gunicorn.access"] == {"handlers": ["null"], "propagate": False}
    assert logconfig["handlers"]["null"] == {"class": "logging.NullHandler"}
    assert conf["accesslog"] is None


def test_plain_lines_for_people_as_the_app_writes_them(load):
    assert load(DJANGO_DEBUG="1")["logconfig_dict"]["handlers"]["console"]["formatter"] == "plain"
    assert load(LOG_FORMAT="plain", DJANGO_DEBUG="0")["logconfig_dict"]["handlers"]["console"]["formatter"] == "plain"
    assert load(LOG_FORMAT="json", DJANGO_DEBUG="1")["logconfig_dict"]["handlers"]["console"]["formatter"] == "json"


def test_defaults(load):
    conf = load()

    assert conf["bind"] == "0.0.0.0:8000"
    assert conf["workers"] == 2 * len(os.sched_getaffinity(0))
    assert (conf["timeout"], conf["graceful_timeout"]) == (30, 30)
    assert (conf["max_requests"], conf["max_requests_jitter"]) == (20000, 2000)
    assert conf["forwarded_allow_ips"] == "127.0.0.1,::1"


def test_every_setting_comes_from_the_environment(load):
    conf = load(
        GUNICORN_BIND="127.0.0.1:9000",
        WEB_CONCURRENCY="3",
        GUNICORN_TIMEOUT="20",
        GUNICORN_GRACEFUL_TIMEOUT="25",
        GUNICORN_MAX_REQUESTS="0",
        GUNICORN_MAX_REQUESTS_JITTER="0",
        FORWARDED_ALLOW_IPS="10.0.0.0/8",
        LOG_LEVEL="warning",
    )

    assert (conf["bind"], conf["workers"], conf["timeout"], conf["graceful_timeout"]) == ("127.0.0.1:9000", 3, 20, 25)
    assert (conf["max_requests"], conf["max_requests_jitter"]) == (0, 0)
    assert conf["forwarded_allow_ips"] == "10.0.0.0/8"
    assert conf["logconfig_dict"]["root"]["level"] == "WARNING"


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY must be at least 1, got 0."),
        ({"GUNICORN_TIMEOUT": "soon"}, "GUNICORN_TIMEOUT must be an integer, got 'soon'."),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT must be json or plain, got 'xml'."),
    ],
)
def test_a_bad_value_stops_start_up(load, variables, message):
    with pytest.raises(ValueError) as refused:
        load(**variables)

    assert str(refused.value) == message


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_real_gunicorn_writes_only_json_lines_and_one_access_line_per_request(tmp_path):
    port = _free_port()
    # This process's environment without its Django, service and gunicorn variables.
    kept = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "REDIS", "DATABASE", "SECURE_", *GUNICORN_VARIABLES))
    }
    env = {
        **kept,
        "DJANGO_SETTINGS_MODULE": "svoykrug.settings",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "REDIS_URL": "",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "1",
    }
    gunicorn = [sys.executable, "-m", "gunicorn", "-c", str(CONF), "--no-control-socket", "svoykrug.wsgi"]
    process = subprocess.Popen(gunicorn, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        status = None
        deadline = time.monotonic() + 60
        while status is None and time.monotonic() < deadline and process.poll() is None:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/no-such-page/", headers={"X-Request-ID": "req-g"}
            )
            try:
                urllib.request.urlopen(request, timeout=5)
            except urllib.error.HTTPError as answer:
                status = answer.code
            except OSError:
                time.sleep(0.2)
    finally:
        process.terminate()
        stdout, stderr = process.communicate(timeout=30)

    assert status == 404, stderr
    lines = [json.loads(line) for line in (stdout + stderr).splitlines()]  # every line is JSON
    assert any(line["logger"] == "gunicorn.error" and line["message"].startswith("Booting worker") for line in lines)
    assert not [line for line in lines if line["logger"] == "gunicorn.access"]
    [access] = [line for line in lines if line["logger"] == "svoykrug.access"]
    assert (access["request_id"], access["path"], access["status"]) == ("req-g", "/no-such-page/", 404)
