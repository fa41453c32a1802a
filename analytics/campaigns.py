"""Segment campaigns: a partner's message to an RFM segment of its customers, or to those whose
churn risk at the business is at least a threshold, sent as the "promotion" notification.

- `audience(business, segment=..., min_risk=...)`: the customers' ids. A segment comes from
  `calculate_rfm_segments(business_id=...)` (the warehouse), a risk threshold from the
  business's latest `ChurnScore` rows (PostgreSQL).
- `preview(...)`: how many of them a send reaches by push, by SMS (and by email, which goes
  besides), how many are excluded (no marketing consent, promotions turned off, account
  closed), and what the SMS part would cost: SMS × segments of the text × SMS_PRICE_RUB.
- `send(campaign)`: once — a draft turns "sending" by a conditional update, so a second send
  (a form posted twice) does nothing; every customer is then notified with the event key
  f"campaign:{id}:{customer id}", so a send that runs again (a worker that died) queues
  nobody twice. Big audiences go to the Celery task `analytics.tasks.send_campaign`.
- `results(campaign)`: the messages by channel and status (NotificationLog), and the
  purchases at the business by the recipients in the CAMPAIGN_ATTRIBUTION_DAYS after the send.

The notification service decides who hears what: consent, the promotions switch, quiet hours
(the messages wait for the customer's morning), push first and SMS only where no push
reaches, the circle's daily SMS budget. The preview mirrors those rules; it cannot know
whether the budget will have room when the SMS go."""

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Count, DecimalField, F, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import Business, User
from analytics.models import Campaign, ChurnScore
from analytics.services import calculate_rfm_segments
from loyalty.models import Transaction
from notifications import services as notifications
from notifications.models import Device, NotificationLog, NotificationPreferences

logger = logging.getLogger(__name__)

KIND = "promotion"
# Audiences up to this size are notified in the request that sends; bigger ones by a task.
INLINE_SEND_MAX = 200
# Ids per query (SQLite allows 999 parameters in old builds).
CHUNK = 500

Channel = NotificationLog.Channel
Status = NotificationLog.Status

# --- SMS length --------------------------------------------------------------------------------

# GSM 03.38: the basic alphabet, and the extension table (2 septets each).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")


@dataclass(frozen=True)
class SmsLength:
    """How an SMS text is billed: its length in the encoding's units and the segments."""

    encoding: str  # "GSM-7" (Latin) or "UCS-2" (anything else: Cyrillic, emoji)
    units: int
    segments: int
    per_segment: int  # characters per segment of a long message


def sms_length(text: str) -> SmsLength:
    """One SMS holds 160 GSM-7 characters or 70 UCS-2 ones (Cyrillic); a longer text is sent
    as several segments of 153 or 67 (each carries a header to join them), each billed as an
    SMS. An emoji is two UCS-2 units; a GSM-7 extension character (€, [, …) two septets."""
    if all(char in GSM7_BASIC or char in GSM7_EXTENSION for char in text):
        units = sum(2 if char in GSM7_EXTENSION else 1 for char in text)
        encoding, single, multi = "GSM-7", 160, 153
    else:
        units = len(text.encode("utf-16-le")) // 2
        encoding, single, multi = "UCS-2", 70, 67
    if units == 0:
        segments = 0
    elif units <= single:
        segments = 1
    else:
        segments = math.ceil(units / multi)
    return SmsLength(encoding=encoding, units=units, segments=segments, per_segment=single if segments <= 1 else multi)


def message_context(title: str, text: str) -> dict:
    return {"title": title, "text": text}


def sms_text(title: str, text: str) -> str:
    """The SMS exactly as the notification service renders it (with the circle's prefix)."""
    return notifications._render(KIND, "sms.txt", message_context(title, text))


# --- Audience ----------------------------------------------------------------------------------


def audience(business: Business, segment: str | None = None, min_risk: float | None = None) -> list:
    """The ids of the business's customers in `segment`, or with a churn risk at the business
    of at least `min_risk` (0–1) — exactly one of the two."""
    if (segment is None) == (min_risk is None):
        raise ValueError("An audience is a segment or a minimum churn risk, one of the two.")
    if segment is not None:
        if segment not in Campaign.Segment.values:
            raise ValueError(f"Not a segment: {segment!r}")
        return sorted(
            (row.user_id for row in calculate_rfm_segments(business_id=business.pk) if row.segment == segment), key=str
        )
    return list(
        ChurnScore.objects.filter(business=business, risk__gte=min_risk)
        .order_by("user_id")
        .values_list("user_id", flat=True)
    )


def campaign_audience(campaign: Campaign) -> list:
    return audience(campaign.business, segment=campaign.segment or None, min_risk=campaign.min_risk)


def _chunks(items: list, size: int = CHUNK):
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- Preview -----------------------------------------------------------------------------------


@dataclass
class Reach:
    """Who a send would reach and how, and what its SMS would cost."""

    customers: int = 0
    push: int = 0  # an active device, push on
    sms: int = 0  # no push reaches them, a phone, SMS on
    email: int = 0  # an email address, email on (besides push or SMS)
    unreachable: int = 0  # consenting, but no push, no SMS and no email reaches them
    no_consent: int = 0  # no marketing consent (or the account is closed)
    opted_out: int = 0  # promotions turned off
    sms_text: str = ""
    sms_length: SmsLength | None = None
    sms_price: Decimal = Decimal("0")
    sms_cost: Decimal = Decimal("0")

    @property
    def excluded(self) -> int:
        return self.no_consent + self.opted_out

    @property
    def reached(self) -> int:
        """Customers who get the message on at least one channel."""
        return self.customers - self.excluded - self.unreachable

    @property
    def sms_segments(self) -> int:
        return self.sms_length.segments if self.sms_length else 0

    @property
    def sms_messages(self) -> int:
        """SMS billed: one per segment per customer."""
        return self.sms * self.sms_segments


def preview(
    business: Business,
    segment: str | None = None,
    min_risk: float | None = None,
    *,
    title: str = "",
    text: str = "",
    customer_ids: list | None = None,
) -> Reach:
    """The reach of a message to the audience, by the notification service's rules for a
    marketing message (see `notifications.services.notify`), and the SMS cost estimate.
    `customer_ids` skips computing the audience again."""
    ids = list(customer_ids) if customer_ids is not None else audience(business, segment, min_risk)
    reach = Reach(customers=len(ids), sms_price=Decimal(str(settings.SMS_PRICE_RUB)))
    defaults = NotificationPreferences()  # a customer who changed nothing: every switch on
    seen = 0
    for chunk in _chunks(ids):
        users = User.objects.filter(pk__in=chunk).only("pk", "is_active", "marketing_consent", "phone", "email")
        prefs = {p.user_id: p for p in NotificationPreferences.objects.filter(user_id__in=chunk)}
        with_devices = set(
            Device.objects.filter(user_id__in=chunk, is_active=True).values_list("user_id", flat=True).distinct()
        )
        for user in users:
            seen += 1
            pref = prefs.get(user.pk, defaults)
            if not user.is_active or not user.marketing_consent:
                reach.no_consent += 1
                continue
            if not pref.promotions:
                reach.opted_out += 1
                continue
            pushed = pref.push_enabled and user.pk in with_devices
            texted = not pushed and bool(user.phone) and pref.sms_enabled
            mailed = bool(user.email) and pref.email_enabled
            reach.push += pushed
            reach.sms += texted
            reach.email += mailed
            reach.unreachable += not (pushed or texted or mailed)
    # An id without a user row (deleted since it was scored) reaches nobody.
    reach.unreachable += reach.customers - seen
    reach.sms_text = sms_text(title, text)
    reach.sms_length = sms_length(reach.sms_text)
    reach.sms_cost = (reach.sms_price * reach.sms_messages).quantize(Decimal("0.01"))
    return reach


def preview_campaign(campaign: Campaign) -> Reach:
    """The reach of a draft; its `audience_size` is brought up to date."""
    reach = preview(
        campaign.business, campaign.segment or None, campaign.min_risk, title=campaign.title, text=campaign.text
    )
    if campaign.status == Campaign.Status.DRAFT and campaign.audience_size != reach.customers:
        Campaign.objects.filter(pk=campaign.pk, status=Campaign.Status.DRAFT).update(audience_size=reach.customers)
        campaign.audience_size = reach.customers
    return reach


# --- Sending -----------------------------------------------------------------------------------


def send(campaign: Campaign) -> bool:
    """Send a draft, once: True if this call started the send, False if it was sent or is
    being sent already. Audiences over INLINE_SEND_MAX (as last previewed) are notified by
    the Celery task after commit; smaller ones here, their audience read before the draft is
    claimed (a warehouse that does not answer leaves it a draft)."""
    inline = campaign.audience_size <= INLINE_SEND_MAX
    ids = campaign_audience(campaign) if inline else None
    if ids is not None and len(ids) > INLINE_SEND_MAX:  # grew since the preview (or never previewed)
        inline, ids = False, None
    now = timezone.now()
    claimed = Campaign.objects.filter(pk=campaign.pk, status=Campaign.Status.DRAFT).update(
        status=Campaign.Status.SENDING, sent_at=now
    )
    if not claimed:
        return False
    campaign.status, campaign.sent_at = Campaign.Status.SENDING, now
    if inline:
        deliver(campaign, ids)
    else:
        from analytics.tasks import send_campaign

        campaign_id = str(campaign.pk)
        transaction.on_commit(lambda: send_campaign.delay(campaign_id))
    return True


def deliver(campaign: Campaign, customer_ids: list | None = None) -> int:
    """Notify the audience of a campaign being sent (read now unless given), then mark it
    sent. Safe to run again: the campaign's event key makes a customer already notified a
    no-op. Returns the notification rows written by this run."""
    if campaign.status != Campaign.Status.SENDING:
        return 0
    ids = list(customer_ids) if customer_ids is not None else campaign_audience(campaign)
    Campaign.objects.filter(pk=campaign.pk).update(audience_size=len(ids))
    context = message_context(campaign.title, campaign.text)
    written = 0
    for chunk in _chunks(ids):
        for user in User.objects.filter(pk__in=chunk):
            try:
                written += len(notifications.notify(user, KIND, context, event_key=campaign.event_key_for(user.pk)))
            except Exception:  # one customer's failure must not stop the others
                logger.exception("Campaign %s: could not notify %s", campaign.pk, user.pk)
    Campaign.objects.filter(pk=campaign.pk, status=Campaign.Status.SENDING).update(status=Campaign.Status.SENT)
    campaign.status, campaign.audience_size = Campaign.Status.SENT, len(ids)
    return written


# --- Results -----------------------------------------------------------------------------------


@dataclass
class Results:
    """What became of a campaign's messages, and the purchases that followed."""

    delivery: dict[str, dict[str, int]] = field(default_factory=dict)  # channel → status → messages
    skipped_reasons: dict[str, int] = field(default_factory=dict)
    recipients: int = 0  # customers with a message not skipped
    purchases: int = 0
    buyers: int = 0
    revenue: Decimal = Decimal("0.00")
    window_start: datetime | None = None
    window_end: datetime | None = None

    @property
    def messages(self) -> int:
        return sum(sum(statuses.values()) for statuses in self.delivery.values())

    def count(self, *statuses: str, channel: str | None = None) -> int:
        channels = [channel] if channel else list(self.delivery)
        return sum(self.delivery.get(c, {}).get(s, 0) for c in channels for s in statuses)

    @property
    def delivered(self) -> int:
        """Messages the provider took (sent) or confirmed (delivered)."""
        return self.count(Status.SENT, Status.DELIVERED)

    @property
    def waiting(self) -> int:
        """Messages queued or being sent: quiet hours, or the workers are at it."""
        return self.count(Status.QUEUED, Status.SENDING)

    @property
    def window_open(self) -> bool:
        return self.window_end is not None and timezone.now() < self.window_end


def campaign_logs(campaign: Campaign):
    """The notification rows of the campaign (their keys start with its event key)."""
    return NotificationLog.objects.filter(kind=KIND, idempotency_key__startswith=f"{campaign.event_key}:")


def results(campaign: Campaign) -> Results:
    """Delivery by channel and status, and the purchases at the business by the recipients
    (customers with a message not skipped) after the send and before sent_at +
    CAMPAIGN_ATTRIBUTION_DAYS. Purchases fully refunded do not count; revenue is money paid
    less money refunded, as on the dashboard."""
    outcome = Results()
    logs = campaign_logs(campaign)
    for row in logs.values("channel", "status").annotate(n=Count("id")):
        outcome.delivery.setdefault(row["channel"], {})[row["status"]] = row["n"]
    skipped = logs.filter(status=Status.SKIPPED).values("reason").annotate(n=Count("id")).order_by("-n", "reason")
    outcome.skipped_reasons = {row["reason"]: row["n"] for row in skipped}
    recipients = logs.exclude(status=Status.SKIPPED).exclude(user__isnull=True).values("user_id")
    outcome.recipients = recipients.distinct().count()
    if campaign.sent_at is None:
        return outcome
    outcome.window_start = campaign.sent_at
    outcome.window_end = campaign.sent_at + timedelta(days=settings.CAMPAIGN_ATTRIBUTION_DAYS)
    totals = (
        Transaction.objects.filter(
            business=campaign.business,
            customer_id__in=recipients,
            occurred_at__gt=outcome.window_start,
            occurred_at__lt=outcome.window_end,
        )
        .exclude(status=Transaction.Status.REFUNDED)
        .aggregate(
            purchases=Count("id"),
            buyers=Count("customer_id", distinct=True),
            revenue=Coalesce(
                Sum(F("paid_amount") - F("money_refunded")),
                Decimal("0.00"),
                output_field=DecimalField(max_digits=14, decimal_places=2),
            ),
        )
    )
    outcome.purchases, outcome.buyers = totals["purchases"], totals["buyers"]
    outcome.revenue = Decimal(totals["revenue"]).quantize(Decimal("0.01"))
    return outcome
