"""The customer's own profile: read, change, close."""

import pytest

from accounts.models import User

ME_URL = "/api/v1/me/"


def bearer(access):
    return {"HTTP_AUTHORIZATION": f"Bearer {access}"}


@pytest.mark.django_db
def test_profile_needs_a_token(api_client):
    response = api_client.get(ME_URL)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


@pytest.mark.django_db
def test_messages_speak_russian_by_default_and_english_on_request(api_client):
    russian = api_client.get(ME_URL).json()["error"]["message"]
    english = api_client.get(ME_URL, HTTP_ACCEPT_LANGUAGE="en").json()["error"]["message"]

    assert russian == "Учетные данные не были предоставлены."
    assert english == "Authentication credentials were not provided."


@pytest.mark.django_db
def test_profile_changes_and_phone_stays(api_client, login):
    tokens = login()

    response = api_client.patch(
        ME_URL,
        {"first_name": "Ольга", "email": "Olga@Example.RU", "birth_date": "1990-05-17", "phone": "+79990000000"},
        format="json",
        **bearer(tokens["access"]),
    )

    assert response.status_code == 200
    body = response.json()
    assert body["first_name"] == "Ольга"
    assert body["birth_date"] == "1990-05-17"
    assert body["phone"] == "+79991234567"
    user = User.objects.get(pk=tokens["user"]["id"])
    assert user.phone == "+79991234567"
    assert user.email == "Olga@example.ru"


@pytest.mark.django_db
def test_marketing_consent_is_stamped_when_it_changes(api_client, login):
    tokens = login()

    given = api_client.patch(ME_URL, {"marketing_consent": True}, format="json", **bearer(tokens["access"])).json()
    unchanged = api_client.patch(ME_URL, {"marketing_consent": True}, format="json", **bearer(tokens["access"])).json()

    assert given["marketing_consent"] is True
    assert given["marketing_consent_at"] is not None
    assert unchanged["marketing_consent_at"] == given["marketing_consent_at"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"birth_date": "2999-01-01"}, "birth_date"),
        ({"birth_date": "31.12.1990"}, "birth_date"),
        ({"first_name": "x" * 101}, "first_name"),
        ({"marketing_consent": "maybe"}, "marketing_consent"),
    ],
)
def test_invalid_profile_fields_are_named_and_nothing_changes(api_client, login, payload, field):
    tokens = login()

    response = api_client.patch(ME_URL, payload, format="json", **bearer(tokens["access"]))

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert field in response.json()["error"]["fields"]
    user = User.objects.get(pk=tokens["user"]["id"])
    assert (user.email, user.birth_date, user.first_name) == ("", None, "")


@pytest.mark.django_db
def test_closing_the_account_wipes_personal_data_and_revokes_tokens(api_client, login):
    tokens = login()
    api_client.patch(
        ME_URL, {"first_name": "Ольга", "email": "olga@example.ru"}, format="json", **bearer(tokens["access"])
    )

    response = api_client.delete(ME_URL, **bearer(tokens["access"]))

    assert response.status_code == 204
    user = User.objects.get(pk=tokens["user"]["id"])  # the row stays for the financial records
    assert user.phone is None
    assert (user.first_name, user.last_name, user.email, user.birth_date) == ("", "", "", None)
    assert user.is_active is False
    assert user.deleted_at is not None
    assert api_client.get(ME_URL, **bearer(tokens["access"])).status_code == 401
    refresh = api_client.post("/api/v1/auth/token/refresh/", {"refresh": tokens["refresh"]}, format="json")
    assert refresh.status_code == 401


@pytest.mark.django_db
def test_a_closed_account_phone_can_join_again_as_a_new_person(api_client, login):
    old = login()
    api_client.delete(ME_URL, **bearer(old["access"]))

    new = login()

    assert new["user"]["is_new"] is True
    assert new["user"]["id"] != old["user"]["id"]
    assert User.objects.filter(pk=old["user"]["id"], phone__isnull=True).exists()
