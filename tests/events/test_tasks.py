"""The Event service's periodic work, through its Celery tasks (run eagerly here): reminders 24
and 2 hours ahead, proposals closed when their vote fails, events finished and absentees marked.

What customers hear is read where the notification service decides it: `notify`, reached
through `notify_after_commit` → the `notify_pending` task, once the transaction commits."""

from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.utils import timezone

from events import services, tasks
from events.models import Event, Registration
from notifications.models import Device, NotificationLog
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

RegStatus = Registration.Status


@pytest.fixture
def heard(monkeypatch):
    """Every message the notification service is asked to send: (user id, kind, event key,
    context). The real `notify` still runs after recording."""
    from notifications import services as notifications

    calls, original = [], notifications.notify

    def spy(user, kind, context, *, event_key):
        calls.append((user.pk, kind, event_key, context))
        return original(user, kind, context, event_key=event_key)

    monkeypatch.setattr(notifications, "notify", spy)
    return calls


@pytest.fixture
def run(django_capture_on_commit_callbacks):
    """run(task) → its result, with the messages it queued sent on (the task's) commit."""

    def go(task):
        with django_capture_on_commit_callbacks(execute=True):
            return task.delay().get()

    return go


def reminders(calls, hours=None) -> list[int]:
    return sorted(
        user_id
        for user_id, kind, _key, context in calls
        if kind == "event_reminder" and (hours is None or context["hours"] == str(hours))
    )


def fresh(instance):
    instance.refresh_from_db()
    return instance


# --- Reminders ---------------------------------------------------------------------------------


def test_the_24_hour_reminder_goes_once_to_those_holding_a_seat(make_event, heard, run):
    event = make_event(capacity=3)
    seated, also_seated, waiting, gone = (UserFactory() for _ in range(4))
    tickets = {c: services.register_for_event(c, event).ticket_code for c in (seated, gone, also_seated, waiting)}
    services.cancel_registration(gone, event)  # `waiting` is promoted to the freed seat
    queued = services.register_for_event(UserFactory(), event)
    assert queued.status == RegStatus.WAITLISTED
    moment = event.starts_at - timedelta(hours=24)

    with time_machine.travel(moment - timedelta(minutes=1), tick=False):
        assert run(tasks.send_reminders) == 0
    with time_machine.travel(moment, tick=False):
        assert run(tasks.send_reminders) == 3
    with time_machine.travel(moment + timedelta(minutes=10), tick=False):
        assert run(tasks.send_reminders) == 0

    assert reminders(heard) == reminders(heard, 24) == sorted([seated.pk, also_seated.pk, waiting.pk])
    event = fresh(event)
    assert event.reminder_24h_sent_at == moment
    assert event.reminder_2h_sent_at is None
    (context,) = [c for user_id, kind, _k, c in heard if user_id == seated.pk and kind == "event_reminder"]
    assert (context["event_title"], context["place"], context["ticket_code"]) == (
        "Tasting",
        "ул. Ленина, 1",
        tickets[seated],
    )


def test_the_2_hour_reminder_follows_and_skips_those_who_registered_after_its_moment(make_event, heard, run):
    event = make_event()
    early, before_2h, after_2h = UserFactory(), UserFactory(), UserFactory()
    services.register_for_event(early, event)
    with time_machine.travel(event.starts_at - timedelta(hours=24), tick=False):
        run(tasks.send_reminders)
    with time_machine.travel(event.starts_at - timedelta(hours=5), tick=False):
        services.register_for_event(before_2h, event)  # after the 24-hour moment: a confirmation instead
    run_at = event.starts_at - timedelta(hours=1, minutes=55)
    with time_machine.travel(run_at, tick=False):
        services.register_for_event(after_2h, event)
        assert run(tasks.send_reminders) == 2
        assert run(tasks.send_reminders) == 0

    assert reminders(heard, 24) == [early.pk]
    assert reminders(heard, 2) == sorted([early.pk, before_2h.pk])
    assert after_2h.pk not in reminders(heard)
    assert fresh(event).reminder_2h_sent_at == run_at
    keys = [key for user_id, kind, key, _c in heard if user_id == early.pk and kind == "event_reminder"]
    assert len(set(keys)) == 2  # two reminders, two event keys: neither is taken for a repeat of the other


def test_a_24_hour_reminder_that_comes_due_within_2_hours_of_the_start_is_skipped(make_event, heard, run):
    """The reminders ran late (the scheduler was down): one reminder, the 2-hour one, not both at once."""
    event = make_event()
    customer = UserFactory()
    services.register_for_event(customer, event)

    with time_machine.travel(event.starts_at - timedelta(hours=1, minutes=50), tick=False):
        assert run(tasks.send_reminders) == 1
        assert run(tasks.send_reminders) == 0

    assert reminders(heard) == reminders(heard, 2) == [customer.pk]
    event = fresh(event)
    assert event.reminder_24h_sent_at is not None  # redundant: marked, never sent
    assert event.reminder_2h_sent_at is not None


def test_a_short_notice_event_sends_no_redundant_reminders(make_event, heard, run):
    event = make_event(starts_at=timezone.now() + timedelta(minutes=90))
    customer = UserFactory()
    services.register_for_event(customer, event)  # after both moments: the confirmation says it all

    assert run(tasks.send_reminders) == 0
    assert run(tasks.send_reminders) == 0

    assert reminders(heard) == []
    event = fresh(event)
    assert event.reminder_24h_sent_at is not None
    assert event.reminder_2h_sent_at is not None


def test_customers_of_an_event_made_a_few_hours_ahead_had_their_confirmation_instead(make_event, heard, run):
    event = make_event(starts_at=timezone.now() + timedelta(hours=5))
    customer = UserFactory()
    services.register_for_event(customer, event)

    assert run(tasks.send_reminders) == 0  # the 24-hour moment was before they registered
    with time_machine.travel(event.starts_at - timedelta(hours=2), tick=False):
        assert run(tasks.send_reminders) == 1

    assert reminders(heard, 24) == []
    assert reminders(heard, 2) == [customer.pk]
    assert fresh(event).reminder_24h_sent_at is not None


def test_no_reminders_for_cancelled_or_proposed_events(make_event, manager, heard, run):
    cancelled = make_event()
    services.register_for_event(UserFactory(), cancelled)
    services.cancel_event(cancelled, by=manager)
    make_event(propose=True, vote_threshold=5, voting_deadline=timezone.now() + timedelta(days=1))

    with time_machine.travel(cancelled.starts_at - timedelta(hours=1), tick=False):
        assert run(tasks.send_reminders) == 0

    assert reminders(heard) == []
    assert fresh(cancelled).reminder_24h_sent_at is None


def test_a_moved_event_is_reminded_of_again_before_its_new_start(make_event, manager, heard, run):
    """The reminders belong to a start time: an event moved after its 24-hour reminder went out
    is reminded of again 24 hours before the new start, under a new event key (the notification
    service would take a reused key for a repeat and send nothing)."""
    event = make_event()
    customer = UserFactory()
    services.register_for_event(customer, event)
    with time_machine.travel(event.starts_at - timedelta(hours=24), tick=False):
        assert run(tasks.send_reminders) == 1
        later = event.starts_at + timedelta(days=2)
        services.update_event(event, {"starts_at": later, "ends_at": later + timedelta(hours=2)}, by=manager)

    with time_machine.travel(later - timedelta(hours=24), tick=False):
        assert run(tasks.send_reminders) == 1

    keys = [key for user_id, kind, key, _c in heard if user_id == customer.pk and kind == "event_reminder"]
    assert len(keys) == 2 and len(set(keys)) == 2, keys


def test_reminders_are_logged_for_customers_with_the_app(make_event, run, django_capture_on_commit_callbacks, caplog):
    """The whole way down: a NotificationLog row per message and device, no error on the way."""
    event = make_event()
    customer = UserFactory(email="")
    Device.objects.create(user=customer, token="tok-1", platform="android", last_seen_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        services.register_for_event(customer, event)

    with time_machine.travel(event.starts_at - timedelta(hours=24), tick=False):
        run(tasks.send_reminders)
        run(tasks.send_reminders)

    rows = NotificationLog.objects.filter(user=customer).order_by("id").values_list("kind", "channel", "recipient")
    rows = list(rows)
    assert rows == [("event_registered", "push", "tok-1"), ("event_reminder", "push", "tok-1")]
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []


# --- close_votes -------------------------------------------------------------------------------


def test_a_proposal_short_of_votes_is_closed_at_its_deadline(make_event, run):
    deadline = timezone.now() + timedelta(days=1)
    short = make_event(propose=True, vote_threshold=2, voting_deadline=deadline)
    later = make_event(propose=True, vote_threshold=2, voting_deadline=deadline + timedelta(hours=1))
    reached = make_event(propose=True, vote_threshold=1, voting_deadline=deadline)
    services.process_vote(UserFactory(), short, "up")
    services.process_vote(UserFactory(), reached, "up")  # published as the vote came in

    with time_machine.travel(deadline - timedelta(seconds=1), tick=False):
        assert run(tasks.close_votes) == 0
    with time_machine.travel(deadline, tick=False):
        assert run(tasks.close_votes) == 1
        assert run(tasks.close_votes) == 0

    short = fresh(short)
    assert (short.status, short.close_reason, short.cancelled_at) == (
        Event.Status.CANCELLED,
        Event.CloseReason.NOT_ENOUGH_VOTES,
        deadline,
    )
    assert fresh(later).status == Event.Status.PROPOSED
    assert fresh(reached).status == Event.Status.PUBLISHED
    with pytest.raises(services.RegistrationClosed):
        services.register_for_event(UserFactory(), short)


@pytest.mark.parametrize("lowered", ["by the host", "behind the service's back"])
def test_a_proposal_whose_lowered_threshold_is_already_met_is_not_closed_for_want_of_votes(
    make_event, manager, heard, run, django_capture_on_commit_callbacks, lowered
):
    """The threshold is lowered to the up-votes already cast: the event has the votes it needs
    and must not be closed as "not enough votes" at the deadline. The host's change publishes
    it at once; a threshold changed any other way (the admin) is caught by close_votes."""
    deadline = timezone.now() + timedelta(days=1)
    event = make_event(propose=True, vote_threshold=5, voting_deadline=deadline)
    voters = [UserFactory(), UserFactory()]
    services.process_vote(UserFactory(), event, "down")
    for voter in voters:
        services.process_vote(voter, event, "up")

    with django_capture_on_commit_callbacks(execute=True):
        if lowered == "by the host":
            services.update_event(event, {"vote_threshold": 2}, by=manager)
        else:
            Event.objects.filter(pk=event.pk).update(vote_threshold=2)
    with time_machine.travel(deadline, tick=False):
        assert run(tasks.close_votes) == 0

    event = fresh(event)
    assert (event.status, event.close_reason) == (Event.Status.PUBLISHED, "")
    published = sorted(user_id for user_id, kind, _k, _c in heard if kind == "event_published")
    assert published == sorted(v.pk for v in voters)


# --- finish_events -----------------------------------------------------------------------------


def test_events_finish_at_their_end_and_absentees_become_no_shows_later(make_event, manager, run):
    event = make_event(capacity=2)
    came, stayed_away, queued, gone = (UserFactory() for _ in range(4))
    registrations = {c: services.register_for_event(c, event) for c in (came, stayed_away, queued, gone)}
    services.cancel_registration(gone, event)
    still_on = make_event(starts_at=event.starts_at, ends_at=event.ends_at + timedelta(hours=1))
    services.register_for_event(UserFactory(), still_on)
    called_off = services.cancel_event(make_event(starts_at=event.starts_at), by=manager)
    with time_machine.travel(event.starts_at, tick=False):
        services.check_in_participant(registrations[came].pk, event=event)

    with time_machine.travel(event.ends_at - timedelta(seconds=1), tick=False):
        assert run(tasks.finish_events) == [0, 0]
    with time_machine.travel(event.ends_at, tick=False):
        assert run(tasks.finish_events) == [1, 0]
    no_show_moment = event.ends_at + timedelta(hours=settings.EVENTS_NO_SHOW_AFTER_HOURS)
    with time_machine.travel(no_show_moment - timedelta(seconds=1), tick=False):
        assert run(tasks.finish_events) == [1, 0]  # `still_on` has ended since
        assert fresh(registrations[stayed_away]).status == RegStatus.REGISTERED
    with time_machine.travel(no_show_moment, tick=False):
        assert run(tasks.finish_events) == [0, 1]
        assert run(tasks.finish_events) == [0, 0]

    assert fresh(event).status == Event.Status.FINISHED
    assert fresh(still_on).status == Event.Status.FINISHED
    assert fresh(called_off).status == Event.Status.CANCELLED
    assert {c: fresh(r).status for c, r in registrations.items()} == {
        came: RegStatus.CHECKED_IN,
        stayed_away: RegStatus.NO_SHOW,
        queued: RegStatus.WAITLISTED,
        gone: RegStatus.CANCELLED,
    }
    assert Registration.objects.get(event=still_on).status == RegStatus.REGISTERED  # its 24 hours end an hour later


def test_finishing_keeps_the_seat_count_and_tells_nobody(make_event, heard, run):
    event = make_event()
    for _ in range(3):
        services.register_for_event(UserFactory(), event)

    with time_machine.travel(event.ends_at + timedelta(hours=settings.EVENTS_NO_SHOW_AFTER_HOURS), tick=False):
        assert run(tasks.finish_events) == [1, 3]

    assert fresh(event).registered_count == 3
    assert [kind for _u, kind, _k, _c in heard if kind != "event_registered"] == []
