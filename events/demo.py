"""The demo's events for `seed_demo`: a finished tasting with arrivals and no-shows, a master
class going on now, upcoming events (one full with a waitlist, one co-hosted), a proposal
collecting votes, one that failed its vote, and one the partner cancelled with the tickets
refunded.

Everything goes through the Event service, so seats, payments, refunds, votes, check-ins and
attendance bonuses are real ledger entries. The service only makes events in the future:
a past or running event is made ahead, filled, and then its times are moved (a demo-only
step, noted where it happens). Safe to run again: an event is looked up by its host and
title, and one found is left as it is."""

import random
from datetime import timedelta
from decimal import Decimal

from django.db.models import Q
from django.utils import timezone

from accounts.models import Business, Membership, User
from events import services
from events.models import Event, Registration
from loyalty.services import InsufficientBonuses

SEED = 20261126
D = Decimal


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
        moved = fate in ("past", "now")
        starts = now + (timedelta(days=2) if moved else offset)
        proposal = fate in ("vote", "vote-failed")
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
                voting_deadline=starts - timedelta(days=2) if proposal else None,
            ),
            owner,
        )
        made += 1
        if proposal:
            _vote(event, rng.sample(customers, min(len(customers), 25)), rng, failed=fate == "vote-failed", now=now)
            continue
        # Those who cannot pay the price are passed over for the next customer.
        taken = 0
        for person in rng.sample(customers, len(customers)):
            if taken >= wanted:
                break
            try:
                services.register_for_event(person, event)
            except InsufficientBonuses:
                continue
            taken += 1
        if fate == "cancel":
            services.cancel_event(event, by=owner)
        elif moved:
            _run(event, owner, start=now + offset, hours=hours, arrivals=arrive, finished=fate == "past")
    return {
        "events": Event.objects.count(),
        "registrations": Registration.objects.exclude(status=Registration.Status.CANCELLED).count(),
        "checked_in": Registration.objects.filter(status=Registration.Status.CHECKED_IN).count(),
        "votes": sum(event.votes.count() for event in Event.objects.filter(vote_threshold__isnull=False)),
    }


def _vote(event: Event, people: list[User], rng: random.Random, *, failed: bool, now) -> None:
    for person in people[: 12 if failed else 25]:
        services.process_vote(person, event, "up" if rng.random() < 0.75 else "down")
    if failed:
        # Demo-only: the proposal's voting is made to have closed yesterday, short of its threshold.
        Event.objects.filter(pk=event.pk).update(voting_deadline=now - timedelta(days=1))
        services.close_votes(now)


def _run(event: Event, owner: User, *, start, hours: int, arrivals: int, finished: bool) -> None:
    """Demo-only: move a filled event to its real time, let people in at the door, and for a
    past one, finish it and mark the absentees."""
    now = timezone.now()
    door = now + timedelta(minutes=10)
    Event.objects.filter(pk=event.pk).update(
        starts_at=door, registration_deadline=door, ends_at=door + timedelta(hours=hours)
    )
    event.refresh_from_db()
    seated = event.registrations.filter(status=Registration.Status.REGISTERED).order_by("registered_at", "id")
    for registration in list(seated)[:arrivals]:
        services.check_in_participant(registration.pk, event=event, by=owner)
    Event.objects.filter(pk=event.pk).update(
        starts_at=start, registration_deadline=start, ends_at=start + timedelta(hours=hours)
    )
    Registration.objects.filter(event=event).filter(Q(checked_in_at__isnull=False)).update(
        checked_in_at=start + timedelta(minutes=5)
    )
    if finished:
        services.finish_events(start + timedelta(hours=hours + 48))
