"""The portal's login: phone, then the SMS code; only members of an active business enter."""

from datetime import UTC, datetime

import pytest
import time_machine
from django.contrib.messages import get_messages

from accounts.models import User
from accounts.portal import SESSION_BUSINESS, SESSION_PENDING_LOGIN
from tests.factories import BusinessFactory, MembershipFactory, UserFactory

LOGIN = "/portal/login/"
CODE = "/portal/login/code/"
NO_ACCESS = (
    "This phone number has no access to the partner portal. "
    "If you work at a partner of the circle, ask its owner to add you."
)


def ask_code(client, phone, ip="10.0.0.1", **extra):
    return client.post(LOGIN, {"phone": phone, **extra}, REMOTE_ADDR=ip)


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def flashed(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def logged_in_user_id(client):
    return client.session.get("_auth_user_id")


@pytest.mark.django_db
def test_login_page_renders_the_phone_form(client):
    response = client.get(LOGIN)

    assert response.status_code == 200
    html = response.content.decode()
    assert "Partner portal" in html
    assert 'name="phone"' in html
    assert "csrfmiddlewaretoken" in html


@pytest.mark.django_db
def test_right_code_logs_a_member_in_to_their_business(client, sms, owner, business_a):
    response = ask_code(client, "8 (999) 000-01-01")

    assert response.status_code == 302
    assert response["Location"] == CODE
    assert sms.sent[0][0] == "+79990000101"
    page = client.get(CODE)
    assert page.status_code == 200
    assert "We have sent a code by SMS to +7\u00a0999\u00a0000-01-01." in page.content.decode()

    response = client.post(CODE, {"code": sms.last_code()})

    assert response.status_code == 302
    assert response["Location"] == "/portal/"
    assert logged_in_user_id(client) == str(owner.pk)
    assert client.session[SESSION_BUSINESS] == str(business_a.pk)
    assert SESSION_PENDING_LOGIN not in client.session
    dashboard = client.get("/portal/")
    assert dashboard.status_code == 200
    assert "Кофейня «Зерно»" in dashboard.content.decode()


@pytest.mark.django_db
def test_wrong_code_says_how_many_attempts_are_left_and_the_right_one_still_works(client, sms, owner):
    ask_code(client, owner.phone)
    code = sms.last_code()

    first = client.post(CODE, {"code": wrong(code)})
    assert first.status_code == 200
    assert first.context["form"].errors == {"code": ["The code is wrong. 4 attempts left."]}
    assert "The code is wrong. 4 attempts left." in first.content.decode()
    assert logged_in_user_id(client) is None
    for _ in range(2):
        client.post(CODE, {"code": wrong(code)})
    fourth = client.post(CODE, {"code": wrong(code)})
    assert fourth.context["form"].errors == {"code": ["The code is wrong. 1 attempt left."]}

    response = client.post(CODE, {"code": code})

    assert response.status_code == 302
    assert logged_in_user_id(client) == str(owner.pk)


@pytest.mark.django_db
def test_too_many_wrong_codes_kill_the_code_and_send_back_to_the_phone_step(client, sms, owner):
    ask_code(client, owner.phone)
    code = sms.last_code()
    for _ in range(4):
        client.post(CODE, {"code": wrong(code)})

    response = client.post(CODE, {"code": wrong(code)})

    assert response.status_code == 302
    assert response["Location"] == LOGIN
    assert flashed(response) == ["Too many wrong codes. Ask for a new one."]
    assert SESSION_PENDING_LOGIN not in client.session
    assert client.get(CODE)["Location"] == LOGIN
    assert logged_in_user_id(client) is None


@pytest.mark.django_db
def test_code_that_is_not_digits_is_a_form_error_and_costs_no_attempt(client, sms, owner):
    ask_code(client, owner.phone)

    response = client.post(CODE, {"code": "12ab"})

    assert response.status_code == 200
    assert response.context["form"].errors == {"code": ["Enter the digits of the code."]}
    assert client.post(CODE, {"code": wrong(sms.last_code())}).context["form"].errors == {
        "code": ["The code is wrong. 4 attempts left."]
    }


@pytest.mark.django_db
def test_expired_code_is_refused(client, sms, owner, locmem_cache):
    with time_machine.travel(datetime(2026, 3, 15, 9, 0, tzinfo=UTC), tick=False) as traveller:
        ask_code(client, owner.phone)
        traveller.shift(301)

        response = client.post(CODE, {"code": sms.last_code()})

    assert response["Location"] == LOGIN
    assert flashed(response) == ["The code has expired. Ask for a new one."]
    assert logged_in_user_id(client) is None


@pytest.mark.django_db
def test_existing_customer_without_membership_is_refused_after_the_code(client, sms):
    customer = UserFactory(phone="+79991234567")

    response = ask_code(client, customer.phone)
    assert response["Location"] == CODE  # the phone step does not tell who has access
    assert len(sms.sent) == 1
    response = client.post(CODE, {"code": sms.last_code()})

    assert response.status_code == 302
    assert response["Location"] == LOGIN
    assert flashed(response) == [NO_ACCESS]
    assert logged_in_user_id(client) is None
    assert client.get("/portal/")["Location"] == "/portal/login/?next=/portal/"


@pytest.mark.django_db
def test_unknown_phone_gets_a_code_is_refused_after_it_and_no_account_is_made(client, sms):
    response = ask_code(client, "+79997776655")
    assert response["Location"] == CODE
    assert sms.sent[0][0] == "+79997776655"

    response = client.post(CODE, {"code": sms.last_code()})

    assert response["Location"] == LOGIN
    assert flashed(response) == [NO_ACCESS]
    assert logged_in_user_id(client) is None
    assert not User.objects.filter(phone="+79997776655").exists()


@pytest.mark.django_db
def test_member_of_an_inactive_business_only_is_refused(client, sms):
    membership = MembershipFactory(user__phone="+79990000301", business=BusinessFactory(is_active=False))

    ask_code(client, membership.user.phone)
    response = client.post(CODE, {"code": sms.last_code()})

    assert flashed(response) == [NO_ACCESS]
    assert logged_in_user_id(client) is None


@pytest.mark.django_db
def test_disabled_account_is_refused(client, sms, owner):
    User.objects.filter(pk=owner.pk).update(is_active=False)

    ask_code(client, owner.phone)
    response = client.post(CODE, {"code": sms.last_code()})

    assert flashed(response) == ["This account is disabled. Contact support."]
    assert logged_in_user_id(client) is None


@pytest.mark.django_db
def test_invalid_phone_is_a_form_error_and_no_sms_is_sent(client, sms):
    response = ask_code(client, "12345")

    assert response.status_code == 200
    assert response.context["form"].errors == {"phone": ["This is not a valid phone number."]}
    assert sms.sent == []


@pytest.mark.django_db
def test_a_new_code_within_the_cooldown_is_refused_with_the_wait(client, sms, owner):
    with time_machine.travel(datetime(2026, 3, 15, 9, 0, tzinfo=UTC), tick=False):
        ask_code(client, owner.phone)

        response = ask_code(client, owner.phone)

    assert response.status_code == 200
    assert response.context["form"].errors == {
        "phone": ["A code was sent a moment ago. Wait before asking for a new one. You can try again in 60 seconds."]
    }
    assert len(sms.sent) == 1


@pytest.mark.django_db
def test_the_client_ip_limit_of_the_app_applies(client, sms, settings):
    settings.OTP_MAX_PER_IP_PER_HOUR = 1
    ask_code(client, "+79991112201", ip="10.9.9.9")

    response = ask_code(client, "+79991112202", ip="10.9.9.9")

    assert response.status_code == 200
    (error,) = response.context["form"].errors["phone"]
    assert error.startswith("Too many codes requested from this network. Try again later. You can try again in ")
    assert len(sms.sent) == 1
    assert ask_code(client, "+79991112202", ip="10.1.1.1")["Location"] == CODE


@pytest.mark.django_db
def test_login_returns_to_the_page_asked_for(client, sms, owner):
    response = client.get("/portal/customers/")
    assert response.status_code == 302
    assert response["Location"] == "/portal/login/?next=/portal/customers/"
    page = client.get(response["Location"])
    assert 'name="next" value="/portal/customers/"' in page.content.decode()

    ask_code(client, owner.phone, next="/portal/customers/")
    response = client.post(CODE, {"code": sms.last_code()})

    assert response["Location"] == "/portal/customers/"


@pytest.mark.django_db
def test_login_does_not_redirect_outside_the_portal(client, sms, owner):
    ask_code(client, owner.phone, next="https://evil.example/portal/")
    response = client.post(CODE, {"code": sms.last_code()})

    assert response["Location"] == "/portal/"


@pytest.mark.django_db
def test_code_step_without_a_phone_step_goes_back(client):
    assert client.get(CODE)["Location"] == LOGIN
    assert client.post(CODE, {"code": "123456"})["Location"] == LOGIN


@pytest.mark.django_db
def test_a_logged_in_member_visiting_the_login_page_goes_to_the_overview(client, login, owner):
    login(owner)

    assert client.get(LOGIN)["Location"] == "/portal/"


@pytest.mark.django_db
def test_logout_is_a_post_and_ends_the_session(client, login, owner):
    login(owner)
    assert client.get("/portal/logout/").status_code == 405
    assert logged_in_user_id(client) == str(owner.pk)

    response = client.post("/portal/logout/")

    assert response.status_code == 302
    assert response["Location"] == LOGIN
    assert flashed(response) == ["You have logged out."]
    assert logged_in_user_id(client) is None
    assert client.get("/portal/")["Location"] == "/portal/login/?next=/portal/"
