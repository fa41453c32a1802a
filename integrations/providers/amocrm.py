"""amoCRM (API v4): a won lead is a purchase.

A lead in one of the integration's won statuses (`won_status_ids`, by default 142, which
amoCRM gives the "won" stage of every pipeline) is a purchase of its `price`, paid when the
lead was closed; the customer is the phone of the lead's main contact. A lead moved out of
a won status, or deleted, is refunded; so is a lost lead (143) that a sync sees, because a
refund of something never counted changes nothing and a won-then-lost lead is caught even
when its webhook was missed. Leads in any other status are left alone.

Auth is OAuth 2 through Svoy Krug's own amoCRM integration (AMOCRM_CLIENT_ID, _SECRET,
_REDIRECT_URI): the partner pastes the one-time authorization code into the connect form
and `on_connect` swaps it for a token pair. Access tokens live a day; refresh tokens are
single-use, so a rotated pair is stored at once, under the row lock, and a worker that finds
the pair already rotated by another uses that one instead of refreshing again (a second
refresh with the old token would be refused and would disconnect the partner).

Webhooks are form-encoded with flat keys (`leads[status][0][id]=…`), carry no signature (the
secret in the URL is the check) and lack the contact, so a won lead from a webhook is marked
`needs_details` and `complete()` reads the lead and its contact with two API calls."""

import logging
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlsplit

import requests
from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from integrations.providers.base import (
    CrmEvent,
    FormField,
    Provider,
    ProviderAuthError,
    ProviderConfigError,
    ProviderError,
    WebhookRejected,
    ignored,
    json_body,
    money,
    purchase,
    refund,
)

logger = logging.getLogger(__name__)

NAME = "amoCRM"
WON_STATUS = 142
LOST_STATUS = 143
# An access token this close to its expiry is refreshed before the call rather than after a 401.
EXPIRY_MARGIN = timedelta(minutes=1)
# Hosts of amoCRM accounts a partner may paste whole instead of the bare subdomain.
ACCOUNT_DOMAINS = (".amocrm.ru", ".amocrm.com", ".kommo.com")
_SUBDOMAIN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_FORM_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_BRACKETED = re.compile(r"\[([^\[\]]*)\]")
# Webhook actions whose lead carries its (new) status.
_ACTIONS_WITH_STATUS = ("add", "update", "restore", "status")


class AmoCrmProvider(Provider):
    code = "amocrm"
    title = "amoCRM"
    fields = (
        FormField(
            "subdomain",
            _("amoCRM account"),
            help_text=_("The name before .amocrm.ru in your account's address, e.g. mycompany."),
        ),
        FormField(
            "auth_code",
            _("Authorization code"),
            secret=True,
            help_text=_(
                "The code amoCRM shows when you allow the Svoy Krug integration. "
                "It works once and for 20 minutes; paste a new one to reconnect."
            ),
        ),
    )
    # Leads per page of a sync (amoCRM allows at most 250).
    page_size = 250

    # --- The interface ---------------------------------------------------------------------

    def test_connection(self) -> str:
        self._get("/api/v4/leads", params={"limit": 1})
        return f"{NAME} account {_host(self.base_url())}"

    def fetch_changes(self, since: datetime, until: datetime):
        """Leads updated in [since, until] (amoCRM's filter takes whole seconds, both ends
        included: a lead seen twice changes nothing), oldest first, page by page until an
        empty page (HTTP 204) or a page without a `next` link."""
        contacts: dict[str, tuple[str, str]] = {}  # one call per contact per sync
        page = 1
        while True:
            response = self._get(
                "/api/v4/leads",
                params={
                    "filter[updated_at][from]": int(since.timestamp()),
                    "filter[updated_at][to]": int(until.timestamp()),
                    "with": "contacts",
                    "limit": self.page_size,
                    "page": page,
                    "order[updated_at]": "asc",
                },
            )
            if response.status_code == 204:
                return
            data = json_body(response, NAME)
            leads = ((data.get("_embedded") or {}).get("leads") or []) if isinstance(data, dict) else []
            events = [event for lead in leads if (event := self._lead_event(lead, contacts)) is not None]
            if events:
                yield events
            if not leads or not (data.get("_links") or {}).get("next"):
                return
            page += 1

    def parse_webhook(self, body: bytes, content_type: str) -> list[CrmEvent]:
        """Events of a webhook body: `leads[<action>][<n>][…]` entries become purchases (won,
        to be completed), refunds (moved out of won, deleted) or ignored events; sections of
        other entities (contacts, tasks, …) are ignored. A body that is not form-encoded or
        names no entity at all is rejected."""
        tree = _form_tree(body)
        sections = {
            entity: actions
            for entity, actions in tree.items()
            if entity != "account" and isinstance(actions, dict) and actions
        }
        entries = [
            (entity, action, entry) for entity, actions in sections.items() for action, entry in _entries(actions)
        ]
        if not entries:
            raise WebhookRejected(f"{NAME}: the body has no leads section; is this an amoCRM webhook?")
        return [
            self._webhook_lead_event(action, entry)
            if entity == "leads"
            else ignored(f"{entity}:{entry.get('id', '?')}"[:100], f"{entity} {action}: not a lead")
            for entity, action, entry in entries
        ]

    def complete(self, event: CrmEvent) -> CrmEvent:
        """A won lead from a webhook, read again with its contact: the phone, the price and
        the closing time as amoCRM has them now. A lead deleted or moved out of won since
        the webhook is ignored (its own webhook refunds it if it was ever counted)."""
        if not event.needs_details:
            return event
        lead_id = event.external_id.removeprefix("lead:")
        response = self._get(f"/api/v4/leads/{lead_id}", params={"with": "contacts"}, missing_ok=True)
        if response.status_code in (204, 404):
            return ignored(event.external_id, "the lead is no longer in amoCRM")
        lead = json_body(response, NAME)
        status = _int(lead.get("status_id")) if isinstance(lead, dict) else None
        if status not in self.won_statuses():
            return ignored(event.external_id, f"the lead is no longer won in amoCRM (status {status})")
        return self._lead_purchase(lead, {})

    def on_connect(self, form_data: dict) -> None:
        """Swap the one-time authorization code for a token pair and forget the code. Saving
        the form again without a code keeps the connection as it is."""
        code = str(form_data.get("auth_code") or "").strip()
        if not code:
            if self.credentials.get("access_token"):
                return
            raise ProviderConfigError(f"{NAME}: paste the authorization code from your amoCRM account.")
        tokens = self._token_request({"grant_type": "authorization_code", "code": code}, what="authorization code")
        self._store_tokens(tokens, forget=("auth_code",))
        logger.info("amoCRM integration %s connected", self.integration.pk)

    # --- Settings ----------------------------------------------------------------------------

    def base_url(self) -> str:
        """`https://<subdomain>.amocrm.ru`, or the whole `base_url` from the settings (tests)."""
        override = str(self.config.get("base_url") or "").strip().rstrip("/")
        if override:
            return override
        return f"https://{_account_host(self.config.get('subdomain'))}"

    def won_statuses(self) -> set[int]:
        value = self.config.get("won_status_ids") or [WON_STATUS]
        if isinstance(value, str | int):
            value = str(value).split(",")
        try:
            return {int(str(status).strip()) for status in value if str(status).strip()}
        except ValueError as exc:
            raise ProviderConfigError(f"{NAME}: the won statuses must be numbers: {value!r}.") from exc

    # --- Leads -------------------------------------------------------------------------------

    def _lead_event(self, lead: dict, contacts: dict) -> CrmEvent | None:
        status = _int(lead.get("status_id"))
        external_id = f"lead:{lead.get('id')}"
        try:
            if status in self.won_statuses():
                return self._lead_purchase(lead, contacts)
            if status == LOST_STATUS:
                return refund(
                    external_id,
                    refund_id=f"{external_id}:lost",
                    occurred_at=_from_unix(lead.get("closed_at") or lead.get("updated_at")),
                    reason="lost in amoCRM",
                    raw=lead,
                )
        except ValueError as exc:
            return ignored(external_id, str(exc), raw=lead)
        return None

    def _lead_purchase(self, lead: dict, contacts: dict) -> CrmEvent:
        phone, name = "", ""
        contact_id = _main_contact_id(lead)
        if contact_id:
            if contact_id not in contacts:
                contacts[contact_id] = self._contact(contact_id)
            phone, name = contacts[contact_id]
        return purchase(
            f"lead:{lead.get('id')}",
            money(lead.get("price") or 0, what="the lead's price"),
            _from_unix(lead.get("closed_at") or lead.get("updated_at")),
            phone=phone,
            customer_name=name,
            raw=lead,
        )

    def _contact(self, contact_id: str) -> tuple[str, str]:
        """(phone, name) of a contact: the first value of its PHONE field."""
        response = self._get(f"/api/v4/contacts/{contact_id}", missing_ok=True)
        if response.status_code in (204, 404):
            return "", ""
        contact = json_body(response, NAME)
        if not isinstance(contact, dict):
            return "", ""
        for custom_field in contact.get("custom_fields_values") or []:
            if (custom_field or {}).get("field_code") == "PHONE":
                values = custom_field.get("values") or [{}]
                return str(values[0].get("value") or ""), str(contact.get("name") or "")
        return "", str(contact.get("name") or "")

    def _webhook_lead_event(self, action: str, entry: dict) -> CrmEvent:
        lead_id = str(entry.get("id") or "").strip()
        if not lead_id.isdigit():
            raise WebhookRejected(f"{NAME}: a leads[{action}] entry has no lead id.")
        external_id = f"lead:{lead_id}"
        if action == "delete":
            return refund(external_id, refund_id=f"{external_id}:deleted", reason="deleted in amoCRM", raw=entry)
        if action not in _ACTIONS_WITH_STATUS:
            return ignored(external_id, f"lead {action}", raw=entry)
        status = _int(entry.get("status_id"))
        won = self.won_statuses()
        try:
            if status in won:
                price = entry.get("price")
                event = purchase(
                    external_id,
                    money(price, what="the lead's price") if price not in (None, "") else None,
                    _from_unix(entry.get("updated_at") or entry.get("last_modified")),
                    raw=entry,
                )
                return replace(event, needs_details=True)  # the webhook has no contact
            if action == "status" and _int(entry.get("old_status_id")) in won:
                return refund(
                    external_id,
                    refund_id=f"{external_id}:status:{status}",
                    occurred_at=_from_unix(entry.get("updated_at") or entry.get("last_modified")),
                    reason=f"moved out of won in amoCRM (status {status})",
                    raw=entry,
                )
        except ValueError as exc:
            raise WebhookRejected(f"{NAME}: lead {lead_id}: {exc}") from exc
        return ignored(external_id, f"lead {action}: status {status} is not a won status", raw=entry)

    # --- HTTP and tokens ---------------------------------------------------------------------

    def _get(self, path: str, *, params=None, missing_ok: bool = False) -> requests.Response:
        """One authenticated GET. An expired token is refreshed first; a 401 refreshes once
        and tries once more. 204 is returned (an empty list); 404 too when `missing_ok`."""
        token = self._access_token()
        response = self._send(path, token, params)
        if response.status_code == 401:
            token = self._refresh(stale=token)
            response = self._send(path, token, params)
        if response.status_code in (200, 204) or (missing_ok and response.status_code == 404):
            return response
        detail = _problem(response)
        if response.status_code in (401, 403):
            raise ProviderAuthError(
                f"{NAME}: access refused: {detail}. Reconnect amoCRM with a new authorization code."
            )
        if response.status_code == 402:
            raise ProviderError(f"{NAME}: the account's subscription has run out (HTTP 402).")
        if response.status_code == 404:
            raise ProviderConfigError(f"{NAME}: nothing found at {_host(self.base_url())}; check the account's name.")
        raise ProviderError(f"{NAME}: the request was refused: {detail} (HTTP {response.status_code}).")

    def _send(self, path: str, token: str, params) -> requests.Response:
        return self.http.request(
            "GET",
            f"{self.base_url()}{path}",
            params=params,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/hal+json"},
        )

    def _access_token(self) -> str:
        token = str(self.credentials.get("access_token") or "")
        if not token:
            raise ProviderConfigError(f"{NAME}: not connected yet: paste the authorization code from your account.")
        if _expired(self.credentials.get("expires_at")):
            token = self._refresh(stale=token)
        return token

    def _refresh(self, *, stale: str) -> str:
        """A fresh access token in place of `stale`: one another worker stored meanwhile, or
        one got with the refresh token. The integration's row stays locked from reading the
        refresh token to storing its successor, so two workers never spend one single-use
        refresh token: the second waits, then finds the pair already rotated."""
        from django.db import transaction

        from integrations.models import CRMIntegration

        with transaction.atomic():
            list(CRMIntegration.objects.select_for_update().filter(pk=self.integration.pk).values_list("pk"))
            fresh = self.reload_credentials()
            if _rotated(fresh, stale):
                return fresh["access_token"]
            refresh_token = str(fresh.get("refresh_token") or "")
            if not refresh_token:
                raise ProviderAuthError(f"{NAME}: the connection has expired. Reconnect with a new authorization code.")
            tokens = self._token_request({"grant_type": "refresh_token", "refresh_token": refresh_token}, what="token")
            self._store_tokens(tokens)
        logger.info("amoCRM integration %s: access token refreshed", self.integration.pk)
        return tokens["access_token"]

    def _token_request(self, grant: dict, *, what: str) -> dict:
        """POST /oauth2/access_token with Svoy Krug's client; the new pair, or
        ProviderAuthError with amoCRM's reason."""
        client = {
            "client_id": settings.AMOCRM_CLIENT_ID,
            "client_secret": settings.AMOCRM_CLIENT_SECRET,
            "redirect_uri": settings.AMOCRM_REDIRECT_URI,
        }
        if not all(client.values()):
            raise ProviderConfigError(f"{NAME}: Svoy Krug's amoCRM integration is not set up on this server yet.")
        response = self.http.request("POST", f"{self.base_url()}/oauth2/access_token", json={**client, **grant})
        if response.status_code != 200:
            raise ProviderAuthError(
                f"{NAME} refused the {what}: {_problem(response)}. Reconnect with a new authorization code."
            )
        tokens = json_body(response, NAME)
        if not isinstance(tokens, dict) or not tokens.get("access_token") or not tokens.get("refresh_token"):
            raise ProviderError(f"{NAME}: the token answer has no token pair.")
        return tokens

    def _store_tokens(self, tokens: dict, *, forget: tuple[str, ...] = ()) -> None:
        """Store the pair encrypted, under the row lock; `forget` drops other credentials (the
        used authorization code) in the same write."""
        values = {
            "access_token": tokens["access_token"],
            "refresh_token": tokens["refresh_token"],
            "expires_at": (timezone.now() + timedelta(seconds=_int(tokens.get("expires_in")) or 86400)).isoformat(),
        }
        if not forget:
            self.save_credentials(**values)
            return
        from django.db import transaction

        from integrations.models import CRMIntegration

        with transaction.atomic():
            locked = CRMIntegration.objects.select_for_update().get(pk=self.integration.pk)
            current = locked.credentials
            for name in forget:
                current.pop(name, None)
            current.update(values)
            locked.credentials = current
            locked.save(update_fields=["credentials_encrypted", "updated_at"])
        self.integration.credentials_encrypted = locked.credentials_encrypted
        self.credentials = current


# --- Helpers -------------------------------------------------------------------------------------


def _account_host(value) -> str:
    """The account's host from what the partner typed: `mycompany`, `mycompany.amocrm.ru`
    or the whole address."""
    text = str(value or "").strip().lower()
    if "//" in text:
        text = urlsplit(text).netloc
    text = text.split("/")[0]
    if not text:
        raise ProviderConfigError(f"{NAME}: the account's name (subdomain) is not set.")
    if "." in text:
        subdomain = next((text.removesuffix(d) for d in ACCOUNT_DOMAINS if text.endswith(d)), "")
        if _SUBDOMAIN.match(subdomain):
            return text
    elif _SUBDOMAIN.match(text):
        return f"{text}.amocrm.ru"
    raise ProviderConfigError(f"{NAME}: {text!r} is not an amoCRM account name.")


def _form_tree(body: bytes) -> dict:
    """A form-encoded body with bracketed keys as nested dicts:
    `leads[status][0][id]=1` → {"leads": {"status": {"0": {"id": "1"}}}}."""
    try:
        text = body.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise WebhookRejected(f"{NAME}: the body is not UTF-8 text.") from exc
    if text[:1] in ("{", "["):
        raise WebhookRejected(f"{NAME}: the body is JSON; amoCRM sends form-encoded webhooks.")
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True) if text else []
    except ValueError as exc:
        raise WebhookRejected(f"{NAME}: the body is not form-encoded.") from exc
    tree: dict = {}
    for key, value in pairs:
        match = _FORM_KEY.match(key)
        if not match:
            raise WebhookRejected(f"{NAME}: unreadable field name {key[:80]!r}.")
        *parents, last = [match.group(1), *_BRACKETED.findall(match.group(2))]
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise WebhookRejected(f"{NAME}: field {key[:80]!r} clashes with another.")
        if isinstance(node.get(last), dict):
            raise WebhookRejected(f"{NAME}: field {key[:80]!r} clashes with another.")
        node[last] = value
    return tree


def _entries(actions: dict):
    """(action, entry) for each `<entity>[<action>][<n>]` entry that is a record."""
    for action, entries in actions.items():
        if isinstance(entries, dict):
            for entry in entries.values():
                if isinstance(entry, dict):
                    yield action, entry


def _main_contact_id(lead: dict) -> str:
    contacts = [c for c in ((lead.get("_embedded") or {}).get("contacts") or []) if isinstance(c, dict) and c.get("id")]
    main = next((c for c in contacts if c.get("is_main")), contacts[0] if contacts else None)
    return str(main["id"]) if main else ""


def _from_unix(value) -> datetime | None:
    if value in (None, "", 0, "0"):
        return None
    try:
        return datetime.fromtimestamp(int(value), tz=UTC)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"not a time: {value!r}") from exc


def _int(value) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def _expired(expires_at) -> bool:
    if not expires_at:
        return False  # unknown: the call tells (401)
    try:
        moment = datetime.fromisoformat(str(expires_at))
    except ValueError:
        return True
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, UTC)
    return moment - EXPIRY_MARGIN <= timezone.now()


def _rotated(credentials: dict, stale: str) -> bool:
    token = credentials.get("access_token")
    return bool(token) and token != stale and not _expired(credentials.get("expires_at"))


def _problem(response: requests.Response) -> str:
    """amoCRM's own words from a problem+json body (`detail`, `hint` or `title`)."""
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if not isinstance(body, dict):
        return f"HTTP {response.status_code}"
    text = body.get("detail") or body.get("hint") or body.get("title") or f"HTTP {response.status_code}"
    return str(text).rstrip(".")[:300]


def _host(url: str) -> str:
    return urlsplit(url).netloc or url
