"""JWT pairs: refresh with rotation, one use per refresh token, logout, logout everywhere."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.utils import timezone
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken

from accounts import services
from accounts.tasks import flush_expired_tokens
from tests.factories import UserFactory

REFRESH_URL = "/api/v1/auth/token/refresh/"
ME_URL = "/api/v1/me/"


def bearer(access):
    return {"HTTP_AUTHORIZATION": f"Bearer {access}"}


def refresh(client, token):
    return client.post(REFRESH_URL, {"refresh": token}, format="json")


@pytest.mark.django_db
def test_refresh_gives_a_new_pair_and_the_old_refresh_token_dies(api_client, login):
    tokens = login()

    first = refresh(api_client, tokens["refresh"])
    reused = refresh(api_client, tokens["refresh"])

    assert first.status_code == 200
    assert set(first.json()) == {"access", "refresh"}
    assert first.json()["refresh"] != tokens["refresh"]
    assert api_client.get(ME_URL, **bearer(first.json()["access"])).status_code == 200
    assert reused.status_code == 401
    assert reused.json()["error"]["code"] == "token_invalid"
    assert refresh(api_client, first.json()["refresh"]).status_code == 200


@pytest.mark.django_db
def test_access_token_lives_fifteen_minutes_and_refresh_thirty_days(api_client, login):
    with time_machine.travel("2026-11-26 10:00:00 +0000", tick=False) as traveller:
        tokens = login()
        traveller.shift(timedelta(minutes=14, seconds=59))
        assert api_client.get(ME_URL, **bearer(tokens["access"])).status_code == 200

        traveller.shift(timedelta(seconds=2))
        expired = api_client.get(ME_URL, **bearer(tokens["access"]))
        assert expired.status_code == 401
        assert expired.json()["error"]["code"] == "token_not_valid"

        traveller.shift(timedelta(days=30))
        assert refresh(api_client, tokens["refresh"]).status_code == 401


@pytest.mark.django_db
@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "x" * 5000])
def test_garbage_refresh_token_is_refused_cleanly(api_client, token):
    response = refresh(api_client, token)

    assert response.status_code in {400, 401}
    assert response.json()["error"]["code"] in {"token_invalid", "invalid"}


@pytest.mark.django_db
def test_an_access_token_is_not_a_refresh_token(api_client, login):
    tokens = login()

    response = refresh(api_client, tokens["access"])

    assert response.status_code == 401


@pytest.mark.django_db
def test_disabled_user_cannot_refresh(api_client, login):
    tokens = login()
    from accounts.models import User

    User.objects.filter(phone="+79991234567").update(is_active=False)

    assert refresh(api_client, tokens["refresh"]).status_code == 401


@pytest.mark.django_db
def test_logout_revokes_this_refresh_token_only(api_client, login):
    phone_a = login()
    phone_b = login(ip="10.0.0.2")  # the same person on a second device

    response = api_client.post(
        "/api/v1/auth/logout/", {"refresh": phone_a["refresh"]}, format="json", **bearer(phone_a["access"])
    )
    again = api_client.post(
        "/api/v1/auth/logout/", {"refresh": phone_a["refresh"]}, format="json", **bearer(phone_a["access"])
    )

    assert response.status_code == 204
    assert again.status_code == 204
    assert refresh(api_client, phone_a["refresh"]).status_code == 401
    assert refresh(api_client, phone_b["refresh"]).status_code == 200


@pytest.mark.django_db
def test_logout_with_somebody_elses_token_is_refused(api_client, login):
    mine = login()
    theirs = login(phone="+79997654321", ip="10.0.0.3")

    response = api_client.post(
        "/api/v1/auth/logout/", {"refresh": theirs["refresh"]}, format="json", **bearer(mine["access"])
    )

    assert response.status_code == 401
    assert refresh(api_client, theirs["refresh"]).status_code == 200


@pytest.mark.django_db
def test_logout_needs_authentication(api_client, login):
    tokens = login()

    response = api_client.post("/api/v1/auth/logout/", {"refresh": tokens["refresh"]}, format="json")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


@pytest.mark.django_db
def test_logout_all_revokes_every_refresh_and_access_token(api_client, login):
    with time_machine.travel("2026-11-26 10:00:00 +0000", tick=False) as traveller:
        first = login()
        second = login(ip="10.0.0.2")
        traveller.shift(5)

        response = api_client.post("/api/v1/auth/logout-all/", **bearer(first["access"]))

        assert response.status_code == 204
        for device in (first, second):
            assert refresh(api_client, device["refresh"]).status_code == 401
            revoked = api_client.get(ME_URL, **bearer(device["access"]))
            assert revoked.status_code == 401
            assert revoked.json()["error"]["code"] == "token_revoked"

        traveller.shift(5)
        again = login(ip="10.0.0.4")
        assert api_client.get(ME_URL, **bearer(again["access"])).status_code == 200


@pytest.mark.django_db
def test_revoke_token_reports_whether_it_revoked(login):
    tokens = login()

    assert services.revoke_token(tokens["refresh"]) is True
    assert services.revoke_token(tokens["refresh"]) is False
    with pytest.raises(services.TokenInvalid):
        services.revoke_token("not-a-token")


@pytest.mark.django_db
def test_flush_expired_tokens_task_drops_only_expired_ones():
    user = UserFactory()
    live = RefreshToken.for_user(user)
    stale = RefreshToken.for_user(user)
    OutstandingToken.objects.filter(jti=stale["jti"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    BlacklistedToken.objects.create(token=OutstandingToken.objects.get(jti=stale["jti"]))

    deleted = flush_expired_tokens.apply().get()

    assert deleted == 2  # the outstanding token and its blacklist row
    assert list(OutstandingToken.objects.values_list("jti", flat=True)) == [live["jti"]]
    assert flush_expired_tokens.apply().get() == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_eight_parallel_refreshes_with_one_token_give_exactly_one_pair():
    user = UserFactory()
    token = str(RefreshToken.for_user(user))
    barrier = threading.Barrier(8)

    def attempt(_):
        barrier.wait()
        try:
            return services.refresh_access_token(token)
        except services.TokenInvalid as exc:
            return exc
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(attempt, range(8)))

    winners = [o for o in outcomes if isinstance(o, services.AccessToken)]
    assert len(winners) == 1, outcomes
    assert sum(isinstance(o, services.TokenInvalid) for o in outcomes) == 7
    # One new refresh token was issued besides the original: nothing else became outstanding.
    assert OutstandingToken.objects.filter(user=user).count() == 2
