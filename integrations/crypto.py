"""Encryption at rest of integrations' credentials (Fernet: AES-128-CBC + HMAC-SHA256).

The keys come from INTEGRATIONS_ENCRYPTION_KEYS, newest first: the first encrypts, all of
them decrypt, so a key is rotated by putting a new one in front and re-saving
(`python manage.py rotate_integration_keys`). Without keys, one is derived from the
Django secret key, which is enough for development and warned about by `check --deploy`."""

import base64
import hashlib
import json

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class CredentialsUnreadable(Exception):
    """The stored credentials do not decrypt with any configured key."""


def _fernet() -> MultiFernet:
    keys = list(settings.INTEGRATIONS_ENCRYPTION_KEYS)
    if not keys:
        derived = hashlib.sha256(b"svoykrug.integrations:" + settings.SECRET_KEY.encode()).digest()
        keys = [base64.urlsafe_b64encode(derived).decode()]
    return MultiFernet([Fernet(key) for key in keys])


def encrypt(data: dict) -> str:
    if not data:
        return ""
    return _fernet().encrypt(json.dumps(data, ensure_ascii=False).encode()).decode()


def decrypt(token: str) -> dict:
    if not token:
        return {}
    try:
        return json.loads(_fernet().decrypt(token.encode()))
    except InvalidToken as exc:
        raise CredentialsUnreadable("The credentials do not decrypt with the configured keys.") from exc


def rotate(token: str) -> str:
    """The same secret encrypted with the newest key."""
    if not token:
        return ""
    try:
        return _fernet().rotate(token.encode()).decode()
    except InvalidToken as exc:
        raise CredentialsUnreadable("The credentials do not decrypt with the configured keys.") from exc


def mask(value) -> str:
    """What may be shown of a secret: its last four characters when it is long enough."""
    text = str(value or "")
    if not text:
        return ""
    return "••••" + text[-4:] if len(text) >= 12 else "••••"
