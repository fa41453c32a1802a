"""The demo circle's events: past, running now, upcoming, proposed and cancelled, with
registrations, votes and check-ins, all through the service."""

import pytest
from django.core.management import call_command
from django.utils import timezone

from events.models import Event, Registration
from loyalty.models import LedgerEntry
from loyalty.selectors import ledger_mismatches
from tests.loyalty.test_demo import SMALL

pytestmark = pytest.mark.django_db


def test_seed_demo_makes_events_in_every_state(settings, tiers):
    settings.DEBUG = True
    call_command("seed_demo", **SMALL)
    now = timezone.now()
    events = list(Event.objects.all())

    statuses = {event.status for event in events}
    assert statuses == set(Event.Status.values)
    assert any(event.starts_at <= now < event.ends_at for event in events), "one event is on now"
    assert any(event.close_reason == Event.CloseReason.BY_PARTNER for event in events)
    assert any(event.close_reason == Event.CloseReason.NOT_ENOUGH_VOTES for event in events)
    proposed = Event.objects.get(status=Event.Status.PROPOSED)
    assert proposed.votes.exists()
    registrations = Registration.objects.values_list("status", flat=True)
    assert {"registered", "checked_in", "no_show", "cancelled"} <= set(registrations)
    # Check-ins paid attendance bonuses and tickets were paid through the ledger; the books balance.
    arrived = Registration.objects.filter(status="checked_in").count()
    bonuses = LedgerEntry.objects.filter(kind="adjustment", idempotency_key__contains=":attended:")
    assert bonuses.count() == arrived
    assert LedgerEntry.objects.filter(kind="redemption", idempotency_key__startswith="redeem:event:").exists()
    assert ledger_mismatches() == []
    # Each at its own time: registered before the start, in at the door, the bonus paid then.
    for registration in Registration.objects.filter(status="checked_in").select_related("event"):
        event = registration.event
        assert event.created_at < registration.registered_at < event.starts_at
        assert event.starts_at < registration.checked_in_at < min(event.ends_at, now)
        bonus = bonuses.get(idempotency_key=f"event:{event.pk}:attended:{registration.pk}")
        assert bonus.created_at == registration.checked_in_at

    counts = (Event.objects.count(), Registration.objects.count())
    call_command("seed_demo", **SMALL)
    assert (Event.objects.count(), Registration.objects.count()) == counts
