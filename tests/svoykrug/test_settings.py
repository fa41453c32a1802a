"""Settings come from the environment and refuse bad values loudly, at start-up."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_settings(**env) -> subprocess.CompletedProcess:
    """Import the settings in a fresh interpreter with exactly the given environment."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "OTP_", "REDIS", "JWT"))}
    clean.update(env)
    code = (
        "import django, json; from django.conf import settings; django.setup(); "
        "print(json.dumps({'debug': settings.DEBUG, 'eager': settings.CELERY_TASK_ALWAYS_EAGER, "
        "'broker': settings.CELERY_BROKER_URL, 'cache': settings.CACHES['default']['BACKEND'], "
        "'db': settings.DATABASES['default']['ENGINE'], 'attempts': settings.OTP_MAX_ATTEMPTS, "
        "'review': settings.OTP_REVIEW_PHONES, 'answers': settings.ANSWER_CACHE_SECONDS}))"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "svoykrug.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_without_a_secret_key_stops_and_says_what_to_set():
    result = load_settings(DJANGO_DEBUG="0")

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is not set" in result.stderr


def test_embedded_defaults_need_nothing_but_a_secret_key():
    import json

    result = load_settings(DJANGO_SECRET_KEY="k" * 50, DATABASE_URL="", REDIS_URL="")

    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert loaded["debug"] is False
    assert loaded["eager"] is True
    assert loaded["broker"] == "memory://"
    assert loaded["cache"].endswith("LocMemCache")
    assert loaded["attempts"] == 5
    assert loaded["answers"] == 0  # a per-process cache cannot be renewed by the other processes


def test_redis_url_makes_the_broker_and_the_cache():
    import json

    result = load_settings(DJANGO_SECRET_KEY="k" * 50, REDIS_URL="redis://127.0.0.1:6379/3", DATABASE_URL="")

    loaded = json.loads(result.stdout)
    assert loaded["eager"] is False
    assert loaded["broker"] == "redis://127.0.0.1:6379/3"
    assert loaded["cache"].endswith("RedisCache")
    assert loaded["answers"] == 300


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTP_MAX_ATTEMPTS": "0"}, "OTP_MAX_ATTEMPTS must be a positive integer"),
        ({"OTP_MAX_ATTEMPTS": "five"}, "five"),
        ({"OTP_REVIEW_PHONES": "+79990000000"}, "OTP_REVIEW_PHONES"),
        ({"ANSWER_CACHE_SECONDS": "-1"}, "ANSWER_CACHE_SECONDS must be 0 or more"),
    ],
)
def test_bad_limits_stop_start_up(env, message):
    result = load_settings(DJANGO_SECRET_KEY="k" * 50, DATABASE_URL="", **env)

    assert result.returncode != 0
    assert message in result.stderr


def test_review_phones_are_read_as_pairs():
    import json

    result = load_settings(DJANGO_SECRET_KEY="k" * 50, DATABASE_URL="", OTP_REVIEW_PHONES="+79000000000:424242")

    assert json.loads(result.stdout)["review"] == {"+79000000000": "424242"}


def test_env_example_lists_every_variable_the_settings_read():
    import re

    settings_source = (ROOT / "svoykrug" / "settings.py").read_text()
    helpers = r"env(?:\.\w+|_positive_int|_non_negative_int|_phone_code_map)"
    read = set(re.findall(helpers + r'\(\s*"([A-Z_]+)"', settings_source))
    listed = set(re.findall(r"^#?\s*([A-Z_]+)=", (ROOT / ".env.example").read_text(), flags=re.M))

    assert read, "no variables found: the pattern no longer matches settings.py"
    assert read - listed == set()


def test_env_example_as_written_starts_with_a_secret_key():
    import json

    example = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            example[name] = value
    example["DJANGO_SECRET_KEY"] = "k" * 50

    result = load_settings(**example)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["db"] == "django.db.backends.sqlite3"


def test_require_services_turns_a_skip_into_a_failure(tmp_path):
    """Without PostgreSQL configured, a postgres test skips; under REQUIRE_SERVICES=1 it fails."""
    clean = {key: value for key, value in os.environ.items() if key not in {"DATABASE_URL", "REDIS_URL"}}
    test = "tests/accounts/test_tokens.py::test_eight_parallel_refreshes_with_one_token_give_exactly_one_pair"

    def run(**env):
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
            cwd=ROOT,
            env={**clean, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )

    relaxed = run(REQUIRE_SERVICES="0")
    strict = run(REQUIRE_SERVICES="1")

    assert relaxed.returncode == 0 and "1 skipped" in relaxed.stdout, relaxed.stdout
    assert strict.returncode == 1 and "REQUIRE_SERVICES=1 but" in strict.stdout, strict.stdout
