"""Every door answers bad input in the one error shape, and nothing produces a 500."""

import json

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

OTP_URL = "/api/v1/auth/otp/"


def assert_error_shape(response, status):
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


@pytest.mark.django_db
def test_malformed_json(api_client):
    error = assert_error_shape(api_client.post(OTP_URL, data="{", content_type="application/json"), 400)

    assert error["code"] == "malformed_request"


@pytest.mark.django_db
@pytest.mark.parametrize("body", ["[]", '"+79991234567"', "null", "42", '{"phone": null}', '{"phone": ["+7"]}'])
def test_json_of_the_wrong_shape(api_client, body):
    error = assert_error_shape(api_client.post(OTP_URL, data=body, content_type="application/json"), 400)

    assert error["code"] == "invalid"


@pytest.mark.django_db
def test_missing_field_is_named(api_client):
    error = assert_error_shape(api_client.post(OTP_URL, {}, format="json"), 400)

    assert list(error["fields"]) == ["phone"]


@pytest.mark.django_db
def test_form_bodies_are_refused_as_unsupported(api_client):
    error = assert_error_shape(
        api_client.post(OTP_URL, "phone=1", content_type="application/x-www-form-urlencoded"), 415
    )

    assert error["code"] == "unsupported_media_type"


@pytest.mark.django_db
def test_wrong_method(api_client):
    error = assert_error_shape(api_client.get(OTP_URL), 405)

    assert error["code"] == "method_not_allowed"


@pytest.mark.django_db
def test_unknown_api_path_answers_json(client, settings):
    settings.DEBUG = False

    error = assert_error_shape(client.get("/api/v1/no-such-thing/"), 404)

    assert error["code"] == "not_found"


@pytest.mark.django_db
def test_bad_bearer_token(api_client):
    error = assert_error_shape(api_client.get("/api/v1/me/", HTTP_AUTHORIZATION="Bearer not.a.token"), 401)

    assert error["code"] == "token_not_valid"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)
auth_paths = ["/api/v1/auth/otp/", "/api/v1/auth/otp/verify/", "/api/v1/auth/token/refresh/"]


@pytest.mark.django_db
@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(auth_paths),
    payload=st.one_of(
        json_values,
        st.fixed_dictionaries({"phone": json_values}),
        st.fixed_dictionaries({"code_id": json_values, "code": json_values}),
        st.fixed_dictionaries({"refresh": json_values}),
    ),
)
def test_no_json_input_produces_a_500(api_client, path, payload, monkeypatch):
    monkeypatch.setattr("notifications.services.get_sms_backend", lambda: _NullSms())

    response = api_client.post(path, data=json.dumps(payload), content_type="application/json", REMOTE_ADDR="10.7.7.7")

    assert response.status_code < 500, response.content
    if response.status_code >= 400:
        assert_error_shape(response, response.status_code)


class _NullSms:
    name = "null"

    def send(self, phone, text):
        from notifications.channels.sms import SmsReceipt

        return SmsReceipt(provider=self.name, message_id="0")


@pytest.mark.django_db
def test_unknown_page_outside_the_api_is_a_readable_page(client, settings):
    settings.DEBUG = False

    response = client.get("/no-such-page/", HTTP_ACCEPT_LANGUAGE="ru")

    assert response.status_code == 404
    assert "Страница не найдена" in response.text
