"""Chains and coupons: proposals and their decisions, triggers and every limit, redemption
rules, refunds voiding coupons; on PostgreSQL, purchases racing for the last coupons."""

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone, translation

from crosspromo import services
from crosspromo.models import Coupon, CrossPromoChain, normalize_code
from crosspromo.services import ChainConfig, ChainError
from loyalty import services as loyalty
from loyalty.models import LedgerEntry
from loyalty.services import InvalidPurchase
from tests.factories import BusinessFactory, LoyaltyProgramFactory, MembershipFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _english():
    """The refusals are matched in English (the circle speaks Russian by default)."""
    with translation.override("en"):
        yield


D = Decimal
ANNA, BORIS = "+79160000001", "+79160000002"


@pytest.fixture
def cafe():
    return LoyaltyProgramFactory(accrual_rate=D(5)).business


@pytest.fixture
def salon():
    return LoyaltyProgramFactory(business=BusinessFactory(name="Салон"), accrual_rate=D(10)).business


def chain(cafe, salon, **overrides) -> CrossPromoChain:
    """An active chain from the café to the salon: 500 ₽ or more issues 20% off (up to 300)."""
    fields = {"reward_kind": "percent", "reward_value": D(20), "max_discount": D(300), "min_purchase_amount": D(500)}
    made = services.create_chain(ChainConfig(source=cafe, target=salon, **(fields | overrides)))
    return services.accept_chain(made, business=salon)


def buy(business, external_id, amount, phone=ANNA, **kwargs):
    return loyalty.record_transaction(
        business=business, external_id=external_id, amount=D(amount), phone=phone, **kwargs
    ).transaction


# --- Proposals ----------------------------------------------------------------------------------


def test_a_proposal_is_validated_and_the_target_decides(cafe, salon, monkeypatch):
    told = []
    monkeypatch.setattr(
        "notifications.services.notify_after_commit", lambda **kwargs: told.append(kwargs["messages"][0][0])
    )
    owner = MembershipFactory(business=salon).user
    MembershipFactory(business=cafe)  # told when its proposal is decided
    config = {"reward_kind": "fixed", "reward_value": D(200)}
    with pytest.raises(ChainError) as same:
        services.create_chain(ChainConfig(source=cafe, target=cafe, **config))
    assert "target" in same.value.fields
    with pytest.raises(ChainError) as too_much:
        services.create_chain(ChainConfig(source=cafe, target=salon, reward_kind="percent", reward_value=D(120)))
    assert "reward_value" in too_much.value.fields
    with pytest.raises(ChainError) as unbounded:
        services.create_chain(
            ChainConfig(source=cafe, target=salon, reward_kind="percent", reward_value=D(10), budget=D(1000))
        )
    assert "max_discount" in unbounded.value.fields
    with pytest.raises(ChainError) as past:
        services.create_chain(ChainConfig(source=cafe, target=salon, ends_at=timezone.now(), **config))
    assert "ends_at" in past.value.fields

    proposed = services.create_chain(ChainConfig(source=cafe, target=salon, proposed_by=owner, **config))
    assert proposed.status == CrossPromoChain.Status.PROPOSED
    assert told == ["chain_proposed"]
    with pytest.raises(ChainError):  # one open chain per pair, whichever way
        services.create_chain(ChainConfig(source=salon, target=cafe, **config))
    with pytest.raises(ChainError):  # the source does not accept its own proposal
        services.accept_chain(proposed, business=cafe)
    accepted = services.accept_chain(proposed, business=salon, by=owner)
    assert (accepted.status, accepted.decided_by) == (CrossPromoChain.Status.ACTIVE, owner)
    assert told == ["chain_proposed", "chain_accepted"]
    with pytest.raises(ChainError):  # decided once
        services.decline_chain(accepted, business=salon)
    assert services.pause_chain(accepted, business=cafe).status == CrossPromoChain.Status.PAUSED
    assert services.resume_chain(accepted, business=salon).status == CrossPromoChain.Status.ACTIVE
    assert services.end_chain(accepted, business=cafe).status == CrossPromoChain.Status.ENDED
    declined = services.create_chain(ChainConfig(source=salon, target=cafe, **config))
    services.decline_chain(declined, business=cafe)
    assert told == ["chain_proposed", "chain_accepted", "chain_proposed", "chain_declined"]


def test_every_message_the_chains_send_is_a_known_kind(
    cafe, salon, django_capture_on_commit_callbacks, monkeypatch, caplog
):
    """The messages go out after commit, and an enqueue error is only logged: run them and
    look at both, so that a misspelt kind fails here."""
    from notifications import services as notifications

    sent, original = [], notifications.notify
    monkeypatch.setattr(
        notifications, "notify", lambda user, kind, *a, **kw: sent.append(kind) or original(user, kind, *a, **kw)
    )
    MembershipFactory(business=cafe)
    MembershipFactory(business=salon)
    config = {"reward_kind": "fixed", "reward_value": D(200)}
    with django_capture_on_commit_callbacks(execute=True):
        first = services.create_chain(ChainConfig(source=cafe, target=salon, **config))
        services.decline_chain(first, business=salon)
        second = services.create_chain(ChainConfig(source=cafe, target=salon, **config))
        services.accept_chain(second, business=salon)
        buy(cafe, "c-1", "800")
    assert {"chain_proposed", "chain_declined", "chain_accepted", "coupon_issued"} <= set(sent)
    assert set(sent) <= set(notifications.KINDS)
    assert [record.getMessage() for record in caplog.records if record.levelname == "ERROR"] == []


def test_a_chain_accepted_before_its_start_starts_and_ends_on_time(cafe, salon):
    start = timezone.now() + timedelta(days=2)
    made = services.create_chain(
        ChainConfig(
            source=cafe,
            target=salon,
            reward_kind="bonus",
            reward_value=D(100),
            starts_at=start,
            ends_at=start + timedelta(days=5),
        )
    )
    assert services.accept_chain(made, business=salon).status == CrossPromoChain.Status.ACCEPTED
    assert services.advance_chains(start - timedelta(minutes=1)) == 0
    assert services.advance_chains(start) == 1
    made.refresh_from_db()
    assert made.status == CrossPromoChain.Status.ACTIVE
    services.advance_chains(start + timedelta(days=5))
    made.refresh_from_db()
    assert made.status == CrossPromoChain.Status.ENDED


# --- Triggers and limits --------------------------------------------------------------------------


def test_a_purchase_that_meets_the_trigger_issues_one_coupon_once(cafe, salon):
    promo = chain(cafe, salon)
    assert buy(cafe, "small", "499.99").coupons_issued.count() == 0
    purchase = buy(cafe, "big", "800")
    (coupon,) = purchase.coupons_issued.all()
    assert coupon.chain == promo and coupon.customer_id == purchase.customer_id
    assert coupon.status == Coupon.Status.ACTIVE and coupon.reserved == D(300)
    assert coupon.expires_at - coupon.issued_at == timedelta(days=30)
    assert set(coupon.code) <= set("34679ACDEFGHJKMNPQRTUVWXY") and len(coupon.code) == 8
    assert coupon.qr_payload.endswith(coupon.code) and normalize_code(coupon.qr_payload.lower()) == coupon.code
    # The same purchase delivered again issues nothing new.
    buy(cafe, "big", "800")
    promo.refresh_from_db()
    assert (promo.issued_count, promo.budget_reserved, Coupon.objects.count()) == (1, D(300), 1)


def test_first_purchase_only_and_new_to_target_only(cafe, salon):
    chain(
        cafe, salon, min_purchase_amount=D(0), first_purchase_only=True, new_to_target_only=True, per_customer_limit=5
    )
    assert buy(cafe, "a-1", "100").coupons_issued.count() == 1  # Anna's first purchase at the café
    assert buy(cafe, "a-2", "100").coupons_issued.count() == 0  # not her first any more
    buy(salon, "b-0", "100", phone=BORIS)  # Boris already knows the salon
    assert buy(cafe, "b-1", "100", phone=BORIS).coupons_issued.count() == 0


def test_limits_per_customer_in_all_and_by_budget(cafe, salon):
    promo = chain(cafe, salon, reward_kind="fixed", reward_value=D(200), max_discount=None, per_customer_limit=2)
    for n in range(3):
        buy(cafe, f"a-{n}", "600")
    assert Coupon.objects.filter(customer__phone=ANNA).count() == 2  # two per customer
    services.end_chain(promo)

    salon2 = LoyaltyProgramFactory(business=BusinessFactory()).business
    capped = chain(cafe, salon2, reward_kind="fixed", reward_value=D(200), max_discount=None, total_limit=3)
    for n in range(5):
        buy(cafe, f"t-{n}", "600", phone=f"+7916100000{n}")
    capped.refresh_from_db()
    assert capped.issued_count == Coupon.objects.filter(chain=capped).count() == 3
    services.end_chain(capped)

    salon3 = LoyaltyProgramFactory(business=BusinessFactory()).business
    budgeted = chain(cafe, salon3, reward_kind="bonus", reward_value=D(150), max_discount=None, budget=D(400))
    for n in range(4):
        buy(cafe, f"m-{n}", "600", phone=f"+7916200000{n}")
    budgeted.refresh_from_db()
    assert Coupon.objects.filter(chain=budgeted).count() == 2  # 2 × 150 reserved; a third would pass 400
    assert budgeted.budget_reserved == D(300)


def test_a_paused_chain_issues_nothing(cafe, salon):
    promo = chain(cafe, salon)
    services.pause_chain(promo, business=salon)
    assert buy(cafe, "p-1", "900").coupons_issued.count() == 0


# --- Redemption -------------------------------------------------------------------------------------


def test_a_coupon_takes_its_discount_once_only_at_its_target(cafe, salon):
    promo = chain(cafe, salon)
    coupon = buy(cafe, "c-1", "800").coupons_issued.get()
    other = LoyaltyProgramFactory(business=BusinessFactory()).business

    with pytest.raises(InvalidPurchase) as elsewhere:
        buy(other, "o-1", "1000", coupon=coupon.code)
    assert "coupon" in elsewhere.value.fields
    with pytest.raises(InvalidPurchase):  # Boris cannot use Anna's coupon
        buy(salon, "b-1", "1000", phone=BORIS, coupon=coupon.code)

    # 20% of 1000 is 200, under the 300 cap; bonuses (10%) accrue on the 800 paid only.
    purchase = buy(salon, "s-1", "1000", coupon=coupon.code.lower())
    assert (purchase.coupon_discount, purchase.paid_amount, purchase.bonuses_accrued) == (D(200), D(800), D(80))
    coupon.refresh_from_db()
    promo.refresh_from_db()
    assert (coupon.status, coupon.redeeming_transaction, coupon.value_given) == ("redeemed", purchase, D(200))
    assert (promo.redeemed_count, promo.budget_spent, promo.budget_reserved) == (1, D(200), D(0))
    with pytest.raises(InvalidPurchase, match="already used"):
        buy(salon, "s-2", "1000", coupon=coupon.code)
    # A retry of the same purchase replays it; the coupon is not taken twice.
    assert buy(salon, "s-1", "1000", coupon=coupon.code) == purchase


def test_the_cap_an_expiry_and_an_unknown_code(cafe, salon):
    chain(cafe, salon)
    first = buy(cafe, "c-1", "800").coupons_issued.get()
    second = buy(cafe, "c-2", "800", phone=BORIS).coupons_issued.get()
    assert buy(salon, "s-1", "5000", coupon=first.code).coupon_discount == D(300)  # 20% capped at 300
    with pytest.raises(InvalidPurchase, match="no such coupon"):
        buy(salon, "s-2", "100", coupon="NOPE1234")
    with time_machine.travel(second.expires_at + timedelta(minutes=1)):
        with pytest.raises(InvalidPurchase, match="expired"):
            buy(salon, "s-3", "1000", phone=BORIS, coupon=second.code)
        assert services.expire_coupons() == 1
    second.refresh_from_db()
    assert second.status == Coupon.Status.EXPIRED


def test_a_bonus_coupon_credits_bonuses_issued_by_the_target(cafe, salon):
    chain(cafe, salon, reward_kind="bonus", reward_value=D(150), max_discount=None)
    coupon = buy(cafe, "c-1", "800").coupons_issued.get()
    purchase = buy(salon, "s-1", "1000", coupon=coupon.code)
    assert purchase.coupon_discount == 0
    extra = LedgerEntry.objects.get(idempotency_key=f"coupon:{coupon.pk}")
    assert (extra.amount, extra.kind, extra.lot.business) == (D(150), "accrual", salon)


def test_a_refund_of_the_issuing_purchase_voids_the_coupon_and_frees_the_budget(cafe, salon):
    promo = chain(cafe, salon, budget=D(1000))
    coupon = buy(cafe, "c-1", "800").coupons_issued.get()
    kept = buy(cafe, "c-2", "800", phone=BORIS).coupons_issued.get()
    loyalty.refund_transaction(business=cafe, external_id="c-2", amount=D(100), refund_id="r-1")  # 700 still ≥ 500
    loyalty.refund_transaction(business=cafe, external_id="c-1")
    coupon.refresh_from_db()
    kept.refresh_from_db()
    promo.refresh_from_db()
    assert (coupon.status, kept.status) == ("void", "active")
    assert promo.budget_reserved == D(300)
    with pytest.raises(InvalidPurchase, match="cancelled"):
        buy(salon, "s-1", "1000", coupon=coupon.code)


# --- Under parallel load (PostgreSQL) ---------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_purchases_racing_for_the_last_coupons_never_pass_the_limit(cafe, salon):
    from tests.loyalty.test_concurrency import run_parallel

    promo = chain(
        cafe, salon, reward_kind="fixed", reward_value=D(100), max_discount=None, total_limit=7, budget=D(500)
    )
    results = run_parallel(30, lambda n: buy(cafe, f"race-{n}", "600", phone=f"+7916300{n:04d}"))
    assert not [r for r in results if isinstance(r, Exception)]
    promo.refresh_from_db()
    coupons = Coupon.objects.filter(chain=promo)
    # The budget (5 × 100) binds before the total (7).
    assert promo.issued_count == coupons.count() == 5
    assert promo.budget_reserved == D(500)
    assert len({c.customer_id for c in coupons}) == 5


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_one_coupon_used_at_two_tills_at_once_is_taken_once(cafe, salon):
    from tests.loyalty.test_concurrency import run_parallel

    chain(cafe, salon)
    coupon = buy(cafe, "c-1", "800").coupons_issued.get()
    results = run_parallel(8, lambda n: buy(salon, f"till-{n}", "1000", coupon=coupon.code))
    taken = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, InvalidPurchase)]
    assert (len(taken), len(refused)) == (1, 7)
    coupon.refresh_from_db()
    assert coupon.redeeming_transaction == taken[0]


def test_a_reward_in_words_shows_round_numbers_plainly(cafe, salon):
    promo = chain(cafe, salon, reward_value=D("20.00"), max_discount=D("300.00"))
    assert services.describe_reward(promo) == f"20% off at {salon.name} (up to 300.00 ₽)"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_partners_in_a_ring_redeeming_each_others_coupons_at_once_never_deadlock(cafe, salon):
    """Chains café → salon → shop → café: a redemption at each holds one chain and issues
    from the next, so without one lock order three tills could wait on each other."""
    from tests.loyalty.test_concurrency import run_parallel

    shop = LoyaltyProgramFactory(business=BusinessFactory()).business
    ring = [cafe, salon, shop]
    for source, target in zip(ring, ring[1:] + ring[:1], strict=True):
        chain(source, target, reward_kind="fixed", reward_value=D(100), max_discount=None, min_purchase_amount=D(0))
    phones = [f"+7916400{n:04d}" for n in range(8)]
    codes = {}  # (partner index, customer) -> a coupon for the next partner
    for k, partner in enumerate(ring):
        for n, phone in enumerate(phones):
            codes[k, n] = buy(partner, f"p{k}-{n}", "300", phone=phone).coupons_issued.get().code

    def redeem(index):
        n, k = divmod(index, 3)  # at partner k+1, the coupon partner k issued
        return buy(ring[(k + 1) % 3], f"r-{index}", "1000", phone=phones[n], coupon=codes[k, n])

    results = run_parallel(24, redeem)
    assert [r for r in results if isinstance(r, Exception)] == []
    assert Coupon.objects.filter(status=Coupon.Status.REDEEMED).count() == 24


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_coupon_being_redeemed_does_not_hold_up_other_purchases_at_the_partner(cafe, salon, monkeypatch):
    """The redemption locks the coupon and its chain, not the partner's row: every purchase
    at the partner references that row, and PostgreSQL checks the reference under a lock
    that FOR UPDATE on the partner would block until the redemption commits."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    from loyalty.services import purchases
    from tests.parallel import wait_for_a_lock_or

    chain(cafe, salon)
    coupon = buy(cafe, "c-1", "800").coupons_issued.get()
    claimed, other_done = threading.Event(), threading.Event()
    outcome = {}
    claim = purchases._claim_coupon

    def claim_and_hold(*args, **kwargs):
        result = claim(*args, **kwargs)
        claimed.set()
        # Hold the redemption's locks until the other purchase is done or waits for one of them.
        if wait_for_a_lock_or(other_done):
            outcome["other purchase"] = "waited for the redemption"
        return result

    monkeypatch.setattr(purchases, "_claim_coupon", claim_and_hold)

    def redeem():
        try:
            return buy(salon, "till-1", "1000", coupon=coupon.code)
        finally:
            connection.close()

    def other_purchase():
        assert claimed.wait(timeout=30)
        try:
            return buy(salon, "till-2", "1000", phone="+79163000777")
        finally:
            other_done.set()
            connection.close()

    with ThreadPoolExecutor(max_workers=2) as pool:
        redeemed, other = pool.submit(redeem), pool.submit(other_purchase)
        redeemed, other = redeemed.result(timeout=60), other.result(timeout=60)

    assert outcome == {}
    assert redeemed.coupon_discount == D(200) and other.coupon_discount == D(0)
