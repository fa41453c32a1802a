"""The community's votes on proposed events.

The database is the truth; the counts the app shows are served from the cache (Redis in
production) as two counters per event, changed with atomic increments. Votes on one event
are written under the event row's lock (which also decides, once, that the threshold is
reached), so each vote moves the counters exactly once. Missing counters are rebuilt from
the database: a writer rebuilds them inside its transaction, where it sees its own vote; a
reader takes the same lock first, so it waits for a vote in flight and counts it. A write
that fails after touching the counters drops them, and the next read rebuilds them."""

import contextlib
import logging
from dataclasses import dataclass

from django.core.cache import cache
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from redis import RedisError

from accounts.models import User
from events.models import Event, Vote
from events.services.errors import InvalidEvent, VotingClosed
from events.services.lifecycle import _publish
from svoykrug import answers

logger = logging.getLogger(__name__)

CHOICES = Vote.Choice.values


@dataclass(frozen=True)
class VoteResult:
    up: int
    down: int
    my_vote: str | None
    threshold: int | None
    published: bool  # the vote (this one or an earlier) put the event on


def _keys(event_id) -> dict[str, str]:
    return {choice: f"events:votes:{event_id}:{choice}" for choice in CHOICES}


def _count_in_database(event_id) -> dict[str, int]:
    counts = dict.fromkeys(CHOICES, 0)
    for choice in Vote.objects.filter(event_id=event_id).values_list("vote", flat=True):
        counts[choice] += 1
    return counts


def vote_counts(event_id) -> dict[str, int]:
    """{"up": n, "down": m} of an event, from the cache or rebuilt from the database (and
    from the database alone while the cache is unreachable)."""
    keys = _keys(event_id)
    try:
        cached = cache.get_many(keys.values())
    except RedisError:
        logger.warning("Vote counts of event %s read from the database: the cache is unreachable", event_id)
        return _count_in_database(event_id)
    if len(cached) == len(keys):
        return {choice: cached[key] for choice, key in keys.items()}
    with transaction.atomic():
        # Wait for a vote in flight (it holds the event's lock until it commits), so the count
        # read next includes it; then no vote can be half-way and the figures may be set.
        Event.objects.select_for_update(of=("self",)).filter(pk=event_id).first()
        counts = _count_in_database(event_id)
        with contextlib.suppress(RedisError):
            cache.set_many({key: counts[choice] for choice, key in keys.items()}, timeout=None)
    return counts


def forget_vote_counts(event_id) -> None:
    with contextlib.suppress(RedisError):
        cache.delete_many(list(_keys(event_id).values()))


def _move_counters(event_id, deltas: dict[str, int]) -> dict[str, int]:
    """Apply a vote's change to the counters (the event locked, the vote written but not
    committed); rebuild them from this transaction's view if any is missing."""
    keys = _keys(event_id)
    try:
        counts = {}
        for choice, key in keys.items():
            counts[choice] = cache.incr(key, deltas[choice]) if deltas[choice] else cache.get(key)
            if counts[choice] is None:
                raise ValueError(key)
        return counts
    except ValueError:  # a counter is missing (emptied cache, evicted key)
        counts = _count_in_database(event_id)
        cache.set_many({key: counts[choice] for choice, key in keys.items()}, timeout=None)
        return counts
    except RedisError:  # the vote still counts; the counters are rebuilt when the cache is back
        logger.warning("Vote counters of event %s not moved: the cache is unreachable", event_id)
        forget_vote_counts(event_id)
        return _count_in_database(event_id)


def process_vote(user: User, event: Event, vote: str) -> VoteResult:
    """Record or change the customer's vote on a proposed event while voting is open; an
    up-vote that reaches the threshold publishes the event and tells those who voted for it."""
    if vote not in CHOICES:
        raise InvalidEvent(_("Vote up or down."), fields={"vote": [_("Either up or down.")]})
    touched = False
    try:
        with transaction.atomic():
            # The customer's row first, as closing the account takes it before the events: a
            # vote racing the closure waits for it, then finds the account closed.
            # FOR NO KEY UPDATE, as a registration takes it (see there).
            if (
                not User.objects.select_for_update(no_key=True)
                .filter(pk=user.pk, is_active=True)
                .values_list("pk")
                .first()
            ):
                raise VotingClosed(_("This account is closed."))
            event = Event.objects.select_for_update(of=("self",)).select_related("business").get(pk=event.pk)
            now = timezone.now()
            if event.status != Event.Status.PROPOSED or event.voting_deadline <= now:
                raise VotingClosed()
            previous = Vote.objects.filter(event=event, customer=user).first()
            deltas = dict.fromkeys(CHOICES, 0)
            if previous is None:
                Vote.objects.create(event=event, customer=user, vote=vote)
                deltas[vote] += 1
            elif previous.vote != vote:
                deltas[previous.vote] -= 1
                deltas[vote] += 1
                previous.vote = vote
                previous.save(update_fields=["vote", "updated_at"])
            touched = True
            counts = _move_counters(event.pk, deltas)
            # The cache says when to look; the database decides.
            reached = counts[Vote.Choice.UP] >= event.vote_threshold
            if reached and Vote.objects.filter(event=event, vote=Vote.Choice.UP).count() >= event.vote_threshold:
                _publish(event, now)
    except Exception:
        if touched:  # the counters may hold a vote that was never committed
            forget_vote_counts(event.pk)
            # An events page computed meanwhile may show it: the rollback dropped the renewal on commit.
            answers.changed("events")
        raise
    return VoteResult(
        up=counts[Vote.Choice.UP],
        down=counts[Vote.Choice.DOWN],
        my_vote=vote,
        threshold=event.vote_threshold,
        published=event.status == Event.Status.PUBLISHED,
    )
