"""The Auth service: phone login with an SMS code, JWT pairs, logout, the customer's profile.

The catalogue's functions keep their names: `send_otp_code`, `verify_otp_code`,
`refresh_access_token`, `revoke_token`.

Codes live only in the cache (Redis in production), as an HMAC of the code keyed with the
project's secret. Every state change of a code is an atomic cache operation (`add`,
`incr`), so the rules hold across processes: at most OTP_MAX_ATTEMPTS guesses are ever
compared, and one right code logs in once.

Without the cache nobody logs in: a code cannot be stored, counted or used up, so every
login step answers 503 `service_unavailable` with a Retry-After (fail closed) rather than
a 500, while everything that does not need a code (tokens, purchases, balances) works on.
"""

import contextlib
import functools
import hashlib
import hmac
import logging
import math
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from rest_framework import status
from rest_framework_simplejwt.exceptions import TokenBackendError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.state import token_backend
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import User
from accounts.phones import PhoneCountryNotAllowed, mask_phone, normalize_phone, phone_region
from svoykrug import answers
from svoykrug.exceptions import DomainError

logger = logging.getLogger(__name__)

CodeId = str


# --- Errors -----------------------------------------------------------------------------


class RateLimited(DomainError):
    code = "rate_limited"
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    message = _("Too many requests. Try again later.")

    def __init__(self, message=None, *, retry_after: int):
        retry_after = max(1, int(retry_after))
        super().__init__(message, extra={"retry_after": retry_after}, headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class ResendTooSoon(RateLimited):
    code = "otp_resend_too_soon"
    message = _("A code was sent a moment ago. Wait before asking for a new one.")


class PhoneDailyLimit(RateLimited):
    code = "otp_phone_limit"
    message = _("Too many codes for this phone number today. Try again later.")


class ClientHourlyLimit(RateLimited):
    code = "otp_client_limit"
    message = _("Too many codes requested from this network. Try again later.")


class SmsNotSent(DomainError):
    code = "sms_unavailable"
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    message = _("We could not send the SMS right now. Try again in a minute.")


class LoginUnavailable(DomainError):
    """The code store (the cache: Redis in production) does not answer: no code can be
    issued or checked, so the login is refused until it is back."""

    code = "service_unavailable"
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    message = _("Login is unavailable for a moment. Try again in a minute.")

    def __init__(self, message=None, *, retry_after: int | None = None):
        retry_after = max(1, int(retry_after or settings.OTP_UNAVAILABLE_RETRY_AFTER_SECONDS))
        super().__init__(message, extra={"retry_after": retry_after}, headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class PhoneUnreachable(DomainError):
    code = "phone_unreachable"
    message = _("SMS cannot be delivered to this number.")


class CodeNotFound(DomainError):
    code = "otp_not_found"
    message = _("This code request is unknown. Ask for a new code.")


class CodeExpired(DomainError):
    code = "otp_expired"
    message = _("The code has expired. Ask for a new one.")


class CodeAlreadyUsed(DomainError):
    code = "otp_used"
    message = _("This code has already been used. Ask for a new one.")


class CodeAttemptsExhausted(DomainError):
    code = "otp_attempts_exhausted"
    message = _("Too many wrong codes. Ask for a new one.")


class CodeInvalid(DomainError):
    code = "otp_invalid"
    message = _("The code is wrong.")

    def __init__(self, *, attempts_left: int):
        super().__init__(extra={"attempts_left": attempts_left})
        self.attempts_left = attempts_left


class AccountDisabled(DomainError):
    code = "account_disabled"
    status_code = status.HTTP_403_FORBIDDEN
    message = _("This account is disabled. Contact support.")


class TokenInvalid(DomainError):
    code = "token_invalid"
    status_code = status.HTTP_401_UNAUTHORIZED
    message = _("The token is invalid, expired or already used. Log in again.")


# --- Results ----------------------------------------------------------------------------


@dataclass(frozen=True)
class OtpChallenge:
    code_id: CodeId
    expires_in: int
    resend_in: int


@dataclass(frozen=True)
class Tokens:
    access: str
    refresh: str
    user: User
    is_new: bool


@dataclass(frozen=True)
class AccessToken:
    """A fresh access token and, as refresh tokens rotate, the refresh token that replaces the used one."""

    access: str
    refresh: str


# --- OTP codes --------------------------------------------------------------------------

_CODE_KEY = "otp:code:{code_id}"
_ATTEMPTS_KEY = "otp:attempts:{code_id}"
_USED_KEY = "otp:used:{code_id}"
_COOLDOWN_KEY = "otp:cooldown:{phone}"
_PHONE_DAY_KEY = "otp:phone-day:{phone}"
_CLIENT_HOUR_KEY = "otp:client-hour:{client}"


def _cache_errors() -> tuple[type[Exception], ...]:
    """What the cache raises when it cannot be reached (Django's Redis backend passes
    redis-py's errors on)."""
    try:
        from redis.exceptions import RedisError
    except ImportError:  # no Redis client installed: the local-memory cache does not fail
        return ()
    return (RedisError,)


def _needs_the_code_store(function):
    """Fail closed when the cache is down: the login step answers 503 LoginUnavailable,
    never a 500 and never a login, whichever cache call failed."""

    @functools.wraps(function)
    def guarded(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except _cache_errors() as exc:
            logger.error("Login refused: the code store (cache) does not answer: %s", exc)
            raise LoginUnavailable() from exc

    return guarded


def _code_hash(code_id: str, code: str) -> str:
    key = hashlib.sha256(f"otp:{settings.SECRET_KEY}".encode()).digest()
    return hmac.new(key, f"{code_id}:{code}".encode(), hashlib.sha256).hexdigest()


def _review_code(phone: str) -> str | None:
    """The fixed code of an app-store review phone, or None for everyone else."""
    for raw_phone, code in settings.OTP_REVIEW_PHONES.items():
        try:
            if normalize_phone(raw_phone) == phone:
                return code
        except DomainError:
            logger.warning("OTP_REVIEW_PHONES holds an invalid phone number; it is ignored.")
    return None


def _take_from_window(key: str, window_seconds: int, limit: int) -> int | None:
    """Count one more code in a fixed window that opens at its first code, if the limit
    allows; return None when counted, or the seconds until the window closes when not.

    The count is an atomic `incr`, taken back when it went past the limit, so parallel
    requests cannot overshoot and refused requests do not use the allowance up."""
    now = time.time()
    cache.add(f"{key}:start", now, window_seconds)
    cache.add(key, 0, window_seconds)
    try:
        count = cache.incr(key)
    except ValueError:  # the window closed between add and incr
        cache.add(key, 0, window_seconds)
        count = cache.incr(key)
    if count <= limit:
        return None
    _give_back(key)
    started = cache.get(f"{key}:start") or now
    return math.ceil(started + window_seconds - now)


def _give_back(*keys: str) -> None:
    """Undo `_take_from_window` for a code that was not sent after all."""
    for key in keys:
        with contextlib.suppress(ValueError):  # the window closed meanwhile: nothing to undo
            cache.decr(key)


def client_ip(request) -> str:
    """The client's address, taking TRUSTED_PROXY_COUNT reverse proxies into account."""
    remote = request.META.get("REMOTE_ADDR", "") or "unknown"
    proxies = settings.TRUSTED_PROXY_COUNT
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies and forwarded:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            return hops[-min(proxies, len(hops))]
    return remote


@_needs_the_code_store
def send_otp_code(phone: str, *, client: str = "unknown") -> OtpChallenge:
    """Send a one-time login code by SMS to `phone` and return the id to verify it with.

    The answer is the same whether or not the phone has an account. Refused with a 400
    before any SMS for invalid numbers and countries outside OTP_ALLOWED_COUNTRIES; with a
    429 and Retry-After within OTP_RESEND_COOLDOWN_SECONDS of the last code, past
    OTP_MAX_PER_PHONE_PER_DAY codes per phone or OTP_MAX_PER_IP_PER_HOUR per client; with a
    503 LoginUnavailable while the cache is down (no SMS is sent then)."""
    phone = normalize_phone(phone)
    review_code = _review_code(phone)
    if review_code is None and phone_region(phone) not in settings.OTP_ALLOWED_COUNTRIES:
        raise PhoneCountryNotAllowed()

    cooldown = settings.OTP_RESEND_COOLDOWN_SECONDS
    cooldown_key = _COOLDOWN_KEY.format(phone=phone)
    phone_key = _PHONE_DAY_KEY.format(phone=phone)
    client_key = _CLIENT_HOUR_KEY.format(client=client)
    taken: list[str] = []
    if review_code is None:
        if not cache.add(cooldown_key, time.time(), cooldown):
            sent_at = cache.get(cooldown_key) or time.time()
            raise ResendTooSoon(retry_after=math.ceil(sent_at + cooldown - time.time()))
        wait = _take_from_window(phone_key, 86400, settings.OTP_MAX_PER_PHONE_PER_DAY)
        if wait is not None:
            cache.delete(cooldown_key)
            raise PhoneDailyLimit(retry_after=wait)
        taken.append(phone_key)
    wait = _take_from_window(client_key, 3600, settings.OTP_MAX_PER_IP_PER_HOUR)
    if wait is not None:
        _give_back(*taken)
        cache.delete(cooldown_key)
        raise ClientHourlyLimit(retry_after=wait)
    taken.append(client_key)

    code_id = uuid.uuid4().hex
    code = review_code or "".join(secrets.choice("0123456789") for _ in range(settings.OTP_CODE_DIGITS))
    ttl = settings.OTP_CODE_TTL_SECONDS
    keep = ttl + settings.OTP_TOMBSTONE_SECONDS
    record = {"phone": phone, "hash": _code_hash(code_id, code), "expires_at": time.time() + ttl}
    cache.set(_CODE_KEY.format(code_id=code_id), record, keep)
    cache.set(_ATTEMPTS_KEY.format(code_id=code_id), 0, keep)

    if review_code is None:
        try:
            _deliver_code(phone=phone, code=code, code_id=code_id)
        except DomainError:
            _give_back(*taken)
            raise
    else:
        logger.info("OTP for review phone %s issued without SMS", mask_phone(phone))
    return OtpChallenge(code_id=code_id, expires_in=ttl, resend_in=cooldown)


def _deliver_code(*, phone: str, code: str, code_id: str) -> None:
    from notifications.channels.sms import SmsError, SmsRecipientError
    from notifications.services import deliver_sms

    message = _("Svoy Krug code: %(code)s. Do not tell it to anyone.") % {"code": code}
    try:
        deliver_sms(phone, str(message), purpose="login_code")
    except SmsError as exc:
        # The code never reached the person: forget it and let them ask again at once.
        cache.delete_many(
            [
                _CODE_KEY.format(code_id=code_id),
                _ATTEMPTS_KEY.format(code_id=code_id),
                _COOLDOWN_KEY.format(phone=phone),
            ]
        )
        logger.warning("Login code SMS to %s failed: %s", mask_phone(phone), exc)
        if isinstance(exc, SmsRecipientError):
            raise PhoneUnreachable() from exc
        raise SmsNotSent() from exc


@_needs_the_code_store
def _check_code(code_id: str, code: str) -> str:
    """Check a code and consume it; return the phone it was sent to, or raise why not."""
    if not isinstance(code_id, str) or not code_id.isalnum() or len(code_id) > 64:
        raise CodeNotFound()
    record = cache.get(_CODE_KEY.format(code_id=code_id))
    if record is None:
        raise CodeNotFound()
    if cache.get(_USED_KEY.format(code_id=code_id)):
        raise CodeAlreadyUsed()
    if time.time() >= record["expires_at"]:
        raise CodeExpired()
    try:
        # Every guess is counted before it is compared, so parallel guesses cannot
        # slip past the limit.
        attempt = cache.incr(_ATTEMPTS_KEY.format(code_id=code_id))
    except ValueError:
        raise CodeExpired() from None
    if attempt > settings.OTP_MAX_ATTEMPTS:
        raise CodeAttemptsExhausted()
    if not hmac.compare_digest(record["hash"], _code_hash(code_id, str(code))):
        attempts_left = settings.OTP_MAX_ATTEMPTS - attempt
        if attempts_left <= 0:
            raise CodeAttemptsExhausted()
        raise CodeInvalid(attempts_left=attempts_left)
    remaining = max(1, math.ceil(record["expires_at"] - time.time()) + settings.OTP_TOMBSTONE_SECONDS)
    if not cache.add(_USED_KEY.format(code_id=code_id), 1, remaining):
        raise CodeAlreadyUsed()
    return record["phone"]


def verify_otp_code(code_id: CodeId, code: str) -> Tokens:
    """Exchange a right code for a JWT pair; the first login with a phone creates its account.

    A code dies after OTP_MAX_ATTEMPTS wrong tries, after OTP_CODE_TTL_SECONDS, or after
    one successful use; two parallel verifies of one right code give one success."""
    phone = _check_code(code_id, code)
    user, _created = get_or_create_customer(phone)
    if not user.is_active:
        raise AccountDisabled()
    # New is a person logging in for the first time, also when a partner's purchase
    # created the account before: the app then asks for the profile.
    # The conditional update makes "first" hold for exactly one of parallel logins; the
    # portal's session logins do not count, as they never showed the app's profile form.
    now = timezone.now()
    is_new = User.objects.filter(pk=user.pk, first_app_login_at__isnull=True).update(first_app_login_at=now) == 1
    User.objects.filter(pk=user.pk).update(last_login=now)
    return _issue_tokens(user, is_new=is_new)


def check_login_code(code_id: CodeId, code: str) -> User | None:
    """Check a code for a session login (the partner portal) and return the person with that
    phone, or None if the circle has nobody with it; the same rules and errors as
    `verify_otp_code`, but no tokens and no new account."""
    user = User.objects.filter(phone=_check_code(code_id, code)).first()
    if user is not None and not user.is_active:
        raise AccountDisabled()
    return user


def get_or_create_customer(phone: str) -> tuple[User, bool]:
    """The customer with this phone, created without a password if the circle has none yet.

    Safe under concurrency: two requests for a new phone create one account."""
    phone = normalize_phone(phone)
    try:
        return User.objects.get(phone=phone), False
    except User.DoesNotExist:
        pass
    try:
        with transaction.atomic():
            return User.objects.create_user(phone=phone), True
    except IntegrityError:
        # Another request created it a moment ago (the same person on two devices).
        return User.objects.get(phone=phone), False


# --- Tokens -----------------------------------------------------------------------------


def _issue_tokens(user: User, *, is_new: bool = False) -> Tokens:
    refresh = RefreshToken.for_user(user)  # records the token as outstanding
    return Tokens(access=str(refresh.access_token), refresh=str(refresh), user=user, is_new=is_new)


def _decode_refresh(token: str) -> dict:
    """Check a refresh token's signature, expiry and type; the blacklist is not consulted
    here, as the consume below is what decides whether a token is still good."""
    if not isinstance(token, str) or not token or len(token) > 4096:
        raise TokenInvalid()
    try:
        payload = token_backend.decode(token, verify=True)
    except TokenBackendError as exc:
        raise TokenInvalid() from exc
    if payload.get(jwt_settings.TOKEN_TYPE_CLAIM) != "refresh" or not payload.get(jwt_settings.JTI_CLAIM):
        raise TokenInvalid()
    return payload


def _consume_refresh(payload: dict) -> OutstandingToken:
    """Blacklist a refresh token exactly once: the blacklist's unique key on the token decides.

    Stock simplejwt checks, then blacklists with get_or_create, so parallel refreshes
    with one token all pass the check. Here the INSERT itself is the check."""
    jti = payload[jwt_settings.JTI_CLAIM]
    outstanding = OutstandingToken.objects.filter(jti=jti).select_related("user").first()
    if outstanding is None:
        raise TokenInvalid()
    try:
        with transaction.atomic():
            BlacklistedToken.objects.create(token=outstanding)
    except IntegrityError:
        raise TokenInvalid() from None
    return outstanding


def refresh_access_token(refresh_token: str) -> AccessToken:
    """Trade a refresh token for a new pair. A refresh token works once: it is blacklisted
    as it is used, atomically, so of parallel refreshes with one token exactly one wins."""
    outstanding = _consume_refresh(_decode_refresh(refresh_token))
    user = outstanding.user
    if user is None or not user.is_active:
        raise TokenInvalid()
    tokens = _issue_tokens(user)
    return AccessToken(access=tokens.access, refresh=tokens.refresh)


def revoke_token(token: str, *, user: User | None = None) -> bool:
    """Blacklist a refresh token (logout). True if this call revoked it, False if it was
    already revoked. With `user`, a token of somebody else is refused as invalid."""
    payload = _decode_refresh(token)
    outstanding = OutstandingToken.objects.filter(jti=payload[jwt_settings.JTI_CLAIM]).first()
    if outstanding is None or (user is not None and outstanding.user_id != user.pk):
        raise TokenInvalid()
    _token, created = BlacklistedToken.objects.get_or_create(token=outstanding)
    return created


@transaction.atomic
def revoke_all_tokens(user: User) -> int:
    """Log out everywhere: every refresh token of the user is blacklisted and every access
    token issued until now stops working. Returns how many refresh tokens were revoked."""
    now = timezone.now()
    User.objects.filter(pk=user.pk).update(tokens_valid_after=now)
    answers.changed(f"user:{user.pk}")  # what JWTAuthentication keeps of the user
    user.tokens_valid_after = now
    live = OutstandingToken.objects.filter(user=user, blacklistedtoken__isnull=True)
    revoked = BlacklistedToken.objects.bulk_create(
        [BlacklistedToken(token=token) for token in live], ignore_conflicts=True
    )
    return len(revoked)


def access_token_revoked(valid_after: datetime | None, issued_at: datetime) -> bool:
    """Whether an access token issued at `issued_at` was revoked by logout-everywhere at
    `valid_after` (the user's tokens_valid_after)."""
    return valid_after is not None and issued_at < valid_after.replace(microsecond=0)


# --- Profile ----------------------------------------------------------------------------

PROFILE_FIELDS = ("first_name", "last_name", "email", "birth_date", "marketing_consent")


@transaction.atomic
def update_profile(*, user: User, **changes) -> User:
    """Change the customer's own profile. Consent changes are stamped with their time."""
    unknown = set(changes) - set(PROFILE_FIELDS)
    if unknown:
        raise ValueError(f"Not profile fields: {sorted(unknown)}")
    if changes.get("email"):
        changes["email"] = User.objects.normalize_email(changes["email"])
    user = User.objects.select_for_update().get(pk=user.pk)
    if "marketing_consent" in changes and changes["marketing_consent"] != user.marketing_consent:
        user.marketing_consent_at = timezone.now()
    for field, value in changes.items():
        setattr(user, field, value)
    user.save(update_fields=[*changes, "marketing_consent_at"])
    return user


@transaction.atomic
def close_account(*, user: User) -> User:
    """Close the account as app stores require: personal data is wiped, every token is
    revoked, and the row stays so that purchases and the bonus ledger (its balance with it)
    keep their owner. Seats and waitlist places in events not yet ended are given up, in
    this transaction, as the customer's own cancellation would, and open votes withdrawn."""
    # Imported here, as the notification service is above: loyalty (which events uses) imports
    # this module, and accounts depends on no other app when it loads.
    from events.services import leave_events

    # FOR NO KEY UPDATE: purchases of this customer (their rows reference this one) are not
    # held up before they reach the bonus account, which the closure may take after them.
    user = User.objects.select_for_update(no_key=True).get(pk=user.pk)
    logger.info("Closing account %s (%s)", user.pk, mask_phone(user.phone))
    # The user's row first, then (inside events) each event, its registrations, the bonus accounts.
    leave_events(user=user)
    user.phone = None
    user.first_name = ""
    user.last_name = ""
    user.email = ""
    user.birth_date = None
    user.marketing_consent = False
    user.marketing_consent_at = timezone.now()
    user.is_active = False
    user.deleted_at = timezone.now()
    user.set_unusable_password()
    user.save()
    revoke_all_tokens(user)
    return user


def flush_expired_tokens() -> int:
    """Delete refresh tokens past their expiry with their blacklist rows: they can no longer
    be used anyway, and the table grows by one row per login. Returns the rows deleted."""
    deleted, _by_model = OutstandingToken.objects.filter(expires_at__lt=timezone.now()).delete()
    return deleted


# --- Partner API keys ---------------------------------------------------------------------

API_KEY_PREFIX = "sk"


def _api_key_hash(raw_key: str) -> str:
    # Keys carry 256 random bits, so a fast hash is as good as a slow one here.
    return hashlib.sha256(raw_key.encode()).hexdigest()


@transaction.atomic
def create_api_key(*, business, name: str, created_by: User | None = None) -> tuple:
    """Make a new partner API key; returns the row and the key itself, which is never stored
    and cannot be shown again."""
    from accounts.models import ApiKey

    prefix = secrets.token_hex(4)
    raw_key = f"{API_KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    api_key = ApiKey.objects.create(
        business=business,
        name=(name or "").strip()[:100] or "API",
        prefix=prefix,
        key_hash=_api_key_hash(raw_key),
        created_by=created_by,
    )
    return api_key, raw_key


def revoke_api_key(*, api_key) -> bool:
    """Revoke a key; True if this call revoked it. A revoked key stops working at once."""
    from accounts.models import ApiKey

    revoked = ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now()) == 1
    # After the write: outside a transaction the renewal is immediate, and a key read before
    # the write must not be kept under the new version (inside one, it is renewed on commit too).
    answers.changed(f"apikey:{api_key.prefix}")
    return revoked


def authenticate_api_key(raw_key: str):
    """The active key matching `raw_key`, or None. Compares hashes in constant time.

    A POS calls with its key on every sale, so the key and its business are read through
    the cache (svoykrug.answers): scope `apikey:<prefix>`, renewed by revoking the key and by
    any save of it, and `businesses`, renewed by any save of a business (one deactivated
    stops its keys at once)."""
    from accounts.models import ApiKey

    parts = raw_key.split("_", 2) if isinstance(raw_key, str) else []
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX or len(raw_key) > 200:
        return None
    scope = f"apikey:{parts[1]}"
    active = ApiKey.objects.filter(prefix=parts[1], revoked_at__isnull=True).select_related("business")
    api_key = answers.cached_value(scope, scopes=[scope, "businesses"], compute=lambda: (active.first(), None))
    if api_key is None or not hmac.compare_digest(api_key.key_hash, _api_key_hash(raw_key)):
        return None
    if not api_key.business.is_active:
        return None
    # At most one write a minute per key: the POS calls often.
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at > timedelta(minutes=1):
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
        answers.changed(scope)  # the cached key has the time it was last used
    return api_key
