"""Chains between partners: proposed by the source, accepted or declined by the target,
then active until paused, ended, or past their end.

`create_chain(config)` keeps the catalogue's name. Status changes take the chain's row
lock, so two owners clicking at once change it once."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import Business, Membership, User
from crosspromo.models import CrossPromoChain

Status = CrossPromoChain.Status
Reward = CrossPromoChain.Reward

# Statuses in which a pair of partners already has a chain going (a new one is refused).
OPEN_STATUSES = (Status.PROPOSED, Status.ACCEPTED, Status.ACTIVE, Status.PAUSED)


class ChainError(Exception):
    """A chain that cannot be made or changed so; `fields` names the inputs at fault."""

    def __init__(self, message: str, fields: dict | None = None):
        super().__init__(message)
        self.message = message
        self.fields = fields or {}


@dataclass
class ChainConfig:
    """What a source partner proposes to a target."""

    source: Business
    target: Business
    reward_kind: str
    reward_value: Decimal
    starts_at: datetime | None = None  # now when not given
    ends_at: datetime | None = None
    min_purchase_amount: Decimal = Decimal("0.00")
    first_purchase_only: bool = False
    new_to_target_only: bool = False
    max_discount: Decimal | None = None
    min_target_purchase: Decimal = Decimal("0.00")
    coupon_lifetime_days: int = 30
    per_customer_limit: int = 1
    total_limit: int | None = None
    budget: Decimal | None = None
    target_share_percent: int = 100
    title: str = ""
    proposed_by: User | None = None
    extra: dict = field(default_factory=dict)


def _validate(config: ChainConfig, now: datetime) -> dict:
    errors: dict[str, list[str]] = {}

    def refuse(name, message):
        errors.setdefault(name, []).append(message)

    if config.source.pk == config.target.pk:
        refuse("target", _("A chain joins two different partners."))
    if not config.source.is_active:
        refuse("source", _("This partner is not active in the circle."))
    if not config.target.is_active:
        refuse("target", _("This partner is not active in the circle."))
    if config.reward_kind not in Reward.values:
        refuse("reward_kind", _("Choose a percentage discount, a fixed discount or extra bonuses."))
    value = Decimal(config.reward_value)
    if value <= 0:
        refuse("reward_value", _("The reward must be more than zero."))
    if config.reward_kind == Reward.PERCENT and value > 100:
        refuse("reward_value", _("A discount cannot be more than 100%."))
    if config.max_discount is not None and Decimal(config.max_discount) <= 0:
        refuse("max_discount", _("The largest discount must be more than zero."))
    if config.budget is not None:
        if Decimal(config.budget) <= 0:
            refuse("budget", _("The budget must be more than zero."))
        elif config.reward_kind == Reward.PERCENT and config.max_discount is None:
            refuse("max_discount", _("A percentage discount with a budget needs a largest discount."))
    for name in ("min_purchase_amount", "min_target_purchase"):
        if Decimal(getattr(config, name)) < 0:
            refuse(name, _("This amount cannot be negative."))
    if not 1 <= int(config.coupon_lifetime_days) <= 365:
        refuse("coupon_lifetime_days", _("A coupon lives from 1 to 365 days."))
    if int(config.per_customer_limit) < 1:
        refuse("per_customer_limit", _("At least one coupon per customer."))
    if config.total_limit is not None and int(config.total_limit) < 1:
        refuse("total_limit", _("At least one coupon in all."))
    if not 0 <= int(config.target_share_percent) <= 100:
        refuse("target_share_percent", _("A share is from 0 to 100%."))
    starts_at = config.starts_at or now
    if starts_at < now - timedelta(days=1):
        refuse("starts_at", _("A chain cannot start in the past."))
    if config.ends_at is not None:
        if config.ends_at <= starts_at:
            refuse("ends_at", _("A chain ends after it starts."))
        elif config.ends_at <= now:
            refuse("ends_at", _("A chain cannot end in the past."))
    if (
        not errors
        and CrossPromoChain.objects.filter(
            Q(source=config.source, target=config.target) | Q(source=config.target, target=config.source),
            status__in=OPEN_STATUSES,
        ).exists()
    ):
        refuse("target", _("These partners already have a chain: change or end it first."))
    return errors


def create_chain(config: ChainConfig) -> CrossPromoChain:
    """Validate the proposal and record it as proposed; the target's owners are told and
    accept or decline it in the portal. Raises ChainError with the fields at fault."""
    now = timezone.now()
    errors = _validate(config, now)
    if errors:
        raise ChainError(_("The chain cannot be proposed as it is."), errors)
    chain = CrossPromoChain.objects.create(
        source=config.source,
        target=config.target,
        title=config.title.strip()[:120],
        reward_kind=config.reward_kind,
        reward_value=Decimal(config.reward_value),
        max_discount=config.max_discount,
        min_purchase_amount=Decimal(config.min_purchase_amount),
        first_purchase_only=config.first_purchase_only,
        new_to_target_only=config.new_to_target_only,
        min_target_purchase=Decimal(config.min_target_purchase),
        coupon_lifetime_days=int(config.coupon_lifetime_days),
        per_customer_limit=int(config.per_customer_limit),
        total_limit=config.total_limit,
        budget=config.budget,
        starts_at=config.starts_at or now,
        ends_at=config.ends_at,
        target_share_percent=int(config.target_share_percent),
        proposed_by=config.proposed_by,
    )
    _tell_owners(chain.target, "chain_proposed", chain)
    return chain


def _tell_owners(business: Business, kind: str, chain: CrossPromoChain) -> None:
    from notifications.services import notify_after_commit

    context = {
        "chain_id": chain.pk,
        "source_name": chain.source.name,
        "target_name": chain.target.name,
        "reward": describe_reward(chain),
    }
    owners = Membership.objects.filter(business=business, role=Membership.Role.OWNER, user__is_active=True)
    for user_id in owners.values_list("user_id", flat=True):
        notify_after_commit(user_id=user_id, messages=[(kind, context)], event_key=f"{kind}:{chain.pk}")


def describe_reward(chain: CrossPromoChain) -> str:
    """The reward in words, for messages and pages."""
    value = f"{chain.reward_value.normalize():f}"  # 20.00 -> "20", not "2E+1"
    if chain.reward_kind == Reward.PERCENT:
        text = _("%(value)s%% off at %(partner)s") % {"value": value, "partner": chain.target.name}
        if chain.max_discount:
            text += " " + _("(up to %(amount)s ₽)") % {"amount": chain.max_discount}
        return text
    if chain.reward_kind == Reward.FIXED:
        return _("%(value)s ₽ off at %(partner)s") % {"value": chain.reward_value, "partner": chain.target.name}
    return _("%(value)s extra bonuses at %(partner)s") % {"value": chain.reward_value, "partner": chain.target.name}


# --- Status changes ---------------------------------------------------------------------------

# Who may move a chain from which status to which: the target decides on a proposal; either
# side may pause, resume or end a chain that runs.
_MOVES = {
    "accept": ({Status.PROPOSED}, "target"),
    "decline": ({Status.PROPOSED}, "target"),
    "pause": ({Status.ACTIVE, Status.ACCEPTED}, "either"),
    "resume": ({Status.PAUSED}, "either"),
    "end": ({Status.PROPOSED, Status.ACCEPTED, Status.ACTIVE, Status.PAUSED}, "either"),
}


# The message the source's owners get when the target decides on its proposal.
_DECISION_MESSAGES = {"accept": "chain_accepted", "decline": "chain_declined"}


def _running_status(chain: CrossPromoChain, now: datetime) -> str:
    if chain.ends_at is not None and chain.ends_at <= now:
        return Status.ENDED
    return Status.ACTIVE if chain.starts_at <= now else Status.ACCEPTED


def change_chain(chain: CrossPromoChain, action: str, *, business: Business | None, by: User | None) -> CrossPromoChain:
    """Accept, decline, pause, resume or end a chain on behalf of `business` (None: the
    platform's staff, who may do anything allowed by the status). Raises ChainError when
    the status does not allow it or the business is not the side that decides."""
    if action not in _MOVES:
        raise ChainError(_("Unknown action."))
    allowed, side = _MOVES[action]
    now = timezone.now()
    with transaction.atomic():
        chain = CrossPromoChain.objects.select_for_update().get(pk=chain.pk)
        if business is not None:
            parties = {chain.source_id, chain.target_id} if side == "either" else {chain.target_id}
            if business.pk not in parties:
                raise ChainError(_("Only the partner the chain was proposed to can decide on it."))
        if chain.status not in allowed:
            raise ChainError(
                _("A chain that is %(status)s cannot be changed so.") % {"status": chain.get_status_display().lower()}
            )
        if action in ("accept", "resume"):
            chain.status = _running_status(chain, now)
        elif action == "decline":
            chain.status = Status.DECLINED
        elif action == "pause":
            chain.status = Status.PAUSED
        else:
            chain.status = Status.ENDED
        if action in ("accept", "decline"):
            chain.decided_by, chain.decided_at = by, now
        chain.save()
    if action in _DECISION_MESSAGES:
        _tell_owners(chain.source, _DECISION_MESSAGES[action], chain)
    return chain


def accept_chain(chain, *, business=None, by=None):
    return change_chain(chain, "accept", business=business, by=by)


def decline_chain(chain, *, business=None, by=None):
    return change_chain(chain, "decline", business=business, by=by)


def pause_chain(chain, *, business=None, by=None):
    return change_chain(chain, "pause", business=business, by=by)


def resume_chain(chain, *, business=None, by=None):
    return change_chain(chain, "resume", business=business, by=by)


def end_chain(chain, *, business=None, by=None):
    return change_chain(chain, "end", business=business, by=by)


def advance_chains(now: datetime | None = None) -> int:
    """Start accepted chains whose time has come and end those past their end (Celery beat,
    every few minutes; safe to run twice). Returns how many changed."""
    now = now or timezone.now()
    started = (
        CrossPromoChain.objects.filter(status=Status.ACCEPTED, starts_at__lte=now)
        .exclude(ends_at__lte=now)
        .update(status=Status.ACTIVE, updated_at=now)
    )
    ended = CrossPromoChain.objects.filter(
        status__in=(Status.ACCEPTED, Status.ACTIVE, Status.PAUSED), ends_at__lte=now
    ).update(status=Status.ENDED, updated_at=now)
    return started + ended
