"""The mobile app's events API: the events a customer can see, their tickets, registration,
cancellation and the community's votes.

Every endpoint answers for the logged-in customer (JWT, the default authentication). The
services in `events.services` are the only write path: the views validate, call a service
and serialize; the services' refusals (`DomainError`) reach the project's exception handler
untouched and leave in the one error shape. An event the customer cannot see is not found,
exactly like one that does not exist.
"""

import math
import zoneinfo
from datetime import date, datetime, time, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from django.conf import settings
from django.db.models import (
    Case,
    CharField,
    Count,
    DateTimeField,
    Exists,
    F,
    FloatField,
    IntegerField,
    Min,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import ASin, Cast, Coalesce, Cos, Least, Power, Radians, Sin, Sqrt
from django.http import Http404
from django.utils import timezone
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.api import error_response
from accounts.models import Business, User
from events import services
from events.models import Event, Registration, Vote
from svoykrug import answers

MONEY = {"max_digits": 12, "decimal_places": 2}
COORDINATE = {"max_digits": 9, "decimal_places": 6}
EARTH_RADIUS_KM = 6371.0088  # the mean radius
KM_PER_DEGREE = math.pi * EARTH_RADIUS_KM / 180

RegStatus = Registration.Status
# The registrations a customer's ticket list shows by default: those that still hold a seat or a place.
HELD = (RegStatus.REGISTERED, RegStatus.WAITLISTED, RegStatus.CHECKED_IN)
NOT_FOUND = _("No event with this id.")

# --- Querysets ----------------------------------------------------------------------------------


def _listed(now: datetime) -> Q:
    return Q(status=Event.Status.PUBLISHED, ends_at__gt=now) | Q(status=Event.Status.PROPOSED, voting_deadline__gt=now)


def listed_events(now: datetime) -> QuerySet[Event]:
    """What the app lists: published events not over yet, proposals still open for votes."""
    return Event.objects.filter(_listed(now))


def next_listing_change(now: datetime) -> datetime | None:
    """The next moment the list changes with time alone: an event's registration closes, an
    event ends, a proposal's voting closes."""
    bounds = listed_events(now).aggregate(
        registration=Min("registration_deadline", filter=Q(registration_deadline__gt=now)),
        end=Min("ends_at", filter=Q(ends_at__gt=now)),
        voting=Min("voting_deadline", filter=Q(voting_deadline__gt=now)),
    )
    return min(filter(None, bounds.values()), default=None)


def visible_events(customer: User, now: datetime) -> QuerySet[Event]:
    """What the customer may open: the listed events, and any event they have a registration
    for (in any state: the event finished, cancelled, or past its voting), so their tickets
    keep opening."""
    theirs = Registration.objects.filter(event=OuterRef("pk"), customer=customer)
    return Event.objects.filter(_listed(now) | Exists(theirs))


def with_waitlist_position(registrations: QuerySet[Registration]) -> QuerySet[Registration]:
    """`waitlist_position`: 1 for the first in line, in the order the service promotes
    (joined the waitlist, then id); null unless the registration is waitlisted."""
    ahead = (
        Registration.objects.filter(event=OuterRef("event"), status=RegStatus.WAITLISTED)
        .filter(
            Q(waitlisted_at__lt=OuterRef("waitlisted_at"))
            | Q(waitlisted_at=OuterRef("waitlisted_at"), pk__lt=OuterRef("pk"))
        )
        .order_by()
        .values("event")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return registrations.annotate(
        waitlist_position=Case(
            When(
                status=RegStatus.WAITLISTED,
                then=Coalesce(Subquery(ahead, output_field=IntegerField()), 0) + 1,
            ),
            default=None,
            output_field=IntegerField(),
        )
    )


def for_customer(events: QuerySet[Event], customer: User) -> QuerySet[Event]:
    """Everything the representation reads, in a fixed number of queries whatever the page
    size: the host joined, the co-hosts and the customer's own registration prefetched (one
    query each), the customer's vote annotated."""
    mine = with_waitlist_position(Registration.objects.filter(customer=customer))
    my_vote = Vote.objects.filter(event=OuterRef("pk"), customer=customer).values("vote")[:1]
    return (
        events.select_related("business")
        .prefetch_related("co_hosts", Prefetch("registrations", queryset=mine, to_attr="my_registrations"))
        .annotate(my_vote=Subquery(my_vote))
    )


def for_everyone(events: QuerySet[Event]) -> QuerySet[Event]:
    """What the list's representation reads but the customer's own part: the host joined and
    the co-hosts prefetched (`with_customer` adds the customer's registration and vote)."""
    no_vote = Value(None, output_field=CharField(null=True))
    return events.select_related("business").prefetch_related("co_hosts").annotate(my_vote=no_vote)


def with_customer(page: dict, customer: User) -> dict:
    """A page of the list with the customer's own registration and vote put into its items
    (two queries, whatever the page size)."""
    ids = [item["id"] for item in page["results"]]
    registrations = Registration.objects.filter(customer=customer, event_id__in=ids)
    mine = {registration.event_id: registration for registration in with_waitlist_position(registrations)}
    votes = dict(Vote.objects.filter(customer=customer, event_id__in=ids).values_list("event_id", "vote"))
    results = []
    for item in page["results"]:
        registration = mine.get(item["id"])
        results.append(
            item
            | {
                "my_registration": RegistrationSerializer(registration).data if registration else None,
                "my_vote": votes.get(item["id"]),
            }
        )
    return page | {"results": results}


def starts_in_local_dates(events: QuerySet[Event], date_from, date_to) -> QuerySet[Event]:
    """Events whose start, read as a date in settings.TIME_ZONE (the circle's city), falls
    within [date_from, date_to]. Compared as instants, so the (status, starts_at) index serves."""
    zone = zoneinfo.ZoneInfo(settings.TIME_ZONE)
    if date_from:
        events = events.filter(starts_at__gte=datetime.combine(date_from, time.min, tzinfo=zone))
    if date_to:
        events = events.filter(starts_at__lt=datetime.combine(date_to + timedelta(days=1), time.min, tzinfo=zone))
    return events


def near(events: QuerySet[Event], lat: float, lng: float, radius_km: float) -> QuerySet[Event]:
    """Events with coordinates within `radius_km` of (lat, lng), with `distance_km` annotated.

    A bounding box on the stored coordinates narrows the rows first; the great-circle
    (haversine) distance is then computed in the query, so the filter and the pagination
    agree. Django's math functions run on SQLite and PostgreSQL alike."""
    lat_span = radius_km / KM_PER_DEGREE
    events = events.filter(
        latitude__gte=_degrees(lat - lat_span, ROUND_FLOOR),
        latitude__lte=_degrees(lat + lat_span, ROUND_CEILING),
        longitude__isnull=False,
    )
    # Near the poles or across the antimeridian the box of longitudes is no help: skip it.
    cos_lat = math.cos(math.radians(lat))
    if cos_lat > 0.01:
        lng_span = radius_km / (KM_PER_DEGREE * cos_lat)
        if lng - lng_span >= -180 and lng + lng_span <= 180:
            events = events.filter(
                longitude__gte=_degrees(lng - lng_span, ROUND_FLOOR),
                longitude__lte=_degrees(lng + lng_span, ROUND_CEILING),
            )

    def number(value: float) -> Value:
        return Value(value, output_field=FloatField())

    event_lat = Radians(Cast("latitude", FloatField()))
    event_lng = Radians(Cast("longitude", FloatField()))
    half_dlat = Sin((event_lat - number(math.radians(lat))) / number(2.0))
    half_dlng = Sin((event_lng - number(math.radians(lng))) / number(2.0))
    haversine = Power(half_dlat, 2) + number(math.cos(math.radians(lat))) * Cos(event_lat) * Power(half_dlng, 2)
    distance = number(2 * EARTH_RADIUS_KM) * ASin(Sqrt(Least(haversine, number(1.0))))
    return events.annotate(distance_km=distance).filter(distance_km__lte=radius_km)


def _degrees(value: float, rounding) -> Decimal:
    """A bound of the bounding box at the columns' precision, rounded outwards."""
    return Decimal(repr(value)).quantize(Decimal("0.000001"), rounding=rounding)


def customer_tickets(customer: User, *, now: datetime, include_past: bool = False) -> QuerySet[Registration]:
    """The customer's registrations with their events: upcoming events (not over yet) first,
    soonest start first; then past ones, latest start first. By default only registrations
    that hold a seat or a waitlist place on events not over yet; `include_past` adds the
    rest (cancelled, no-show, finished and cancelled events)."""
    upcoming = Q(event__ends_at__gt=now)
    tickets = Registration.objects.filter(customer=customer).select_related("event__business")
    if not include_past:
        tickets = tickets.filter(upcoming, status__in=HELD)
    return (
        with_waitlist_position(tickets)
        .annotate(
            past=Case(When(upcoming, then=Value(0)), default=Value(1), output_field=IntegerField()),
            upcoming_start=Case(When(upcoming, then=F("event__starts_at")), default=None, output_field=DateTimeField()),
            past_start=Case(When(upcoming, then=None), default=F("event__starts_at"), output_field=DateTimeField()),
        )
        .order_by("past", F("upcoming_start").asc(nulls_last=True), F("past_start").desc(nulls_last=True), "id")
    )


class EventPagination(PageNumberPagination):
    """Page numbers: the lists are short and the app shows their count."""

    def get_page_size(self, request):
        return settings.API_PAGE_SIZE


# --- Serializers --------------------------------------------------------------------------------


def enum_field(component_name: str, choices) -> type[serializers.ChoiceField]:
    """A ChoiceField class whose choice set is the schema component `component_name`. The
    events API's `status`, `category` and `vote` name other choice sets elsewhere in the
    schema (coupons', partners', purchases'), which drf-spectacular would otherwise name by
    guesswork, with a warning."""

    class EnumField(serializers.ChoiceField):
        def __init__(self, **kwargs):
            super().__init__(choices=choices, **kwargs)

    EnumField.__name__ = EnumField.__qualname__ = component_name.removesuffix("Enum") + "Field"
    return extend_schema_field(serializers.ChoiceField(choices=choices), component_name=component_name)(EnumField)


EventCategoryField = enum_field("EventCategoryEnum", Event.Category.choices)
EventStatusField = enum_field("EventStatusEnum", Event.Status.choices)
RegistrationStatusField = enum_field("RegistrationStatusEnum", Registration.Status.choices)
VoteField = enum_field("VoteEnum", Vote.Choice.choices)


class HostSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    category = serializers.ChoiceField(choices=Business.Category.choices)
    address = serializers.CharField()


class CoHostSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()


class VotesSerializer(serializers.Serializer):
    up = serializers.IntegerField()
    down = serializers.IntegerField()
    threshold = serializers.IntegerField(help_text=_("Up-votes that publish the event."))
    voting_deadline = serializers.DateTimeField()


class RegistrationSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = RegistrationStatusField()
    ticket_code = serializers.SerializerMethodField(
        help_text=_("What the door checks; only while the registration holds a seat.")
    )
    qr_payload = serializers.SerializerMethodField(
        help_text=_("What the ticket's QR code encodes; only while the registration holds a seat.")
    )
    registered_at = serializers.DateTimeField()
    checked_in_at = serializers.DateTimeField(allow_null=True)
    paid_amount = serializers.DecimalField(help_text=_("Bonuses the seat cost."), **MONEY)
    refunded_amount = serializers.DecimalField(help_text=_("Bonuses given back."), **MONEY)
    waitlist_position = serializers.IntegerField(
        allow_null=True, help_text=_("1 for the first in line; only while on the waitlist.")
    )

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_ticket_code(self, registration) -> str | None:
        return registration.ticket_code if registration.status in Registration.SEATED else None

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_qr_payload(self, registration) -> str | None:
        return registration.qr_payload if registration.status in Registration.SEATED else None


class EventSummarySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    status = EventStatusField()
    starts_at = serializers.DateTimeField()
    ends_at = serializers.DateTimeField()
    place = serializers.CharField(source="place_text", help_text=_("The event's place, or the host's address."))
    host = serializers.CharField(source="business.name", help_text=_("The host partner's name."))


class TicketSerializer(RegistrationSerializer):
    event = EventSummarySerializer()


class EventSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    description = serializers.CharField()
    category = EventCategoryField()
    status = EventStatusField(
        help_text=_("Proposed events are put to the vote; finished and cancelled ones show only with a registration."),
    )
    starts_at = serializers.DateTimeField()
    ends_at = serializers.DateTimeField()
    place = serializers.CharField(source="place_text", help_text=_("The event's place, or the host's address."))
    latitude = serializers.DecimalField(allow_null=True, **COORDINATE)
    longitude = serializers.DecimalField(allow_null=True, **COORDINATE)
    capacity = serializers.IntegerField()
    seats_left = serializers.IntegerField()
    registration_deadline = serializers.DateTimeField()
    registration_open = serializers.SerializerMethodField(
        help_text=_("Whether registering now is possible (a full event puts the customer on the waitlist).")
    )
    price = serializers.DecimalField(help_text=_("The ticket's price in bonuses; 0: free."), **MONEY)
    attendance_bonus = serializers.DecimalField(help_text=_("Bonuses for coming, paid at check-in."), **MONEY)
    host = HostSerializer(source="business")
    co_hosts = CoHostSerializer(many=True)
    votes = serializers.SerializerMethodField(help_text=_("The community's votes; only for a proposed event."))
    my_registration = serializers.SerializerMethodField(help_text=_("The customer's registration, if any."))
    my_vote = VoteField(allow_null=True, help_text=_("The customer's vote, if any."))
    refund_deadline = serializers.SerializerMethodField(
        help_text=_("A registration cancelled by then gets the ticket's bonuses back.")
    )

    def _now(self) -> datetime:
        return self.context.get("now") or timezone.now()

    def get_registration_open(self, event) -> bool:
        return event.status == Event.Status.PUBLISHED and self._now() < event.registration_deadline

    @extend_schema_field(VotesSerializer(allow_null=True))
    def get_votes(self, event):
        if event.status != Event.Status.PROPOSED:
            return None
        counts = services.vote_counts(event.pk)  # served from the cache; rebuilt from the database if missing
        return VotesSerializer(
            {
                "up": counts[Vote.Choice.UP],
                "down": counts[Vote.Choice.DOWN],
                "threshold": event.vote_threshold,
                "voting_deadline": event.voting_deadline,
            }
        ).data

    @extend_schema_field(RegistrationSerializer(allow_null=True))
    def get_my_registration(self, event):
        mine = getattr(event, "my_registrations", None)
        return RegistrationSerializer(mine[0]).data if mine else None

    @extend_schema_field(serializers.DateTimeField())
    def get_refund_deadline(self, event) -> str:
        return serializers.DateTimeField().to_representation(services.refund_deadline(event))


class EventListItemSerializer(EventSerializer):
    distance_km = serializers.SerializerMethodField(help_text=_("Kilometres from `near`; null without it."))

    @extend_schema_field(serializers.FloatField(allow_null=True))
    def get_distance_km(self, event) -> float | None:
        distance = getattr(event, "distance_km", None)
        return None if distance is None else round(distance, 2)


class EventQuerySerializer(serializers.Serializer):
    business = serializers.UUIDField(required=False, help_text=_("Only events this partner hosts or co-hosts."))
    category = serializers.ChoiceField(choices=Event.Category.choices, required=False)
    status = serializers.ChoiceField(
        choices=[
            (Event.Status.PUBLISHED.value, Event.Status.PUBLISHED.label),
            (Event.Status.PROPOSED.value, Event.Status.PROPOSED.label),
        ],
        required=False,
        help_text=_("Only published events, or only proposals open for votes."),
    )
    date_from = serializers.DateField(
        required=False,
        help_text=format_lazy(
            _("Only events starting on this date or later (the start's date in the circle's time zone, {zone})."),
            zone=settings.TIME_ZONE,
        ),
    )
    date_to = serializers.DateField(
        required=False,
        help_text=format_lazy(
            _("Only events starting on this date or earlier (the start's date in the circle's time zone, {zone})."),
            zone=settings.TIME_ZONE,
        ),
    )
    near = serializers.CharField(
        required=False,
        max_length=60,
        help_text=_(
            "“latitude,longitude” in degrees, e.g. 55.7558,37.6173: only events with coordinates within "
            "`radius_km` of the point, each with its `distance_km`."
        ),
    )
    radius_km = serializers.FloatField(
        required=False,
        help_text=format_lazy(
            _("The radius around `near` in kilometres: {default} by default, at most {max}."),
            default=settings.EVENTS_NEAR_DEFAULT_RADIUS_KM,
            max=settings.EVENTS_NEAR_MAX_RADIUS_KM,
        ),
    )

    # The dates a filter may name: year 1 or 9999 would overflow when read as instants in the circle's zone.
    EARLIEST_DATE, LATEST_DATE = date(2000, 1, 1), date(2999, 12, 31)

    def _date_in_range(self, value: date) -> date:
        if not self.EARLIEST_DATE <= value <= self.LATEST_DATE:
            raise serializers.ValidationError(
                _("Give a date from %(first)s to %(last)s.")
                % {"first": self.EARLIEST_DATE.isoformat(), "last": self.LATEST_DATE.isoformat()}
            )
        return value

    def validate_date_from(self, value: date) -> date:
        return self._date_in_range(value)

    def validate_date_to(self, value: date) -> date:
        return self._date_in_range(value)

    def validate_near(self, value: str) -> tuple[float, float]:
        parts = value.split(",")
        try:
            lat, lng = (float(part) for part in parts)
        except ValueError:
            raise serializers.ValidationError(_("Give the point as latitude,longitude.")) from None
        if not (math.isfinite(lat) and math.isfinite(lng) and -90 <= lat <= 90 and -180 <= lng <= 180):
            raise serializers.ValidationError(_("These are not coordinates on Earth."))
        return lat, lng

    def validate_radius_km(self, value: float) -> float:
        if not math.isfinite(value) or not 0 < value <= settings.EVENTS_NEAR_MAX_RADIUS_KM:
            raise serializers.ValidationError(_("From 0 to %(max)s km.") % {"max": settings.EVENTS_NEAR_MAX_RADIUS_KM})
        return value

    def validate(self, attrs):
        if "radius_km" in attrs and "near" not in attrs:
            raise serializers.ValidationError({"radius_km": [_("A radius needs a point: give `near` too.")]})
        if attrs.get("date_from") and attrs.get("date_to") and attrs["date_from"] > attrs["date_to"]:
            raise serializers.ValidationError({"date_to": [_("The end date is before the start date.")]})
        return attrs


class TicketQuerySerializer(serializers.Serializer):
    include = serializers.ChoiceField(
        choices=[("past", _("Past and cancelled too"))],
        required=False,
        help_text=_(
            "past: also cancelled and no-show registrations and events that are over. Without it, only "
            "registrations holding a seat or a waitlist place on events not over yet."
        ),
    )


class CancelResultSerializer(serializers.Serializer):
    registration = TicketSerializer()
    refunded = serializers.DecimalField(
        help_text=_("Bonuses given back now: the ticket's price if cancelled by the refund deadline."), **MONEY
    )


class VoteRequestSerializer(serializers.Serializer):
    vote = VoteField()


class VoteResultSerializer(serializers.Serializer):
    up = serializers.IntegerField()
    down = serializers.IntegerField()
    my_vote = VoteField()
    threshold = serializers.IntegerField(help_text=_("Up-votes that publish the event."))
    published = serializers.BooleanField(help_text=_("The votes have put the event on: registration is open."))


# --- Views --------------------------------------------------------------------------------------


class EventListView(generics.ListAPIView):
    serializer_class = EventListItemSerializer
    pagination_class = EventPagination

    def get_serializer_context(self):
        # One moment for the whole page: the filters and each item's `registration_open`.
        return super().get_serializer_context() | {"now": getattr(self, "now", None)}

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Event.objects.none()
        query = EventQuerySerializer(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        filters = query.validated_data
        events = listed_events(self.now)
        if business := filters.get("business"):
            co_hosted = Event.co_hosts.through.objects.filter(business_id=business).values("event_id")
            events = events.filter(Q(business_id=business) | Q(pk__in=co_hosted))
        if category := filters.get("category"):
            events = events.filter(category=category)
        if shown_status := filters.get("status"):
            events = events.filter(status=shown_status)
        events = starts_in_local_dates(events, filters.get("date_from"), filters.get("date_to"))
        if point := filters.get("near"):
            radius = filters.get("radius_km", settings.EVENTS_NEAR_DEFAULT_RADIUS_KM)
            events = near(events, *point, radius_km=radius)
        return for_everyone(events).order_by("starts_at", "id")

    @extend_schema(
        tags=["events"],
        summary="Events to go to: published ones not over yet and proposals open for votes, by start",
        parameters=[EventQuerySerializer],
        responses={
            200: EventListItemSerializer(many=True),
            400: error_response("A filter is not valid"),
            401: error_response("Not logged in"),
            404: error_response("No such page"),
        },
    )
    def get(self, request, *args, **kwargs):
        # The page is the same for every customer but for their own registration and vote: it
        # is kept once for all, and each customer's answer adds theirs. Seats, votes and
        # registrations are everyone's, so any change to any event renews the scope "events".
        def shared_page():
            self.now = timezone.now()
            page = super(EventListView, self).get(request, *args, **kwargs).data
            changes_at = next_listing_change(self.now) if answers.enabled() else None
            return {"page": page, "changes_at": changes_at}, changes_at

        def customers_page():
            shared = answers.cached_data(request, name="events-page", scopes=["events"], compute=shared_page)
            return Response(with_customer(shared["page"], request.user)), shared["changes_at"]

        return answers.cached_answer(request, name="events", scopes=["events"], compute=customers_page)


def get_visible_event(customer: User, pk) -> Event:
    event = visible_events(customer, timezone.now()).select_related("business").filter(pk=pk).first()
    if event is None:
        raise NotFound(NOT_FOUND)
    return event


def ticket(customer: User, registration: Registration) -> Registration:
    """The registration as the ticket list shows it (with its waitlist position)."""
    return customer_tickets(customer, now=timezone.now(), include_past=True).get(pk=registration.pk)


class EventDetailView(generics.RetrieveAPIView):
    serializer_class = EventSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Event.objects.none()
        return for_customer(visible_events(self.request.user, timezone.now()), self.request.user)

    def get_object(self):
        # An event the customer cannot see is not found, exactly like one that does not exist.
        try:
            return super().get_object()
        except Http404 as exc:
            raise NotFound(NOT_FOUND) from exc

    @extend_schema(
        tags=["events"],
        summary="One event, with the customer's registration and vote",
        responses={
            200: EventSerializer,
            401: error_response("Not logged in"),
            404: error_response("No event with this id that the customer can see"),
        },
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class RegisterView(APIView):
    @extend_schema(
        tags=["events"],
        summary="Register for an event: a seat (paid in bonuses if the event has a price), or the waitlist if full",
        description=(
            "201 with the new registration; 200 with the existing one when the customer is already "
            "registered or waitlisted. A cancelled registration is renewed (201)."
        ),
        request=None,
        responses={
            200: TicketSerializer,
            201: TicketSerializer,
            401: error_response("Not logged in"),
            404: error_response("No event with this id that the customer can see"),
            409: error_response(
                "registration_closed: the event is not open for registration; "
                "insufficient_bonuses: too few bonuses for the ticket"
            ),
        },
    )
    def post(self, request, pk):
        event = get_visible_event(request.user, pk)
        registration = services.register_for_event(request.user, event)
        code = status.HTTP_201_CREATED if registration.created else status.HTTP_200_OK
        return Response(TicketSerializer(ticket(request.user, registration)).data, status=code)


class CancelView(APIView):
    @extend_schema(
        tags=["events"],
        summary="Cancel the customer's registration before the start; the ticket's bonuses come back by the "
        "refund deadline",
        request=None,
        responses={
            200: CancelResultSerializer,
            401: error_response("Not logged in"),
            404: error_response("No event with this id that the customer can see, or no registration for it"),
            409: error_response("cancellation_refused: the event has started, or the customer came"),
        },
    )
    def post(self, request, pk):
        event = get_visible_event(request.user, pk)
        result = services.cancel_registration(request.user, event)
        body = {"registration": ticket(request.user, result.registration), "refunded": result.refunded}
        return Response(CancelResultSerializer(body).data)


class VoteView(APIView):
    @extend_schema(
        tags=["events"],
        summary="Vote up or down on a proposed event, or change the vote; enough up-votes publish it",
        request=VoteRequestSerializer,
        responses={
            200: VoteResultSerializer,
            400: error_response("The vote is neither up nor down"),
            401: error_response("Not logged in"),
            404: error_response("No event with this id that the customer can see"),
            409: error_response("voting_closed: the event is not a proposal open for votes"),
        },
    )
    def post(self, request, pk):
        event = get_visible_event(request.user, pk)
        body = VoteRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        result = services.process_vote(request.user, event, body.validated_data["vote"])
        return Response(VoteResultSerializer(result).data)


class TicketListView(generics.ListAPIView):
    serializer_class = TicketSerializer
    pagination_class = EventPagination

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Registration.objects.none()
        query = TicketQuerySerializer(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        include_past = query.validated_data.get("include") == "past"
        return customer_tickets(self.request.user, now=timezone.now(), include_past=include_past)

    @extend_schema(
        tags=["events"],
        summary="The customer's tickets: upcoming events first, soonest first; with include=past, then past "
        "ones, latest first",
        parameters=[TicketQuerySerializer],
        responses={
            200: TicketSerializer(many=True),
            400: error_response("Unknown include"),
            401: error_response("Not logged in"),
            404: error_response("No such page"),
        },
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)
