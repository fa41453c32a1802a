"""The events tables: partners' events, customers' registrations with their door tickets, and
the community's votes on proposed events.

An event's seats are counted on its row (`registered_count`), changed only under that row's
lock (see events.services), so the count can be trusted however many customers race for the
last seat; a constraint says it never passes the capacity.
"""

from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _

from accounts.models import Business
from svoykrug import codes

MONEY = {"max_digits": 12, "decimal_places": 2}
ZERO = Decimal("0.00")

# Ticket codes are read by scanners and, now and then, typed by a cashier: the alphabet has
# no look-alikes (svoykrug.codes).
TICKET_LENGTH = 10  # 25^10 ≈ 9.5e13 codes
TICKET_QR_PREFIX = "SVOYKRUG:TICKET:"


def new_ticket_code() -> str:
    return codes.random_code(TICKET_LENGTH)


def normalize_ticket(text: str) -> str:
    """A ticket code as typed or scanned: case, spaces, dashes and the QR prefix do not matter."""
    return codes.normalize_code(text, qr_prefix=TICKET_QR_PREFIX)


class Event(models.Model):
    class Status(models.TextChoices):
        PROPOSED = "proposed", _("Proposed, open for votes")
        PUBLISHED = "published", _("Published")
        CANCELLED = "cancelled", _("Cancelled")
        FINISHED = "finished", _("Finished")

    class Category(models.TextChoices):
        TASTING = "tasting", _("Tasting")
        MASTERCLASS = "masterclass", _("Master class")
        SPORT = "sport", _("Sport")
        TALK = "talk", _("Talk or lecture")
        PARTY = "party", _("Party")
        KIDS = "kids", _("For children")
        OTHER = "other", _("Other")

    class CloseReason(models.TextChoices):
        BY_PARTNER = "by_partner", _("Cancelled by the partner")
        NOT_ENOUGH_VOTES = "not_enough_votes", _("Not enough votes by the deadline")

    business = models.ForeignKey(
        Business, on_delete=models.PROTECT, related_name="events", verbose_name=_("host partner")
    )
    co_hosts = models.ManyToManyField(
        Business, blank=True, related_name="co_hosted_events", verbose_name=_("co-hosting partners")
    )
    title = models.CharField(_("title"), max_length=150)
    description = models.TextField(_("description"), blank=True)
    category = models.CharField(_("category"), max_length=20, choices=Category.choices, default=Category.OTHER)
    starts_at = models.DateTimeField(_("starts at"))
    ends_at = models.DateTimeField(_("ends at"))
    place = models.CharField(_("place"), max_length=300, blank=True, help_text=_("Empty: the host's address."))
    latitude = models.DecimalField(_("latitude"), max_digits=9, decimal_places=6, null=True, blank=True)
    longitude = models.DecimalField(_("longitude"), max_digits=9, decimal_places=6, null=True, blank=True)
    capacity = models.PositiveIntegerField(_("seats"), validators=[MinValueValidator(1)])
    registration_deadline = models.DateTimeField(_("registration closes at"))
    price = models.DecimalField(
        _("price in bonuses"), default=ZERO, validators=[MinValueValidator(ZERO)], help_text=_("0: free."), **MONEY
    )
    attendance_bonus = models.DecimalField(
        _("bonus for coming"), default=ZERO, validators=[MinValueValidator(ZERO)], **MONEY
    )
    status = models.CharField(_("status"), max_length=20, choices=Status.choices, default=Status.PUBLISHED)
    close_reason = models.CharField(_("why it closed"), max_length=20, choices=CloseReason.choices, blank=True)

    # A proposed event is put to the community: it is published when its up-votes reach the
    # threshold before the voting deadline, and closed at the deadline otherwise.
    vote_threshold = models.PositiveIntegerField(_("up-votes needed"), null=True, blank=True)
    voting_deadline = models.DateTimeField(_("voting closes at"), null=True, blank=True)

    # Seats taken (registered or checked in), kept on the row and changed only under its lock.
    registered_count = models.PositiveIntegerField(_("seats taken"), default=0)

    reminder_24h_sent_at = models.DateTimeField(null=True, blank=True, editable=False)
    reminder_2h_sent_at = models.DateTimeField(null=True, blank=True, editable=False)
    published_at = models.DateTimeField(_("published at"), null=True, blank=True)
    cancelled_at = models.DateTimeField(_("cancelled at"), null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("event")
        verbose_name_plural = _("events")
        ordering = ["starts_at", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(ends_at__gt=F("starts_at")), name="event_ends_after_start"),
            models.CheckConstraint(condition=Q(capacity__gte=1), name="event_has_seats"),
            models.CheckConstraint(condition=Q(registered_count__lte=F("capacity")), name="event_never_overbooked"),
            models.CheckConstraint(
                condition=Q(registration_deadline__lte=F("starts_at")), name="event_registration_closes_by_start"
            ),
            models.CheckConstraint(
                condition=Q(price__gte=0) & Q(attendance_bonus__gte=0), name="event_money_not_negative"
            ),
            models.CheckConstraint(
                condition=~Q(status="proposed") | Q(vote_threshold__gte=1, voting_deadline__isnull=False),
                name="event_proposed_has_vote_terms",
            ),
            models.CheckConstraint(
                condition=Q(voting_deadline__isnull=True) | Q(voting_deadline__lte=F("starts_at")),
                name="event_voting_closes_by_start",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "starts_at"], name="event_status_start"),
            models.Index(fields=["business", "starts_at"], name="event_business_start"),
            # The warehouse export reads what changed since its watermark.
            models.Index(fields=["updated_at"], name="event_changed"),
        ]

    def __str__(self):
        return self.title

    @property
    def seats_left(self) -> int:
        return max(self.capacity - self.registered_count, 0)

    def place_text(self) -> str:
        return self.place or self.business.address


class Registration(models.Model):
    class Status(models.TextChoices):
        REGISTERED = "registered", _("Registered")
        WAITLISTED = "waitlisted", _("On the waitlist")
        CANCELLED = "cancelled", _("Cancelled")
        CHECKED_IN = "checked_in", _("Came")
        NO_SHOW = "no_show", _("Did not come")

    class CancelledBy(models.TextChoices):
        CUSTOMER = "customer", _("The customer")
        PARTNER = "partner", _("The partner cancelled the event")
        UNPAID = "unpaid", _("Too few bonuses when a seat came free")

    # The statuses that hold a seat.
    SEATED = (Status.REGISTERED, Status.CHECKED_IN)

    event = models.ForeignKey(Event, on_delete=models.PROTECT, related_name="registrations")
    customer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="registrations")
    status = models.CharField(_("status"), max_length=20, choices=Status.choices)
    ticket_code = models.CharField(_("ticket code"), max_length=16, unique=True, default=new_ticket_code)
    # The waitlist's order: the moment the customer (last) joined it.
    waitlisted_at = models.DateTimeField(_("joined the waitlist at"), null=True, blank=True)
    registered_at = models.DateTimeField(_("registered at"))
    # What the current seat cost and the ledger key it was paid under; a refund returns it.
    paid_amount = models.DecimalField(_("paid in bonuses"), default=ZERO, **MONEY)
    payment_key = models.CharField(max_length=120, blank=True, editable=False)
    refunded_amount = models.DecimalField(_("refunded in bonuses"), default=ZERO, **MONEY)
    # What earlier seats on this row cost and kept (paid less refunded): a seat given up after
    # the refund deadline keeps its price, and registering again pays anew on the same row.
    kept_before = models.DecimalField(_("kept from earlier seats"), default=ZERO, editable=False, **MONEY)
    attempt = models.PositiveIntegerField(default=1, editable=False)  # registrations made on this row
    cancelled_at = models.DateTimeField(_("cancelled at"), null=True, blank=True)
    cancelled_by = models.CharField(_("cancelled by"), max_length=20, choices=CancelledBy.choices, blank=True)
    checked_in_at = models.DateTimeField(_("checked in at"), null=True, blank=True)
    checked_in_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name=_("checked in by"),
    )
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("registration")
        verbose_name_plural = _("registrations")
        ordering = ["registered_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["event", "customer"], name="registration_one_per_customer"),
            models.CheckConstraint(
                condition=~Q(status="checked_in") | Q(checked_in_at__isnull=False), name="registration_checkin_time"
            ),
            models.CheckConstraint(
                condition=~Q(status="waitlisted") | Q(waitlisted_at__isnull=False), name="registration_waitlist_time"
            ),
            models.CheckConstraint(
                condition=Q(refunded_amount__lte=F("paid_amount")), name="registration_refund_within_payment"
            ),
        ]
        indexes = [
            models.Index(fields=["event", "status", "waitlisted_at"], name="registration_queue"),
            models.Index(fields=["customer", "status"], name="registration_customer"),
            models.Index(fields=["updated_at"], name="registration_changed"),  # the warehouse export
        ]

    def __str__(self):
        return f"{self.customer} — {self.event} ({self.get_status_display()})"

    @property
    def qr_payload(self) -> str:
        return f"{TICKET_QR_PREFIX}{self.ticket_code}"


class Vote(models.Model):
    class Choice(models.TextChoices):
        UP = "up", _("For")
        DOWN = "down", _("Against")

    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="votes")
    customer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="event_votes")
    vote = models.CharField(_("vote"), max_length=4, choices=Choice.choices)
    created_at = models.DateTimeField(_("voted at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("changed at"), auto_now=True)

    class Meta:
        verbose_name = _("vote")
        verbose_name_plural = _("votes")
        constraints = [models.UniqueConstraint(fields=["event", "customer"], name="vote_one_per_customer")]

    def __str__(self):
        return f"{self.customer} {self.vote} {self.event}"
