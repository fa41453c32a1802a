"""Refusals of the Event service, each with its code and HTTP status."""

from django.utils.translation import gettext_lazy as _
from rest_framework import status

from svoykrug.exceptions import DomainError


class InvalidEvent(DomainError):
    """An event that cannot be made or changed so; `fields` names the inputs at fault."""

    code = "invalid_event"
    message = _("The event is not valid.")


class NotAllowed(DomainError):
    code = "not_allowed"
    status_code = status.HTTP_403_FORBIDDEN
    message = _("Only the host's owners and managers can do this.")


class EventNotChangeable(DomainError):
    code = "event_not_changeable"
    status_code = status.HTTP_409_CONFLICT
    message = _("The event can no longer be changed so.")


class RegistrationClosed(DomainError):
    code = "registration_closed"
    status_code = status.HTTP_409_CONFLICT
    message = _("Registration for this event is closed.")


class NotRegistered(DomainError):
    code = "not_registered"
    status_code = status.HTTP_404_NOT_FOUND
    message = _("You are not registered for this event.")


class CancellationRefused(DomainError):
    code = "cancellation_refused"
    status_code = status.HTTP_409_CONFLICT
    message = _("This registration can no longer be cancelled.")


class VotingClosed(DomainError):
    code = "voting_closed"
    status_code = status.HTTP_409_CONFLICT
    message = _("Voting on this event is closed.")


class CheckInRefused(DomainError):
    """The door says no; the message says why, in words for the person at the door."""

    code = "check_in_refused"
    status_code = status.HTTP_409_CONFLICT
    message = _("This ticket cannot be checked in.")
