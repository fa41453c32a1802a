"""Production settings: `check --deploy` is clean, answers carry the security headers, HTTP
is redirected to HTTPS behind the proxy, the portal refuses posts without a CSRF token, and
the admin lets in staff only."""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.test import Client

from accounts.models import User
from tests.factories import BusinessFactory, MembershipFactory, UserFactory

ROOT = Path(__file__).resolve().parents[2]

# What production sets (README, .env.example): a strong key, its hosts, TLS at the proxy, the
# credentials' encryption key and the providers' secrets; everything else as embedded.
PRODUCTION = {
    "DJANGO_DEBUG": "0",
    "DJANGO_ALLOWED_HOSTS": "svoykrug.example,api.svoykrug.example",
    "DJANGO_BEHIND_TLS_PROXY": "1",
    "SMSRU_API_ID": "smsru-api-id",
    "EMAIL_WEBHOOK_SECRET": "anymail:webhook-secret",
    "DATABASE_URL": "",
    "REDIS_URL": "",
}


def production_env(**overrides) -> dict:
    """This process's environment without its Django/service variables, plus production's."""
    kept = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "REDIS", "DATABASE", "SECURE_", "LOG_", "THROTTLE_", "SMSRU", "EMAIL"))
        and key not in {"INTEGRATIONS_ENCRYPTION_KEYS", "SLOW_QUERY_MS", "DATA_UPLOAD_MAX_MEMORY_SIZE"}
    }
    return {
        **kept,
        **PRODUCTION,
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "INTEGRATIONS_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "DJANGO_SETTINGS_MODULE": "svoykrug.settings",
        **overrides,
    }


def run(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


def test_check_deploy_is_clean_with_production_settings():
    result = run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], production_env())

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


SHOW = (
    "import django, json; from django.conf import settings; django.setup(); print(json.dumps({name: "
    "getattr(settings, name, None) for name in ['SECURE_SSL_REDIRECT', 'SECURE_PROXY_SSL_HEADER', "
    "'SECURE_HSTS_SECONDS', 'SECURE_HSTS_INCLUDE_SUBDOMAINS', 'SECURE_HSTS_PRELOAD', 'SESSION_COOKIE_SECURE', "
    "'CSRF_COOKIE_SECURE', 'SESSION_COOKIE_HTTPONLY', 'CSRF_COOKIE_HTTPONLY', 'SESSION_COOKIE_SAMESITE', "
    "'X_FRAME_OPTIONS', 'SECURE_CONTENT_TYPE_NOSNIFF', 'SECURE_REFERRER_POLICY', "
    "'SECURE_CROSS_ORIGIN_OPENER_POLICY', 'LOG_FORMAT', 'DATA_UPLOAD_MAX_MEMORY_SIZE', 'SLOW_QUERY_MS']}))"
)


def show_settings(**env) -> dict:
    result = run([sys.executable, "-c", SHOW], production_env(**env))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_production_turns_every_protection_on_and_development_relaxes_them():
    production = show_settings()
    development = show_settings(DJANGO_DEBUG="1", DJANGO_BEHIND_TLS_PROXY="0")

    assert production == {
        "SECURE_SSL_REDIRECT": True,
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
        "SECURE_HSTS_SECONDS": 31_536_000,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": True,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SESSION_COOKIE_HTTPONLY": True,
        "CSRF_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "X_FRAME_OPTIONS": "DENY",
        "SECURE_CONTENT_TYPE_NOSNIFF": True,
        "SECURE_REFERRER_POLICY": "same-origin",
        "SECURE_CROSS_ORIGIN_OPENER_POLICY": "same-origin",
        "LOG_FORMAT": "json",
        "DATA_UPLOAD_MAX_MEMORY_SIZE": 1024 * 1024,
        "SLOW_QUERY_MS": 200,
    }
    assert development["SECURE_SSL_REDIRECT"] is False
    assert development["SECURE_PROXY_SSL_HEADER"] is None
    assert development["SECURE_HSTS_SECONDS"] == 0
    assert development["SESSION_COOKIE_SECURE"] is development["CSRF_COOKIE_SECURE"] is False
    assert development["LOG_FORMAT"] == "plain"


def test_every_protection_can_be_set_from_the_environment():
    tuned = show_settings(
        DJANGO_SECURE_SSL_REDIRECT="0",
        DJANGO_SECURE_HSTS_SECONDS="3600",
        DJANGO_SECURE_HSTS_PRELOAD="0",
        DJANGO_SESSION_COOKIE_SAMESITE="Strict",
        LOG_FORMAT="plain",
        DATA_UPLOAD_MAX_MEMORY_SIZE="2048",
        SLOW_QUERY_MS="0",
    )

    assert tuned["SECURE_SSL_REDIRECT"] is False
    assert (tuned["SECURE_HSTS_SECONDS"], tuned["SECURE_HSTS_PRELOAD"]) == (3600, False)
    assert tuned["SESSION_COOKIE_SAMESITE"] == "Strict"
    assert (tuned["LOG_FORMAT"], tuned["DATA_UPLOAD_MAX_MEMORY_SIZE"], tuned["SLOW_QUERY_MS"]) == ("plain", 2048, 0)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"DJANGO_SESSION_COOKIE_SAMESITE": "None"}, "DJANGO_SESSION_COOKIE_SAMESITE"),
        ({"THROTTLE_PARTNER_RATE": "lots"}, "THROTTLE_PARTNER_RATE"),
    ],
)
def test_bad_security_and_logging_values_stop_start_up(env, message):
    result = run([sys.executable, "-c", SHOW], production_env(**env))

    assert result.returncode != 0
    assert message in result.stderr


# --- In the running app (the tests' settings: DEBUG off, no TLS proxy) ---------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/portal/login/", "/api/v1/businesses/", "/healthz"])
def test_answers_carry_the_security_headers(client, path):
    response = client.get(path)

    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    assert "Strict-Transport-Security" not in response  # plain HTTP: no HSTS
    secure = client.get(path, secure=True)
    assert secure["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"


@pytest.mark.django_db
def test_the_csrf_cookie_is_secure_http_only_and_same_site(client):
    response = client.get("/portal/login/")

    cookie = response.cookies["csrftoken"]
    assert cookie["secure"] is True
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"


@pytest.mark.django_db
def test_the_session_cookie_is_secure_http_only_and_same_site(client, settings):
    User.objects.create_superuser(phone="+79990000181", password="correct horse battery")

    response = client.post("/admin/login/", {"username": "+79990000181", "password": "correct horse battery"})

    assert response.status_code == 302
    cookie = response.cookies[settings.SESSION_COOKIE_NAME]
    assert cookie["secure"] is True
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"


@pytest.mark.django_db
def test_behind_the_tls_proxy_plain_http_is_redirected_except_the_probes(client, settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True

    plain = client.get("/portal/login/?next=/portal/")
    over_tls = client.get("/portal/login/", HTTP_X_FORWARDED_PROTO="https")
    probe = client.get("/healthz")

    assert plain.status_code == 301
    assert plain["Location"] == "https://testserver/portal/login/?next=/portal/"
    assert over_tls.status_code == 200
    assert over_tls["Strict-Transport-Security"].startswith("max-age=31536000")
    assert probe.status_code == 200


@pytest.mark.django_db
def test_the_portal_refuses_a_post_without_a_csrf_token(sms):
    client = Client(enforce_csrf_checks=True)
    client.get("/portal/login/")  # has the cookie, but the form's token is not sent

    response = client.post("/portal/login/", {"phone": "+79990000161"})

    assert response.status_code == 403
    assert sms.sent == []


@pytest.mark.django_db
def test_a_logged_in_portal_post_without_a_csrf_token_is_refused(sms):
    user = UserFactory()
    MembershipFactory(user=user, business=BusinessFactory())
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)

    response = client.post("/portal/logout/")

    assert response.status_code == 403
    assert "_auth_user_id" in client.session  # still logged in


@pytest.mark.django_db
def test_the_admin_sends_anonymous_and_non_staff_people_to_its_login(client):
    anonymous = client.get("/admin/")
    partner = UserFactory()
    MembershipFactory(user=partner, business=BusinessFactory())
    client.force_login(partner)
    non_staff = client.get("/admin/")
    non_staff_page = client.get("/admin/accounts/user/")
    client.force_login(User.objects.create_superuser(phone="+79990000171", password="correct horse battery"))
    staff = client.get("/admin/")

    assert anonymous.status_code == 302
    assert anonymous["Location"] == "/admin/login/?next=/admin/"
    assert non_staff.status_code == 302
    assert non_staff["Location"] == "/admin/login/?next=/admin/"
    assert non_staff_page.status_code == 302
    assert non_staff_page["Location"].startswith("/admin/login/")
    assert staff.status_code == 200
