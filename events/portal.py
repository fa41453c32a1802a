"""The partner portal's Events section: the events the business hosts or co-hosts, a new
event (published at once or put to the community's vote), an event's terms, seats, votes,
registrations and waitlist (also as CSV), its changes, publication and cancellation, and the
door where tickets are checked in.

Every event is looked up among those the business hosts or co-hosts, so anyone else's event
is 404. Everyone at the business (cashiers too) sees the events and checks tickets in at the
door; owners and managers make events and export the lists; only the HOST's owners and
managers change, publish or cancel an event: a co-host's staff get the "not allowed" page
(403) there, and the buttons are not shown to them. The services own every write; times are
entered and shown in the business's time zone (`portal_view` activates it).
"""

from datetime import datetime

from django import forms
from django.contrib import messages
from django.db.models import Count, Q
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import formats, timezone
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.models import Business
from accounts.phones import mask_phone
from accounts.portal import MANAGING_ROLES, PortalForm, paginate, portal_view
from analytics.portal import FORMULA_STARTS, csv_response
from events import services
from events.models import Event, Registration
from loyalty.portal.common import MONEY_FIELD
from svoykrug.exceptions import DomainError

Status = Event.Status
RegStatus = Registration.Status

STATUS_BADGES = {
    Status.PROPOSED: "partially_refunded",
    Status.PUBLISHED: "completed",
    Status.CANCELLED: "refunded",
    Status.FINISHED: "",
}
REGISTRATION_BADGES = {
    RegStatus.REGISTERED: "active",
    RegStatus.CHECKED_IN: "completed",
    RegStatus.WAITLISTED: "partially_refunded",
    RegStatus.CANCELLED: "refunded",
    RegStatus.NO_SHOW: "",
}
# The list shows at most this many past and cancelled events each, the latest first.
PAST_LIMIT = 50


def _posted(request):
    return request.POST if request.method == "POST" else None


def _events_of(business: Business):
    """The events the business hosts or co-hosts (a subquery: no join that repeats rows)."""
    co_hosted = Event.co_hosts.through.objects.filter(business=business).values("event_id")
    return Event.objects.filter(Q(business=business) | Q(pk__in=co_hosted)).select_related("business")


def _event_or_404(request, event_id) -> Event:
    return get_object_or_404(_events_of(request.business), pk=event_id)


def _may_manage(request, event: Event) -> bool:
    """Changes, publication and cancellation: the host's owners and managers only."""
    return event.business_id == request.business.pk and request.can_manage


def _not_allowed(request, event: Event):
    return render(request, "portal/events/forbidden.html", {"event": event}, status=403)


def _changeable(event: Event) -> bool:
    return event.status in (Status.PROPOSED, Status.PUBLISHED) and event.ends_at > timezone.now()


def _decorate(event: Event, business: Business) -> Event:
    event.badge = STATUS_BADGES.get(event.status, "")
    event.is_host = event.business_id == business.pk
    if event.vote_threshold is not None:
        event.votes_up_down = services.vote_counts(event.pk)
    return event


def _customer_phone(user) -> str:
    return mask_phone(user.phone)


# --- The list ----------------------------------------------------------------------------------


def _with_counts(events):
    return events.annotate(
        waitlist_count=Count("registrations", filter=Q(registrations__status=RegStatus.WAITLISTED)),
        arrived_count=Count("registrations", filter=Q(registrations__status=RegStatus.CHECKED_IN)),
    )


@never_cache
@require_GET
@portal_view()
def event_list(request):
    """The events the business hosts or co-hosts: proposals, upcoming (and running), past,
    cancelled; each with its seats, waitlist and arrivals (one query a group)."""
    events = _with_counts(_events_of(request.business))
    now = timezone.now()
    over = Q(status=Status.FINISHED) | Q(status=Status.PUBLISHED, ends_at__lte=now)
    latest = ("-starts_at", "-id")
    groups = [
        ("proposed", _("Proposed, open for votes"), events.filter(status=Status.PROPOSED), False),
        ("upcoming", _("Upcoming"), events.filter(status=Status.PUBLISHED, ends_at__gt=now), False),
        ("past", _("Past"), events.filter(over).order_by(*latest)[:PAST_LIMIT], True),
        ("cancelled", _("Cancelled"), events.filter(status=Status.CANCELLED).order_by(*latest)[:PAST_LIMIT], True),
    ]
    shown = []
    for key, label, members, limited in groups:
        members = [_decorate(event, request.business) for event in members]
        shown.append({"key": key, "label": label, "events": members, "cut": limited and len(members) == PAST_LIMIT})
    context = {"groups": shown, "has_events": any(group["events"] for group in shown), "past_limit": PAST_LIMIT}
    return render(request, "portal/events/list.html", context)


# --- The form ----------------------------------------------------------------------------------


class LocalDateTimeField(forms.DateTimeField):
    """A date and time on the business's clock (the browser's `datetime-local` input); the
    value is aware, in the active time zone."""

    widget = forms.DateTimeInput(attrs={"type": "datetime-local", "step": 60}, format="%Y-%m-%dT%H:%M")


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


class EventForm(PortalForm):
    title = forms.CharField(label=_("Title"), max_length=150)
    description = forms.CharField(label=_("Description"), required=False, widget=forms.Textarea(attrs={"rows": 4}))
    category = forms.ChoiceField(label=_("Category"), choices=Event.Category.choices, initial=Event.Category.OTHER)
    starts_at = LocalDateTimeField(label=_("Starts at"))
    ends_at = LocalDateTimeField(label=_("Ends at"))
    place = forms.CharField(label=_("Place"), max_length=300, required=False, help_text=_("Empty: at your address."))
    latitude = forms.DecimalField(
        label=_("Latitude"), required=False, max_digits=9, decimal_places=6, help_text=_("Optional, for the map.")
    )
    longitude = forms.DecimalField(label=_("Longitude"), required=False, max_digits=9, decimal_places=6)
    capacity = forms.IntegerField(label=_("Seats"), min_value=1)
    registration_deadline = LocalDateTimeField(
        label=_("Registration closes at"), required=False, help_text=_("Empty: registration runs to the start.")
    )
    price = forms.DecimalField(
        label=_("Price in bonuses"),
        min_value=0,
        initial=0,
        help_text=_("0: free. Taken from the customer's bonuses at registration, returned if the event is cancelled."),
        **MONEY_FIELD,
    )
    attendance_bonus = forms.DecimalField(
        label=_("Bonus for coming"),
        min_value=0,
        initial=0,
        help_text=_("Given to each customer checked in at the door. 0: none."),
        **MONEY_FIELD,
    )
    co_hosts = forms.ModelMultipleChoiceField(
        label=_("Co-hosts"),
        queryset=Business.objects.none(),
        required=False,
        widget=forms.SelectMultiple(attrs={"size": 6}),
        help_text=_("Partners who host it with you: their staff see the event and check tickets in."),
    )
    propose = forms.BooleanField(
        label=_("Put it to the community's vote"),
        required=False,
        help_text=_(
            "The event is published when enough customers vote for it before voting closes, and closed otherwise."
        ),
    )
    vote_threshold = forms.IntegerField(label=_("Votes for it needed"), min_value=1, required=False)
    voting_deadline = LocalDateTimeField(label=_("Voting closes at"), required=False)

    # The service's names for the inputs at fault, where they differ from the form's (None: no field).
    SERVICE_FIELDS = {"business": None, "vote": None}

    def __init__(self, *args, business: Business, event: Event | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.business = business
        self.event = event
        if event is None:
            self.fields["co_hosts"].queryset = (
                Business.objects.filter(is_active=True).exclude(pk=business.pk).order_by("name")
            )
            return
        # A change: co-hosts and the vote are fixed when the event is made.
        del self.fields["co_hosts"], self.fields["propose"]
        if event.status != Status.PROPOSED:
            del self.fields["vote_threshold"], self.fields["voting_deadline"]
        if event.starts_at <= timezone.now():  # running: only its end and description can change
            for name, field in self.fields.items():
                if name not in ("ends_at", "description"):
                    field.disabled = True

    @classmethod
    def initial_for(cls, event: Event) -> dict:
        initial = {name: getattr(event, name) for name in services.CHANGEABLE}
        if event.registration_deadline == event.starts_at:
            initial["registration_deadline"] = None  # "to the start": it follows a moved start
        return initial

    def event_create(self) -> services.EventCreate:
        data = self.cleaned_data
        return services.EventCreate(
            business=self.business,
            title=data["title"],
            description=data["description"],
            category=data["category"],
            starts_at=data["starts_at"],
            ends_at=data["ends_at"],
            place=data["place"],
            latitude=data["latitude"],
            longitude=data["longitude"],
            capacity=data["capacity"],
            registration_deadline=data["registration_deadline"],
            price=data["price"],
            attendance_bonus=data["attendance_bonus"],
            co_hosts=list(data["co_hosts"]),
            propose=data["propose"],
            vote_threshold=data["vote_threshold"],
            voting_deadline=data["voting_deadline"],
        )

    def changes(self) -> dict:
        """What the form changes of the event: only the fields whose value differs (a time is
        shown to the minute, so one that differs only in its seconds is unchanged)."""
        event, data = self.event, self.cleaned_data
        values = {name: data[name] for name in services.CHANGEABLE if name in self.fields}
        if "registration_deadline" in values and values["registration_deadline"] is None:
            values["registration_deadline"] = values.get("starts_at") or event.starts_at
        changes = {}
        for name, value in values.items():
            old = getattr(event, name)
            if isinstance(old, datetime) and isinstance(value, datetime) and _minute(value) == _minute(old):
                continue  # the form shows times to the minute (a disabled field: to the second)
            if value != old:
                changes[name] = value
        return changes

    def add_event_error(self, exc: services.InvalidEvent) -> None:
        self.add_service_error(exc.message, exc.fields)


# --- A new event and its changes -------------------------------------------------------------


@never_cache
@require_http_methods(["GET", "POST"])
@portal_view(roles=MANAGING_ROLES)
def event_new(request):
    """A new event of the business: published at once, or put to the community's vote."""
    form = EventForm(_posted(request), business=request.business)
    if request.method == "POST" and form.is_valid():
        try:
            event = services.create_event(form.event_create(), request.user)
        except services.NotAllowed:
            return _not_allowed(request, None)
        except services.InvalidEvent as exc:
            form.add_event_error(exc)
        else:
            if event.status == Status.PROPOSED:
                messages.success(request, gettext("The event is proposed: customers vote for it in the app."))
            else:
                messages.success(request, gettext("The event is published: customers can register in the app."))
            return redirect("portal:event", event_id=event.pk)
    status = 400 if request.method == "POST" else 200
    return render(request, "portal/events/form.html", {"form": form, "event": None}, status=status)


@never_cache
@require_http_methods(["GET", "POST"])
@portal_view(roles=MANAGING_ROLES)
def event_edit(request, event_id):
    """Change an upcoming event's terms (the host's owners and managers): only what changed
    goes to the service, which tells registered customers of a new time or place and gives
    new seats to the waitlist."""
    event = _event_or_404(request, event_id)
    if not _may_manage(request, event):
        return _not_allowed(request, event)
    if not _changeable(event):
        messages.info(request, gettext("Only an upcoming event can be changed."))
        return redirect("portal:event", event_id=event.pk)
    form = EventForm(_posted(request), initial=EventForm.initial_for(event), business=request.business, event=event)
    if request.method == "POST" and form.is_valid():
        changes = form.changes()
        if not changes:
            messages.info(request, gettext("Nothing was changed."))
            return redirect("portal:event", event_id=event.pk)
        seated = event.registered_count
        try:
            event = services.update_event(event, changes, by=request.user)
        except services.NotAllowed:
            return _not_allowed(request, event)
        except services.EventNotChangeable as exc:
            messages.error(request, exc.message)
            return redirect("portal:event", event_id=event.pk)
        except services.InvalidEvent as exc:
            form.add_event_error(exc)
        else:
            messages.success(request, gettext("The event is changed."))
            promoted = event.registered_count - seated
            if promoted > 0:
                messages.info(
                    request,
                    ngettext(
                        "%(count)d customer from the waitlist got a seat.",
                        "%(count)d customers from the waitlist got seats.",
                        promoted,
                    )
                    % {"count": promoted},
                )
            return redirect("portal:event", event_id=event.pk)
    status = 400 if request.method == "POST" else 200
    return render(request, "portal/events/form.html", {"form": form, "event": event}, status=status)


def _host_change(request, event_id, change, done: str):
    """Run a host's change (`services.publish_event`, `services.cancel_event`) on the event and
    come back to its page with what happened."""
    event = _event_or_404(request, event_id)
    if not _may_manage(request, event):
        return _not_allowed(request, event)
    try:
        change(event, by=request.user)
    except services.NotAllowed:
        return _not_allowed(request, event)
    except DomainError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, done)
    return redirect("portal:event", event_id=event.pk)


@require_POST
@portal_view(roles=MANAGING_ROLES)
def event_publish(request, event_id):
    """Publish a proposal without waiting for the votes."""
    done = gettext("The event is published: customers can register; those who voted are told.")
    return _host_change(request, event_id, services.publish_event, done)


@require_POST
@portal_view(roles=MANAGING_ROLES)
def event_cancel(request, event_id):
    """Call the event off: every seat and waitlist place is cancelled, tickets' bonuses are
    returned in full and every customer is told."""
    done = gettext("The event is cancelled: every registered customer gets the ticket's bonuses back and is told.")
    return _host_change(request, event_id, services.cancel_event, done)


# --- An event ----------------------------------------------------------------------------------


def _registrations(event: Event):
    """Seats and what became of them (the waitlist apart), in the order customers came."""
    return (
        event.registrations.exclude(status=RegStatus.WAITLISTED)
        .select_related("customer", "checked_in_by")
        .order_by("registered_at", "id")
    )


def _waitlist(event: Event):
    return (
        event.registrations.filter(status=RegStatus.WAITLISTED)
        .select_related("customer")
        .order_by("waitlisted_at", "id")
    )


@never_cache
@require_GET
@portal_view()
def event_detail(request, event_id):
    """An event of the business (hosted or co-hosted): terms, seats, votes, registrations
    and the waitlist in its order; the host's owners and managers change it from here."""
    event = _decorate(_event_or_404(request, event_id), request.business)
    page = paginate(request, _registrations(event))
    for registration in page:
        registration.phone = _customer_phone(registration.customer)
        registration.badge = REGISTRATION_BADGES.get(registration.status, "")
    waitlist = list(_waitlist(event))
    for registration in waitlist:
        registration.phone = _customer_phone(registration.customer)
    may_manage = _may_manage(request, event)
    context = {
        "event": event,
        "co_hosts": list(event.co_hosts.order_by("name")),
        "page": page,
        "waitlist": waitlist,
        "arrived": services.arrivals(event),
        "door_opens_at": services.door_opens_at(event),
        "may_manage": may_manage,
        "may_change": may_manage and _changeable(event),
        "may_publish": may_manage and event.status == Status.PROPOSED,
        "may_cancel": may_manage and _changeable(event),
        "held": event.registered_count + len(waitlist),
    }
    return render(request, "portal/events/detail.html", context)


def _cell(value) -> str:
    """A text cell a spreadsheet will not run as a formula (a phone "+7…", a name "=…")."""
    text = "" if value is None else str(value)
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def _when(moment: datetime | None) -> str:
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M") if moment else ""


CSV_HEADER = [
    "list",
    "position",
    "phone",
    "name",
    "status",
    "status_name",
    "registered_at",
    "waitlisted_at",
    "paid",
    "refunded",
    "checked_in_at",
    "checked_in_by",
]


@require_GET
@portal_view(roles=MANAGING_ROLES)
def event_csv(request, event_id):
    """The registrations, then the waitlist in its order, as CSV (phones masked, times on
    the business's clock, bonuses as plain decimals)."""
    event = _event_or_404(request, event_id)
    rows = []
    for registration in _registrations(event):
        by = registration.checked_in_by
        rows.append(
            [
                "registration",
                "",
                _cell(_customer_phone(registration.customer)),
                _cell(registration.customer.full_name),
                registration.status,
                _cell(registration.get_status_display()),
                _when(registration.registered_at),
                "",
                str(registration.paid_amount),
                str(registration.refunded_amount),
                _when(registration.checked_in_at),
                _cell(by.get_full_name() if by else ""),
            ]
        )
    for position, registration in enumerate(_waitlist(event), start=1):
        rows.append(
            [
                "waitlist",
                str(position),
                _cell(_customer_phone(registration.customer)),
                _cell(registration.customer.full_name),
                registration.status,
                _cell(registration.get_status_display()),
                _when(registration.registered_at),
                _when(registration.waitlisted_at),
                str(registration.paid_amount),
                str(registration.refunded_amount),
                "",
                "",
            ]
        )
    return csv_response(f"event-{event.pk}-registrations.csv", CSV_HEADER, rows)


# --- The door ----------------------------------------------------------------------------------


class CheckInForm(PortalForm):
    code = forms.CharField(
        label=_("Ticket code"),
        max_length=200,
        error_messages={"required": _("Scan the ticket's QR code or type its code.")},
        widget=forms.TextInput(
            attrs={
                "autofocus": True,
                "autocomplete": "off",
                "autocapitalize": "characters",
                "autocorrect": "off",
                "spellcheck": "false",
                "enterkeyhint": "go",
                "class": "door-input",
            }
        ),
    )


def _door_answer(request, event: Event, code: str) -> dict:
    """What the door says to a ticket: ok (checked in now), already (before), refused."""
    try:
        result = services.check_in_by_code(code, event=event, by=request.user)
    except DomainError as exc:  # CheckInRefused, or the ledger refusing the attendance bonus
        return {"kind": "refused", "message": exc.message}
    registration = result.registration
    customer = registration.customer
    answer = {"name": customer.full_name, "phone": _customer_phone(customer)}
    if result.checked_in_now:
        bonus = registration.event.attendance_bonus
        return answer | {"kind": "ok", "bonus": bonus if bonus > 0 else None}
    local = timezone.localtime(registration.checked_in_at)
    shape = "H:i" if local.date() == timezone.localdate() else "d.m H:i"
    by = registration.checked_in_by
    return answer | {
        "kind": "already",
        "at": formats.date_format(local, shape),
        "by": by.get_full_name() if by else "",
    }


@never_cache
@require_http_methods(["GET", "POST"])
@portal_view()
def event_checkin(request, event_id):
    """The door: one input for a ticket code, typed or scanned (a scanner types it and presses
    Enter). The answer is the page itself, status 200 whatever it says: it is read by the
    person at the door, not by a program, and the input is empty and focused for the next."""
    event = _event_or_404(request, event_id)
    form = CheckInForm(_posted(request))
    answer = None
    status = 200
    if request.method == "POST":
        if form.is_valid():
            answer = _door_answer(request, event, form.cleaned_data["code"])
            form = CheckInForm()
        else:
            status = 400
    context = {
        "event": _decorate(event, request.business),
        "form": form,
        "answer": answer,
        "arrived": services.arrivals(event),
        "door_opens_at": services.door_opens_at(event),
    }
    return render(request, "portal/events/checkin.html", context, status=status)
