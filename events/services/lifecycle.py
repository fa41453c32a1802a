"""An event's life: made by the host's owner or manager (`create_event`), changed, published,
cancelled with every seat refunded, closed when a vote fails, finished when it is over."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import Business, Membership, User
from events.models import Event, Registration
from events.services.errors import EventNotChangeable, InvalidEvent, NotAllowed
from events.services.messages import tell, tell_customer
from loyalty.money import round_down
from svoykrug import answers

Status = Event.Status

MANAGING_ROLES = (Membership.Role.OWNER, Membership.Role.MANAGER)
# What a change to an event may touch; the rest (status, counters) the services keep.
CHANGEABLE = (
    "title",
    "description",
    "category",
    "starts_at",
    "ends_at",
    "place",
    "latitude",
    "longitude",
    "capacity",
    "registration_deadline",
    "price",
    "attendance_bonus",
    "vote_threshold",
    "voting_deadline",
)
# Changes registered customers are told about.
NEWS = ("starts_at", "ends_at", "place")


@dataclass
class EventCreate:
    """What a partner fills in. `registration_deadline` empty: registration runs to the start.
    `propose` puts the event to the community's vote instead of publishing it."""

    business: Business
    title: str
    starts_at: datetime
    ends_at: datetime
    capacity: int
    description: str = ""
    category: str = Event.Category.OTHER
    place: str = ""
    latitude: Decimal | None = None
    longitude: Decimal | None = None
    registration_deadline: datetime | None = None
    price: Decimal = Decimal("0")
    attendance_bonus: Decimal = Decimal("0")
    co_hosts: list[Business] = field(default_factory=list)
    propose: bool = False
    vote_threshold: int | None = None
    voting_deadline: datetime | None = None


def can_manage(user: User, business: Business) -> bool:
    if user.is_staff:
        return True
    return Membership.objects.filter(
        user=user, business=business, role__in=MANAGING_ROLES, business__is_active=True
    ).exists()


def _require_manager(user: User | None, business: Business) -> None:
    if user is None or not can_manage(user, business):
        raise NotAllowed()


def _money(value, name: str, problems: dict) -> Decimal:
    try:
        amount = Decimal(value)
    except (TypeError, ArithmeticError, ValueError):
        problems[name] = [_("Enter an amount in bonuses.")]
        return Decimal("0")
    if not amount.is_finite() or amount < 0:
        problems[name] = [_("The amount cannot be negative.")]
    elif amount != round_down(amount):
        problems[name] = [_("At most two decimal places.")]
    elif amount > settings.LOYALTY_MAX_CHECK_AMOUNT:
        problems[name] = [_("At most %(max)s.") % {"max": settings.LOYALTY_MAX_CHECK_AMOUNT}]
    return amount


def _validate(values: dict, *, now: datetime, event: Event | None = None) -> None:
    """Check an event's terms as a whole; raise InvalidEvent naming every field at fault.
    `values` holds every field of CHANGEABLE plus `status`; `event` is the event being
    changed (its times may already be past where the change does not touch them)."""
    problems: dict[str, list] = {}
    title = (values["title"] or "").strip()
    if not title:
        problems["title"] = [_("Give the event a title.")]
    elif len(title) > Event._meta.get_field("title").max_length:
        problems["title"] = [_("The title is too long.")]
    if values["category"] not in Event.Category.values:
        problems["category"] = [_("Unknown category.")]
    starts, ends = values["starts_at"], values["ends_at"]
    moved = event is None or starts != event.starts_at
    if moved and starts <= now:
        problems["starts_at"] = [_("The event must start in the future.")]
    if ends <= starts:
        problems["ends_at"] = [_("The event must end after it starts.")]
    elif ends - starts > timedelta(days=settings.EVENTS_MAX_DURATION_DAYS):
        problems["ends_at"] = [_("An event lasts at most %(days)s days.") % {"days": settings.EVENTS_MAX_DURATION_DAYS}]
    capacity = values["capacity"]
    if not isinstance(capacity, int) or not 1 <= capacity <= settings.EVENTS_MAX_CAPACITY:
        problems["capacity"] = [_("From 1 to %(max)s seats.") % {"max": settings.EVENTS_MAX_CAPACITY}]
    elif event is not None and capacity < event.registered_count:
        problems["capacity"] = [
            _("%(count)s customers already hold seats: the event needs at least as many.")
            % {"count": event.registered_count}
        ]
    deadline = values["registration_deadline"]
    if deadline > starts:
        problems["registration_deadline"] = [_("Registration must close by the start.")]
    elif (event is None or deadline != event.registration_deadline) and deadline <= now:
        problems["registration_deadline"] = [_("Registration must close in the future.")]
    values["price"] = _money(values["price"], "price", problems)
    values["attendance_bonus"] = _money(values["attendance_bonus"], "attendance_bonus", problems)
    latitude, longitude = values["latitude"], values["longitude"]
    if (latitude is None) != (longitude is None):
        problems["latitude"] = [_("Give both coordinates or neither.")]
    elif latitude is not None and not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        problems["latitude"] = [_("These are not coordinates on Earth.")]
    if values["status"] == Status.PROPOSED:
        threshold, voting = values["vote_threshold"], values["voting_deadline"]
        if not isinstance(threshold, int) or threshold < 1:
            problems["vote_threshold"] = [_("How many votes for it should publish the event?")]
        if voting is None:
            problems["voting_deadline"] = [_("When does voting close?")]
        elif voting > min(starts, deadline):
            problems["voting_deadline"] = [_("Voting must close before registration does.")]
        elif (event is None or voting != event.voting_deadline) and voting <= now:
            problems["voting_deadline"] = [_("Voting must close in the future.")]
    if problems:
        raise InvalidEvent(_("Check the event's terms."), fields=problems)
    values["title"] = title


def create_event(data: EventCreate, creator: User) -> Event:
    """A new event of `data.business`, by one of its owners or managers (or the platform's
    staff): published at once, or proposed to the community's vote."""
    _require_manager(creator, data.business)
    if not data.business.is_active:
        raise InvalidEvent(_("The partner is not active."))
    values = {name: getattr(data, name) for name in CHANGEABLE}
    values["registration_deadline"] = data.registration_deadline or data.starts_at
    values["status"] = Status.PROPOSED if data.propose else Status.PUBLISHED
    if not data.propose:
        values["vote_threshold"] = values["voting_deadline"] = None
    now = timezone.now()
    _validate(values, now=now)
    co_hosts = [business for business in data.co_hosts if business.pk != data.business.pk]
    if any(not business.is_active for business in co_hosts):
        raise InvalidEvent(_("Check the event's terms."), fields={"co_hosts": [_("Only active partners.")]})
    if values["latitude"] is None and data.business.latitude is not None and not data.place:
        values["latitude"], values["longitude"] = data.business.latitude, data.business.longitude
    with transaction.atomic():
        event = Event.objects.create(
            business=data.business,
            created_by=creator,
            published_at=now if values["status"] == Status.PUBLISHED else None,
            **values,
        )
        event.co_hosts.set(co_hosts)
    return event


def _lock(event: Event) -> Event:
    return Event.objects.select_for_update(of=("self",)).select_related("business").get(pk=event.pk)


def update_event(event: Event, changes: dict, *, by: User) -> Event:
    """Change an upcoming event's terms (the host's managers). Seats cannot drop below those
    taken; the price cannot change once someone has paid; more seats go to the waitlist;
    registered customers hear of a new time or place."""
    from events.services.registrations import fill_seats

    _require_manager(by, event.business)
    unknown = set(changes) - set(CHANGEABLE)
    if unknown:
        raise InvalidEvent(_("These cannot be changed: %(names)s.") % {"names": ", ".join(sorted(unknown))})
    with transaction.atomic():
        event = _lock(event)
        now = timezone.now()
        if event.status not in (Status.PROPOSED, Status.PUBLISHED) or event.ends_at <= now:
            raise EventNotChangeable(_("Only an upcoming event can be changed."))
        if event.starts_at <= now and set(changes) - {"ends_at", "description"}:
            raise EventNotChangeable(_("The event has started: only its end and description can change."))
        values = {name: getattr(event, name) for name in CHANGEABLE} | {"status": event.status}
        if event.registration_deadline == event.starts_at and "registration_deadline" not in changes:
            # Registration that ran to the start still does when the start moves.
            values["registration_deadline"] = changes.get("starts_at", event.starts_at)
        values.update(changes)
        _validate(values, now=now, event=event)
        paid = event.registrations.filter(paid_amount__gt=0, status__in=Registration.SEATED)
        if values["price"] != event.price and paid.exists():
            raise InvalidEvent(
                _("Check the event's terms."),
                fields={"price": [_("Customers have paid the current price: it cannot change now.")]},
            )
        news = [name for name in NEWS if values[name] != getattr(event, name)]
        if values["starts_at"] != event.starts_at:
            # A moved event is reminded of again before its new start.
            event.reminder_24h_sent_at = event.reminder_2h_sent_at = None
        for name in CHANGEABLE:
            setattr(event, name, values[name])
        event.save()
        fill_seats(event, now=now)
        if event.status == Status.PROPOSED and _votes_for(event) >= event.vote_threshold:
            _publish(event, now)  # a lowered threshold the votes already meet
        if news and event.status == Status.PUBLISHED:
            stamp = now.strftime("%Y%m%d%H%M%S%f")
            for registration in event.registrations.filter(
                status__in=[Registration.Status.REGISTERED, Registration.Status.WAITLISTED]
            ).select_related("event__business"):
                tell(registration, "event_changed", key=f"changed:{stamp}")
    return event


def _votes_for(event: Event) -> int:
    from events.models import Vote

    return event.votes.filter(vote=Vote.Choice.UP).count()


def _publish(event: Event, now: datetime) -> None:
    """Publish a proposed event (locked) and tell those who voted for it."""
    from events.models import Vote

    event.status = Status.PUBLISHED
    event.published_at = now
    event.save(update_fields=["status", "published_at", "updated_at"])
    for customer_id in event.votes.filter(vote=Vote.Choice.UP).values_list("customer_id", flat=True):
        tell_customer(event, customer_id, "event_published", key="published")


def publish_event(event: Event, *, by: User) -> Event:
    """The host publishes a proposed event without waiting for the votes."""
    _require_manager(by, event.business)
    with transaction.atomic():
        event = _lock(event)
        if event.status != Status.PROPOSED:
            raise EventNotChangeable(_("Only a proposed event can be published."))
        if event.registration_deadline <= timezone.now():
            raise EventNotChangeable(_("Registration would already be closed: change the dates first."))
        _publish(event, timezone.now())
    return event


def cancel_event(event: Event, *, by: User | None, reason: str = Event.CloseReason.BY_PARTNER) -> Event:
    """Call an event off: every seat and waitlist place is cancelled, every ticket's bonuses
    are returned in full, and each customer is told. `by` None: the platform's own decision
    (a failed vote)."""
    from events.services.registrations import release

    if by is not None:
        _require_manager(by, event.business)
    with transaction.atomic():
        event = _lock(event)
        if event.status not in (Status.PROPOSED, Status.PUBLISHED):
            shown = event.get_status_display().lower()
            raise EventNotChangeable(_("The event is already %(status)s.") % {"status": shown})
        now = timezone.now()
        if event.starts_at <= now:
            # People are at the door or inside: their tickets were used, and the seats are theirs.
            raise EventNotChangeable(_("The event has started: it can no longer be cancelled."))
        held = list(
            event.registrations.select_for_update(of=("self",))
            .filter(status__in=[Registration.Status.REGISTERED, Registration.Status.WAITLISTED])
            .select_related("event__business")
            .order_by("id")
        )
        for registration in held:
            refunded = release(registration, by=Registration.CancelledBy.PARTNER, refund=True, now=now)
            tell(registration, "event_cancelled", key="cancelled", refunded=refunded)
        event.registered_count = 0
        event.status = Status.CANCELLED
        event.close_reason = reason
        event.cancelled_at = now
        event.save(update_fields=["registered_count", "status", "close_reason", "cancelled_at", "updated_at"])
    return event


def close_votes(now: datetime | None = None) -> int:
    """Proposed events whose voting closed without reaching the threshold are closed (those
    that reached it were published as the vote came in, or are published here). Returns how
    many closed."""
    now = now or timezone.now()
    closed = 0
    for event in Event.objects.filter(status=Status.PROPOSED, voting_deadline__lte=now).order_by("id"):
        with transaction.atomic():
            event = _lock(event)
            if event.status != Status.PROPOSED or event.voting_deadline > now:
                continue
            if _votes_for(event) >= event.vote_threshold:
                _publish(event, now)  # the votes are there (the threshold was lowered): it is on
                continue
            event.status = Status.CANCELLED
            event.close_reason = Event.CloseReason.NOT_ENOUGH_VOTES
            event.cancelled_at = now
            event.save(update_fields=["status", "close_reason", "cancelled_at", "updated_at"])
            closed += 1
    return closed


def finish_events(now: datetime | None = None) -> tuple[int, int]:
    """Events past their end are finished; EVENTS_NO_SHOW_AFTER_HOURS later, registered
    customers who never checked in are marked no-show. Returns (finished, no-shows)."""
    now = now or timezone.now()
    finished = Event.objects.filter(status=Status.PUBLISHED, ends_at__lte=now).update(
        status=Status.FINISHED, updated_at=now
    )
    no_shows = Registration.objects.filter(
        status=Registration.Status.REGISTERED,
        event__ends_at__lte=now - timedelta(hours=settings.EVENTS_NO_SHOW_AFTER_HOURS),
    ).update(status=Registration.Status.NO_SHOW, updated_at=now)
    if finished or no_shows:
        answers.changed("events")
    return finished, no_shows
