"""The demo's events for `seed_demo`: a finished tasting with arrivals and no-shows, a master
class going on now, upcoming events (one full with a waitlist, one co-hosted), a proposal
collecting votes, one that failed its vote, and one the partner cancelled with the tickets
refunded.

Everything goes through the Event service, so seats, payments, refunds, votes, check-ins and
attendance bonuses are real ledger entries. What happened before today happens on the demo
clock (`loyalty.demo.clock_at`): the past and the running event were announced days before
they started, filled, and opened their doors on time, and the failed proposal collected its
votes over the week before its voting closed; so every row carries its own time. Safe to run
again: an event is looked up by its host and title, and one found is left as it is."""

import random
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.utils import timezone

from accounts.models import Business, Membership, User
from events import services
from events.models import Event, Registration
from loyalty.demo import clock_at
from loyalty.services import InsufficientBonuses

SEED = 20261126
D = Decimal
# How long before it started an event of the past was announced, by what happens to it.
ANNOUNCED_BEFORE = {"past": timedelta(days=10), "now": timedelta(days=3)}
# The failed proposal: put to the vote this long ago, its voting closed a day ago.
FAILED_VOTE_OPENED = timedelta(days=6)


def _plan():
    """(host index, co-host indexes, title, category, start offset, hours, capacity, price,
    bonus, registrations, check-ins, what to do with it)"""
    day = timedelta(days=1)
    return [
        (0, [], "Дегустация зернового кофе", Event.Category.TASTING, -14 * day, 2, 20, D(0), D(50), 16, 11, "past"),
        (
            1,
            [],
            "Мастер-класс по уходу за волосами",
            Event.Category.MASTERCLASS,
            -timedelta(minutes=30),
            2,
            12,
            D(100),
            D(30),
            15,
            6,
            "now",
        ),
        (
            3,
            [0],
            "Субботняя пробежка по набережной",
            Event.Category.SPORT,
            5 * day,
            2,
            40,
            D(0),
            D(100),
            18,
            0,
            "upcoming",
        ),
        (5, [], "Винный вечер с сомелье", Event.Category.TASTING, 10 * day, 3, 10, D(300), D(0), 14, 0, "upcoming"),
        (4, [], "Ночь настольных игр", Event.Category.PARTY, 20 * day, 4, 30, D(0), D(50), 0, 0, "vote"),
        (2, [], "Лекция о здоровом сне", Event.Category.TALK, 7 * day, 1, 25, D(50), D(0), 9, 0, "cancel"),
        (4, [], "Книжный клуб для подростков", Event.Category.KIDS, 12 * day, 2, 15, D(0), D(0), 0, 0, "vote-failed"),
    ]


def _host_owner(business: Business) -> User:
    membership = Membership.objects.filter(business=business, role=Membership.Role.OWNER).select_related("user").first()
    return membership.user


def seed_events(businesses: list[Business], customers: list[User]) -> dict:
    """Make the demo events; returns counts for the summary."""
    rng = random.Random(SEED)
    now = timezone.now()
    made = 0
    for host_index, co_hosts, title, category, offset, hours, capacity, price, bonus, wanted, arrive, fate in _plan():
        if max([host_index, *co_hosts]) >= len(businesses) or not customers:
            continue
        host = businesses[host_index]
        if Event.objects.filter(business=host, title=title).exists():
            continue
        owner = _host_owner(host)
        starts = now + offset
        proposal = fate in ("vote", "vote-failed")
        voting_deadline = None
        announced = None  # today, on the real clock
        if fate in ANNOUNCED_BEFORE:
            announced = starts - ANNOUNCED_BEFORE[fate]
        elif fate == "vote-failed":
            announced, voting_deadline = now - FAILED_VOTE_OPENED, now - timedelta(days=1)
        elif proposal:
            voting_deadline = starts - timedelta(days=2)
        with _clock(announced):
            event = services.create_event(
                services.EventCreate(
                    business=host,
                    title=title,
                    description=f"{title}. Приходите с друзьями — в «Своём Круге» это всегда весело.",
                    category=category,
                    starts_at=starts,
                    ends_at=starts + timedelta(hours=hours),
                    capacity=capacity,
                    price=price,
                    attendance_bonus=bonus,
                    co_hosts=[businesses[index] for index in co_hosts],
                    propose=proposal,
                    vote_threshold=30 if proposal else None,
                    voting_deadline=voting_deadline,
                ),
                owner,
            )
        made += 1
        if proposal:
            people = rng.sample(customers, min(len(customers), 25))
            _vote(event, people[: 12 if fate == "vote-failed" else 25], rng, opened=announced)
            continue
        _register(event, rng.sample(customers, len(customers)), wanted, opened=announced)
        if fate == "cancel":
            services.cancel_event(event, by=owner)
        elif fate in ("past", "now"):
            _open_doors(event, owner, arrivals=arrive, finished=fate == "past")
    return {
        "events": Event.objects.count(),
        "registrations": Registration.objects.exclude(status=Registration.Status.CANCELLED).count(),
        "checked_in": Registration.objects.filter(status=Registration.Status.CHECKED_IN).count(),
        "votes": sum(event.votes.count() for event in Event.objects.filter(vote_threshold__isnull=False)),
    }


def _clock(moment: datetime | None) -> AbstractContextManager:
    """The demo clock at `moment`, or the real one for what happens today."""
    return clock_at(moment) if moment is not None else nullcontext()


def _between(opened: datetime | None, closes: datetime, n: int, count: int) -> datetime | None:
    """The n-th of `count` moments spread evenly from `opened` to `closes` (None: today)."""
    return None if opened is None else opened + (closes - opened) * (n + 1) / (count + 1)


def _register(event: Event, people: list[User], wanted: int, *, opened: datetime | None) -> None:
    """`wanted` registrations, spread over the time from the announcement to the start;
    those who cannot pay the price are passed over for the next customer."""
    taken = 0
    for person in people:
        if taken >= wanted:
            break
        try:
            with _clock(_between(opened, event.registration_deadline, taken, wanted)):
                services.register_for_event(person, event)
        except InsufficientBonuses:
            continue
        taken += 1


def _vote(event: Event, people: list[User], rng: random.Random, *, opened: datetime | None) -> None:
    """The votes, spread over the voting when it was in the past, which then closes short
    of its threshold."""
    for n, person in enumerate(people):
        with _clock(_between(opened, event.voting_deadline, n, len(people))):
            services.process_vote(person, event, "up" if rng.random() < 0.75 else "down")
    if opened is not None:
        with clock_at(event.voting_deadline + timedelta(minutes=5)):  # the task runs every five minutes
            services.close_votes()


def _open_doors(event: Event, owner: User, *, arrivals: int, finished: bool) -> None:
    """The first `arrivals` to register come in one by one after the start; for a past event
    the hourly task then finishes it and, a day later, marks the absentees."""
    seated = event.registrations.filter(status=Registration.Status.REGISTERED).order_by("registered_at", "id")
    for n, registration in enumerate(list(seated)[:arrivals]):
        with clock_at(event.starts_at + timedelta(minutes=2 + n)):
            services.check_in_participant(registration.pk, event=event, by=owner)
    if finished:
        with clock_at(event.ends_at + timedelta(minutes=30)):
            services.finish_events()
        with clock_at(event.ends_at + timedelta(hours=settings.EVENTS_NO_SHOW_AFTER_HOURS, minutes=30)):
            services.finish_events()
