"""The events app in Django admin: staff see every event, registration and vote.

Seats, payments, refunds, check-ins and votes are written by the Event service under its
locks, so registrations and votes are read-only here and an event's counters cannot be
edited. Staff may correct an event's description and co-hosts directly; anything that touches
seats or money goes through the actions, which call the service: publish a proposal, cancel
events (every ticket refunded)."""

from django.contrib import admin, messages
from django.db.models import Count, Q
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from events import services
from events.models import Event, Registration, Vote, normalize_ticket
from svoykrug.admin import ReadOnlyAdminMixin

RegStatus = Registration.Status


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = [
        "title",
        "business",
        "category",
        "status",
        "starts_at",
        "capacity",
        "registered_count",
        "waitlisted",
        "arrived",
        "price",
        "attendance_bonus",
    ]
    list_filter = ["status", "category", ("business", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["title", "business__name", "place"]
    search_help_text = _("Title, partner or place.")
    list_select_related = ["business"]
    date_hierarchy = "starts_at"
    filter_horizontal = ["co_hosts"]
    # Staff may correct the description and the co-hosts in place; the rest changes only through
    # the service (the portal's edit tells registered customers of a new time or place).
    readonly_fields = [
        "place",
        "business",
        "title",
        "category",
        "status",
        "close_reason",
        "starts_at",
        "ends_at",
        "registration_deadline",
        "latitude",
        "longitude",
        "capacity",
        "registered_count",
        "price",
        "attendance_bonus",
        "vote_threshold",
        "voting_deadline",
        "published_at",
        "cancelled_at",
        "created_by",
        "created_at",
        "updated_at",
    ]
    fieldsets = [
        (None, {"fields": ["business", "co_hosts", "title", "category", "description", "status", "close_reason"]}),
        (_("When and where"), {"fields": ["starts_at", "ends_at", "place", "latitude", "longitude"]}),
        (
            _("Seats and money"),
            {"fields": ["capacity", "registered_count", "registration_deadline", "price", "attendance_bonus"]},
        ),
        (_("Community vote"), {"fields": ["vote_threshold", "voting_deadline"]}),
        (_("History"), {"fields": ["published_at", "cancelled_at", "created_by", "created_at", "updated_at"]}),
    ]
    actions = ["publish_selected", "cancel_selected"]

    def has_add_permission(self, request):
        # Events are made by partners in the portal (or `services.create_event`), validated there.
        return False

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                waitlisted_total=Count("registrations", filter=Q(registrations__status=RegStatus.WAITLISTED)),
                arrived_total=Count("registrations", filter=Q(registrations__status=RegStatus.CHECKED_IN)),
            )
        )

    @admin.display(description=_("waitlist"), ordering="waitlisted_total")
    def waitlisted(self, event):
        return event.waitlisted_total

    @admin.display(description=_("arrived"), ordering="arrived_total")
    def arrived(self, event):
        return event.arrived_total

    @admin.action(description=_("Publish the selected proposals"))
    def publish_selected(self, request, queryset):
        done = self._apply(request, queryset, services.publish_event)
        if done:
            message = ngettext("%(count)d event published.", "%(count)d events published.", done)
            self.message_user(request, message % {"count": done})

    @admin.action(description=_("Cancel the selected events (tickets refunded, customers told)"))
    def cancel_selected(self, request, queryset):
        done = self._apply(request, queryset, services.cancel_event)
        if done:
            message = ngettext("%(count)d event cancelled.", "%(count)d events cancelled.", done)
            self.message_user(request, message % {"count": done})

    def _apply(self, request, queryset, change) -> int:
        """Run a service change on each event; a refusal is reported for that event only."""
        done = 0
        for event in queryset:
            try:
                change(event, by=request.user)
            except services.EventNotChangeable as exc:
                self.message_user(request, f"{event}: {exc.message}", messages.WARNING)
            else:
                done += 1
        return done


@admin.register(Registration)
class RegistrationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "event",
        "customer",
        "status",
        "registered_at",
        "waitlisted_at",
        "paid_amount",
        "refunded_amount",
        "checked_in_at",
        "checked_in_by",
    ]
    list_filter = ["status", "cancelled_by", ("event__business", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["event__title", "customer__phone", "customer__last_name", "ticket_code"]
    search_help_text = _("Event title, the customer's phone or surname, or a ticket code as scanned.")
    list_select_related = ["event", "customer", "checked_in_by"]
    date_hierarchy = "registered_at"

    def get_search_results(self, request, queryset, search_term):
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        if code := normalize_ticket(search_term):
            results = results | queryset.filter(ticket_code=code)
        return results, may_have_duplicates


@admin.register(Vote)
class VoteAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["event", "customer", "vote", "created_at", "updated_at"]
    list_filter = ["vote", ("event", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["event__title", "customer__phone"]
    list_select_related = ["event", "customer"]
