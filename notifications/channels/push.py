"""The push channel: Firebase Cloud Messaging through firebase-admin, or a console backend that
logs when no service-account file is configured.

`send()` never raises for anything FCM, Google's token endpoint or the network does: it returns
one `PushOutcome` per token, in the order of the tokens, and the caller decides what to do
(retry, give up, deactivate the device). This module writes nothing to the database.

firebase-admin facts this relies on (7.7.0, see EXTERNAL_APIS.md section 7):

- `send_each_for_multicast` makes one HTTP call per token from a thread pool of up to 500
  threads and puts each token's error on `BatchResponse.responses[i].exception`; only a failure
  that is not an HTTP error (a credential refresh that fails, say) escapes, as one exception
  for the whole batch.
- The OAuth2 access token is refreshed by google-auth without a lock, so a cold credential
  hit by 500 threads at once would fetch 500 tokens; `_ensure_access_token` refreshes it once,
  under a lock, before each batch.
- Its requests session retries HTTP 500/503 up to 4 times (about 7 s of backoff) and a read
  timeout once, so a timed-out push may in rare cases reach the phone twice.
- 7.7.0 deprecates `MulticastMessage.tokens` in favour of `fids` (Firebase installation ids).
  Our devices register FCM registration tokens, which still go in `token`; the warning is
  silenced where the message is built.
"""

import functools
import hashlib
import logging
import os
import threading
import warnings
from dataclasses import dataclass

import firebase_admin
from django.conf import settings
from firebase_admin import credentials, exceptions, messaging
from google.auth.transport import requests as google_auth_requests

logger = logging.getLogger(__name__)

# FCM's limit on tokens in one multicast (send_each_for_multicast refuses more).
FCM_MAX_TOKENS_PER_BATCH = 500

# Data keys FCM refuses (https://firebase.google.com/docs/cloud-messaging/concept-options).
_RESERVED_DATA_KEYS = {"from", "message_type", "notification"}
_RESERVED_DATA_PREFIXES = ("google", "gcm")

# Errors about this one token that may go away if the same push is sent later.
_RETRYABLE_ERRORS = (
    messaging.QuotaExceededError,  # 429 QUOTA_EXCEEDED (per-device or per-project)
    exceptions.ResourceExhaustedError,  # 429 without FCM's errorCode
    exceptions.UnavailableError,  # 503, or the connection failed
    exceptions.InternalError,  # 500
    exceptions.DeadlineExceededError,  # our httpTimeout ran out
    exceptions.UnknownError,  # a transport failure without an HTTP response
    exceptions.AbortedError,
)


@dataclass(frozen=True)
class PushOutcome:
    """What became of a push to one token.

    `ok`: FCM accepted it, `message_id` is FCM's name for it.
    `unregistered`: the token is dead (app uninstalled, token rotated, malformed): stop using it.
    `retryable`: the same push may go through later (quota, FCM or network trouble).
    Neither flag and not ok: a permanent failure that is not the token's fault (sender id
    mismatch, APNs/web-push credentials, permissions): an operator must look at `error`.
    """

    token: str
    ok: bool
    message_id: str = ""
    error: str = ""
    unregistered: bool = False
    retryable: bool = False


def mask_token(token: str) -> str:
    """The last 8 characters of a token, enough to find the device and useless to anyone else."""
    return f"…{token[-8:]}"


class ConsolePushBackend:
    """Logs pushes instead of sending them: the default for development and demos."""

    name = "console"

    def send(self, tokens: list[str], title: str, body: str, data: dict[str, str] | None = None) -> list[PushOutcome]:
        if not tokens:
            return []
        masked = ", ".join(mask_token(token) for token in tokens)
        if settings.DEBUG:
            logger.warning("Push (console backend, not sent) to %s: %s | %s | data=%s", masked, title, body, data or {})
        else:
            logger.warning("Push (console backend, not sent) to %s; text withheld outside DEBUG", masked)
        return [PushOutcome(token=token, ok=True, message_id="console") for token in tokens]


# One firebase_admin App per (credentials file, project id, timeout), shared by every
# FcmPushBackend in the process, so its HTTP session and access token are reused.
_apps_lock = threading.Lock()
_token_locks: dict[str, threading.Lock] = {}


class FcmPushBackend:
    """FCM v1 through firebase-admin, on a named App of its own (never the default App)."""

    name = "fcm"
    APP_NAME_PREFIX = "svoykrug-push"

    def __init__(self, credentials_file: str, project_id: str = "", *, timeout: float = 10.0):
        self.credentials_file = credentials_file
        self.project_id = project_id
        self.timeout = timeout

    @property
    def app_name(self) -> str:
        """The firebase_admin App name: the same for the same file, project and timeout."""
        key = f"{os.path.abspath(self.credentials_file)}|{self.project_id}|{self.timeout}"
        return f"{self.APP_NAME_PREFIX}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"

    def get_app(self) -> firebase_admin.App:
        """The App, created on first use (thread-safe). Raises if the credentials cannot be read."""
        name = self.app_name
        with _apps_lock:
            try:
                return firebase_admin.get_app(name)
            except ValueError:
                pass
            options: dict = {"httpTimeout": self.timeout}
            if self.project_id:
                options["projectId"] = self.project_id
            app = firebase_admin.initialize_app(credentials.Certificate(self.credentials_file), options, name=name)
            _token_locks.setdefault(name, threading.Lock())
            return app

    def send(self, tokens: list[str], title: str, body: str, data: dict[str, str] | None = None) -> list[PushOutcome]:
        tokens = list(tokens)
        if not tokens:
            return []
        problem = _message_problem(title, body, data)
        if problem:
            logger.error("Push not sent to %d device(s): %s", len(tokens), problem)
            return [PushOutcome(token=token, ok=False, error=problem) for token in tokens]

        results: dict[int, PushOutcome] = {}
        sendable = []
        for index, token in enumerate(tokens):
            if isinstance(token, str) and token.strip():
                sendable.append(index)
            else:
                # One empty token would make firebase-admin refuse the whole batch.
                results[index] = PushOutcome(token=token, ok=False, error="empty token", unregistered=True)

        failure = ""
        for start in range(0, len(sendable), FCM_MAX_TOKENS_PER_BATCH):
            batch = sendable[start : start + FCM_MAX_TOKENS_PER_BATCH]
            if not failure:
                try:
                    outcomes = self._send_batch([tokens[i] for i in batch], title, body, data or {})
                except Exception as exc:  # whatever broke, the pushes may go later
                    failure = f"{type(exc).__name__}: {exc}"
                    logger.exception("FCM send failed for the whole batch of %d; all marked retryable", len(batch))
            if failure:
                # A failure of the whole call (credentials, network) would repeat for the next
                # batches: they are not tried and get the same retryable outcome.
                outcomes = [PushOutcome(token=tokens[i], ok=False, error=failure, retryable=True) for i in batch]
            results.update(zip(batch, outcomes, strict=True))

        ordered = [results[index] for index in range(len(tokens))]
        _log_summary(ordered)
        return ordered

    def _send_batch(self, tokens: list[str], title: str, body: str, data: dict[str, str]) -> list[PushOutcome]:
        app = self.get_app()
        self._ensure_access_token(app)
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message=r"MulticastMessage\.tokens is deprecated", category=DeprecationWarning
            )
            message = messaging.MulticastMessage(
                tokens=tokens,
                notification=messaging.Notification(title=title, body=body),
                data=dict(data),
                android=messaging.AndroidConfig(priority="high"),
                apns=messaging.APNSConfig(payload=messaging.APNSPayload(aps=messaging.Aps(sound="default"))),
            )
        batch = messaging.send_each_for_multicast(message, app=app)
        if len(batch.responses) != len(tokens):
            raise RuntimeError(f"FCM answered {len(batch.responses)} responses for {len(tokens)} tokens")
        return [_outcome(token, response) for token, response in zip(tokens, batch.responses, strict=True)]

    def _ensure_access_token(self, app: firebase_admin.App) -> None:
        """Refresh the OAuth2 access token once, under a lock, if it is missing or expiring."""
        credential = app.credential.get_credential()
        if credential.valid:
            return
        with _token_locks.setdefault(app.name, threading.Lock()):
            if not credential.valid:
                request = functools.partial(google_auth_requests.Request(), timeout=self.timeout)
                credential.refresh(request)


def _outcome(token: str, response: messaging.SendResponse) -> PushOutcome:
    if response.success:
        return PushOutcome(token=token, ok=True, message_id=str(response.message_id))
    exc = response.exception
    error = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, messaging.UnregisteredError) or _is_bad_token(exc):
        return PushOutcome(token=token, ok=False, error=error, unregistered=True)
    if isinstance(exc, _RETRYABLE_ERRORS):
        return PushOutcome(token=token, ok=False, error=error, retryable=True)
    return PushOutcome(token=token, ok=False, error=error)


def _is_bad_token(exc) -> bool:
    """A 400 INVALID_ARGUMENT about the token itself ("The registration token is not a valid FCM
    registration token"). Other 400s (a payload too big, a bad data key) would fail for every
    token in the batch and must not get all of them deactivated."""
    return isinstance(exc, exceptions.InvalidArgumentError) and "token" in str(exc).lower()


def _message_problem(title, body, data) -> str:
    """Why FCM or firebase-admin would refuse this message for every token, or ''."""
    if not isinstance(title, str) or not isinstance(body, str):
        return "invalid message: title and body must be strings"
    if data is None:
        return ""
    if not isinstance(data, dict):
        return "invalid message: data must be a dict"
    for key, value in data.items():
        if not isinstance(key, str) or not isinstance(value, str):
            return f"invalid message: data must map strings to strings ({key!r}: {type(value).__name__})"
        if key in _RESERVED_DATA_KEYS or key.lower().startswith(_RESERVED_DATA_PREFIXES):
            return f"invalid message: data key {key!r} is reserved by FCM"
    return ""


def _log_summary(outcomes: list[PushOutcome]) -> None:
    sent = sum(o.ok for o in outcomes)
    unregistered = sum(o.unregistered for o in outcomes)
    retryable = sum(o.retryable for o in outcomes)
    failed = len(outcomes) - sent - unregistered - retryable
    logger.info(
        "FCM: %d of %d pushes accepted (%d unregistered, %d to retry, %d failed)",
        sent,
        len(outcomes),
        unregistered,
        retryable,
        failed,
    )
    for outcome in outcomes:
        if not outcome.ok and not outcome.unregistered and not outcome.retryable:
            logger.warning("FCM refused the push to %s: %s", mask_token(outcome.token), outcome.error)


def get_push_backend() -> ConsolePushBackend | FcmPushBackend:
    """FCM when FCM_CREDENTIALS_FILE is set, the console backend otherwise."""
    if not settings.FCM_CREDENTIALS_FILE:
        return ConsolePushBackend()
    return FcmPushBackend(
        settings.FCM_CREDENTIALS_FILE,
        settings.FCM_PROJECT_ID,
        timeout=settings.FCM_TIMEOUT_SECONDS,
    )
