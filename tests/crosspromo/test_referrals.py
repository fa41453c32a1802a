"""Referrals: the inviter's code and link, a friend registered at first login only, the first
paid purchase qualifying, and the bonuses paid once, after the hold, within the monthly cap."""

from datetime import datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core.cache import cache
from django.utils import timezone
from rest_framework_simplejwt.tokens import RefreshToken

from accounts.models import User
from accounts.phones import normalize_phone
from crosspromo import services
from crosspromo.models import Referral, ReferralCode
from loyalty import services as loyalty
from loyalty.models import LedgerEntry
from tests.factories import BusinessFactory, LoyaltyProgramFactory

pytestmark = pytest.mark.django_db

D = Decimal
ANNA, BORIS, VERA = "+79160000001", "+79160000002", "+79160000003"
REFERRAL = "/api/v1/me/referral/"
OTP_URL = "/api/v1/auth/otp/"
VERIFY_URL = "/api/v1/auth/otp/verify/"
START = datetime(2025, 3, 3, 12, 0, tzinfo=timezone.get_fixed_timezone(180))


@pytest.fixture(autouse=True)
def _settings(settings):
    settings.REFERRAL_INVITER_BONUS = D("300.00")
    settings.REFERRAL_FRIEND_BONUS = D("200.00")
    settings.REFERRAL_MONTHLY_CAP = 10
    settings.REFERRAL_HOLD_DAYS = 14
    settings.REFERRAL_LINK_BASE = "https://svoykrug.example/r/"


@pytest.fixture
def cafe():
    return LoyaltyProgramFactory(business=BusinessFactory(name="Кофейня Зерно")).business


@pytest.fixture
def verify(api_client, sms):
    """Log a phone in through the real API, optionally with a referral code; returns the response."""

    def do_verify(phone, referral_code=None):
        cache.delete(f"otp:cooldown:{normalize_phone(phone)}")
        challenge = api_client.post(OTP_URL, {"phone": phone}, format="json")
        assert challenge.status_code == 201, challenge.json()
        body = {"code_id": challenge.json()["code_id"], "code": sms.last_code()}
        if referral_code is not None:
            body["referral_code"] = referral_code
        return api_client.post(VERIFY_URL, body, format="json")

    return do_verify


def user(phone) -> User:
    return User.objects.get(phone=phone)


def code_of(phone) -> str:
    return services.get_referral_code(User.objects.get_or_create(phone=phone)[0]).code


def buy(business, external_id, amount, phone):
    return loyalty.record_transaction(
        business=business, external_id=external_id, amount=D(amount), phone=phone
    ).transaction


def referral_credits() -> list[tuple[str, Decimal]]:
    return sorted(
        LedgerEntry.objects.filter(idempotency_key__startswith="referral:").values_list(
            "account__user__phone", "amount"
        )
    )


# --- The inviter's code ------------------------------------------------------------------


def test_endpoint_returns_a_stable_code_and_link(api_client):
    anna = User.objects.create_user(phone=ANNA)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(anna).access_token}")

    first = api_client.get(REFERRAL)
    second = api_client.get(REFERRAL)

    assert first.status_code == 200
    body = first.json()
    assert second.json() == body
    assert len(body["code"]) == 8
    assert set(body["code"]) <= set("34679ACDEFGHJKMNPQRTUVWXY")
    assert body == {
        "code": ReferralCode.objects.get(user=anna).code,
        "link": "https://svoykrug.example/r/" + body["code"],
        "inviter_bonus": "300.00",
        "friend_bonus": "200.00",
        "invited": 0,
        "rewarded": 0,
        "pending": 0,
    }
    assert ReferralCode.objects.count() == 1


def test_endpoint_needs_a_login(api_client):
    assert api_client.get(REFERRAL).status_code == 401


def test_endpoint_counts_the_invited_friends(api_client):
    anna = User.objects.create_user(phone=ANNA)
    code = services.get_referral_code(anna).code
    services.register_referral(friend=User.objects.create_user(phone=BORIS), code=code)
    vera = services.register_referral(friend=User.objects.create_user(phone=VERA), code=code)
    Referral.objects.filter(pk=vera.pk).update(status=Referral.Status.REWARDED)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(anna).access_token}")

    body = api_client.get(REFERRAL).json()

    assert (body["invited"], body["rewarded"], body["pending"]) == (2, 1, 1)


# --- The friend's first login ------------------------------------------------------------


def test_friend_logging_in_the_first_time_with_the_code_is_registered(verify):
    code = code_of(ANNA)

    response = verify(BORIS, referral_code=code.lower())

    assert response.status_code == 200
    assert response.json()["user"]["is_new"] is True
    referral = Referral.objects.get()
    assert (referral.inviter, referral.friend) == (user(ANNA), user(BORIS))
    assert referral.status == Referral.Status.PENDING
    assert referral.qualifying_transaction is None


def test_the_invitation_link_works_as_a_code(verify):
    code = code_of(ANNA)

    assert verify(BORIS, referral_code=f"https://svoykrug.example/r/{code}").status_code == 200

    assert Referral.objects.get().friend == user(BORIS)


def test_a_second_login_with_a_code_changes_nothing(verify):
    code = code_of(ANNA)
    assert verify(BORIS).status_code == 200

    response = verify(BORIS, referral_code=code)

    assert response.status_code == 200
    assert response.json()["user"]["is_new"] is False
    assert Referral.objects.count() == 0


def test_an_already_referred_friend_keeps_the_first_inviter(verify):
    anna_code, vera_code = code_of(ANNA), code_of(VERA)
    friend = User.objects.create_user(phone=BORIS)
    services.register_referral(friend=friend, code=anna_code)

    assert services.register_referral(friend=friend, code=vera_code) is None
    assert verify(BORIS, referral_code=vera_code).status_code == 200

    assert list(Referral.objects.values_list("inviter__phone", "friend__phone")) == [(ANNA, BORIS)]


def test_a_customer_who_already_bought_in_the_circle_is_not_referred(verify, cafe):
    code = code_of(ANNA)
    buy(cafe, "pos-1", 1000, BORIS)  # the partner's purchase made the account before the app

    response = verify(BORIS, referral_code=code)

    assert response.status_code == 200
    assert response.json()["user"]["is_new"] is True
    assert Referral.objects.count() == 0


def test_own_code_is_refused(verify):
    assert verify(ANNA).status_code == 200
    code = code_of(ANNA)

    assert services.register_referral(friend=user(ANNA), code=code) is None
    assert verify(ANNA, referral_code=code).status_code == 200
    assert Referral.objects.count() == 0


def test_unknown_code_is_refused_with_the_field_and_logs_nobody_in(verify, api_client, sms):
    code_of(ANNA)

    response = verify(BORIS, referral_code="XXXX-9999")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "referral_code_unknown"
    assert set(error["fields"]) == {"referral_code"}
    assert "access" not in response.json()
    assert not User.objects.filter(phone=BORIS).exists()
    assert Referral.objects.count() == 0
    # The SMS code was not used up: the same code logs in without the bad referral code.
    code_id = api_client.post(OTP_URL, {"phone": VERA}, format="json").json()["code_id"]
    refused = api_client.post(
        VERIFY_URL, {"code_id": code_id, "code": sms.last_code(), "referral_code": "NOPE"}, format="json"
    )
    assert refused.status_code == 400
    retried = api_client.post(VERIFY_URL, {"code_id": code_id, "code": sms.last_code()}, format="json")
    assert retried.status_code == 200


def test_unknown_code_answers_the_same_for_known_and_new_phones(verify):
    User.objects.create_user(phone=VERA)

    known = verify(VERA, referral_code="NOPE")
    unknown = verify(BORIS, referral_code="NOPE")

    assert known.status_code == unknown.status_code == 400
    assert known.json() == unknown.json()


# --- Qualifying and paying ---------------------------------------------------------------


def referred(inviter_phone=ANNA, friend_phone=BORIS) -> Referral:
    return services.register_referral(friend=User.objects.create_user(phone=friend_phone), code=code_of(inviter_phone))


def test_first_paid_purchase_qualifies_and_is_paid_once_after_the_hold(cafe):
    with time_machine.travel(START, tick=False) as traveller:
        referral = referred()
        first = buy(cafe, "pos-1", 1000, BORIS)
        referral.refresh_from_db()
        assert referral.qualifying_transaction == first
        buy(cafe, "pos-2", 500, BORIS)
        referral.refresh_from_db()
        assert referral.qualifying_transaction == first

        traveller.move_to(START + timedelta(days=13, hours=23))
        assert services.reward_referrals() == 0
        assert referral_credits() == []

        traveller.move_to(START + timedelta(days=14, minutes=1))
        assert services.reward_referrals() == 1
        assert services.reward_referrals() == 0

    referral.refresh_from_db()
    assert referral.status == Referral.Status.REWARDED
    assert referral.rewarded_at == START + timedelta(days=14, minutes=1)
    assert referral_credits() == [(ANNA, D("300.00")), (BORIS, D("200.00"))]


def test_a_purchase_without_money_paid_does_not_qualify():
    from loyalty.models import Transaction

    referral = referred()

    assert services.note_referral_purchase(Transaction(customer=user(BORIS), paid_amount=D("0.00"))) is False
    referral.refresh_from_db()
    assert referral.qualifying_transaction is None


def test_the_task_pays_both_exactly_once(cafe):
    from crosspromo import tasks

    with time_machine.travel(START, tick=False) as traveller:
        referred()
        buy(cafe, "pos-1", 1000, BORIS)
        traveller.move_to(START + timedelta(days=15))
        assert tasks.reward_referrals.delay().get() == 1
        assert tasks.reward_referrals.delay().get() == 0

    assert referral_credits() == [(ANNA, D("300.00")), (BORIS, D("200.00"))]


def test_a_refunded_purchase_pays_nothing_and_the_next_paid_purchase_qualifies(cafe):
    with time_machine.travel(START, tick=False) as traveller:
        referral = referred()
        buy(cafe, "pos-1", 1000, BORIS)
        loyalty.refund_transaction(business=cafe, external_id="pos-1")

        traveller.move_to(START + timedelta(days=20))
        assert services.reward_referrals() == 0
        referral.refresh_from_db()
        assert referral.status == Referral.Status.PENDING
        assert referral.qualifying_transaction is None
        assert referral_credits() == []

        second = buy(cafe, "pos-2", 800, BORIS)
        referral.refresh_from_db()
        assert referral.qualifying_transaction == second
        assert services.reward_referrals() == 0

        traveller.move_to(START + timedelta(days=35))
        assert services.reward_referrals() == 1

    assert referral_credits() == [(ANNA, D("300.00")), (BORIS, D("200.00"))]


def test_a_partly_refunded_purchase_pays_nothing(cafe):
    with time_machine.travel(START, tick=False) as traveller:
        referral = referred()
        buy(cafe, "pos-1", 1000, BORIS)
        loyalty.refund_transaction(business=cafe, external_id="pos-1", amount=D(100), refund_id="r-1")
        traveller.move_to(START + timedelta(days=20))
        assert services.reward_referrals() == 0

    referral.refresh_from_db()
    assert (referral.status, referral.qualifying_transaction) == (Referral.Status.PENDING, None)
    assert referral_credits() == []


def test_the_monthly_cap_holds(cafe, settings):
    settings.REFERRAL_MONTHLY_CAP = 2
    friends = ["+79160000011", "+79160000012", "+79160000013"]
    with time_machine.travel(START, tick=False) as traveller:
        referrals = [referred(ANNA, phone) for phone in friends]
        for number, phone in enumerate(friends):
            buy(cafe, f"pos-{number}", 1000, phone)
        traveller.move_to(START + timedelta(days=15))

        assert services.reward_referrals() == 2

    statuses = [Referral.objects.get(pk=r.pk) for r in referrals]
    assert [r.status for r in statuses] == [Referral.Status.REWARDED, Referral.Status.REWARDED, Referral.Status.REFUSED]
    assert statuses[2].refused_reason == services.referrals.CAP_REASON
    assert referral_credits() == [
        (ANNA, D("300.00")),
        (ANNA, D("300.00")),
        ("+79160000011", D("200.00")),
        ("+79160000012", D("200.00")),
    ]


def test_the_cap_counts_the_calendar_month(cafe, settings):
    settings.REFERRAL_MONTHLY_CAP = 1
    with time_machine.travel(START, tick=False) as traveller:
        first, second = referred(ANNA, BORIS), referred(ANNA, VERA)
        buy(cafe, "pos-1", 1000, BORIS)
        traveller.move_to(START + timedelta(days=15))  # 18 March
        assert services.reward_referrals() == 1
        buy(cafe, "pos-2", 1000, VERA)
        traveller.move_to(START + timedelta(days=30))  # 2 April: a new month
        assert services.reward_referrals() == 1

    assert Referral.objects.filter(pk__in=[first.pk, second.pk], status=Referral.Status.REWARDED).count() == 2
