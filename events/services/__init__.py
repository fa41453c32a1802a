"""The Event service: partners' events, registration with a waitlist, the community's votes,
check-in at the door with an attendance bonus, reminders.

The catalogue's functions keep their names: `create_event`, `register_for_event`,
`process_vote`, `check_in_participant`. Tickets are paid and refunded, and attendance
bonuses paid, through loyalty's ledger services (`apply_bonus_redemption`,
`return_bonus_redemption`, `adjust_balance`); customers are told through the notification
service after commit. Lock order everywhere: event, then registration, then bonus account."""

from events.services.checkin import CheckIn, arrivals, check_in_by_code, check_in_participant, door_opens_at
from events.services.errors import (
    CancellationRefused,
    CheckInRefused,
    EventNotChangeable,
    InvalidEvent,
    NotAllowed,
    NotRegistered,
    RegistrationClosed,
    VotingClosed,
)
from events.services.lifecycle import (
    CHANGEABLE,
    EventCreate,
    can_manage,
    cancel_event,
    close_votes,
    create_event,
    finish_events,
    publish_event,
    update_event,
)
from events.services.registrations import (
    CancelResult,
    cancel_registration,
    fill_seats,
    leave_events,
    refund_deadline,
    register_for_event,
)
from events.services.reminders import send_reminders
from events.services.votes import VoteResult, forget_vote_counts, process_vote, vote_counts

__all__ = [
    "CHANGEABLE",
    "CancelResult",
    "CancellationRefused",
    "CheckIn",
    "CheckInRefused",
    "EventCreate",
    "EventNotChangeable",
    "InvalidEvent",
    "NotAllowed",
    "NotRegistered",
    "RegistrationClosed",
    "VoteResult",
    "VotingClosed",
    "arrivals",
    "can_manage",
    "cancel_event",
    "cancel_registration",
    "check_in_by_code",
    "check_in_participant",
    "close_votes",
    "create_event",
    "door_opens_at",
    "fill_seats",
    "finish_events",
    "forget_vote_counts",
    "leave_events",
    "process_vote",
    "publish_event",
    "refund_deadline",
    "register_for_event",
    "send_reminders",
    "update_event",
    "vote_counts",
]
