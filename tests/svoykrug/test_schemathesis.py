"""Schemathesis over the OpenAPI schema: every operation, in process through the WSGI app.

The mobile operations are called as a logged-in customer (a JWT access token minted for each
call), the partner operations with a partner's API key. Every answer must be no 5xx, have a
documented status code and content type, and a body that matches the documented schema.

The budget is fixed so that `make test` stays fast and repeatable: Hypothesis is
derandomized and each operation gets at most MAX_EXAMPLES generated cases (positive and
negative) plus schemathesis' deterministic coverage cases. About half of the generated cases
carry ids, codes, phones and tokens of rows that exist (a hook swaps them in), so the
operations get past their lookups instead of answering 404 every time.

No operation of the schema is excluded. The webhooks (the CRMs', SMS.ru's, SendGrid's) are
plain Django views outside the schema; tests/svoykrug/test_bad_input.py throws bad bodies at them.
"""

import os
import traceback
from datetime import timedelta
from decimal import Decimal

import pytest
import schemathesis
from django.core.signals import got_request_exception
from django.utils import timezone
from hypothesis import strategies as st
from rest_framework_simplejwt.tokens import RefreshToken
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from svoykrug.wsgi import application
from tests.factories import ApiKeyFactory, BusinessFactory, LoyaltyProgramFactory, MembershipFactory, UserFactory

# A deeper run by hand: SCHEMATHESIS_MAX_EXAMPLES=200 [SCHEMATHESIS_RANDOM=1] pytest tests/svoykrug/test_schemathesis.py
MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "20"))
DETERMINISTIC = os.environ.get("SCHEMATHESIS_RANDOM") != "1"

CONFIG = schemathesis.Config.from_dict(
    {
        "suppress-health-check": ["all"],
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": DETERMINISTIC, "mode": "all", "database": "none"},
        "phases": {"stateful": {"enabled": False}},
    }
)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application, config=CONFIG)

CUSTOMER_PHONE = "+79990001122"
REFRESH_SENTINEL = "<a live refresh token of the customer>"


class World:
    """The rows the operations look up, and their ids as the hooks swap them in."""

    known: dict = {}


@pytest.fixture
def world(tiers):
    from crosspromo import services as crosspromo
    from crosspromo.services import ChainConfig
    from events import services as events
    from events.services import EventCreate
    from loyalty import services as loyalty
    from notifications import services as notifications

    cafe = LoyaltyProgramFactory(business=BusinessFactory(name="Кофейня", slug="cafe")).business
    salon = LoyaltyProgramFactory(business=BusinessFactory(name="Салон", slug="salon")).business
    owner = MembershipFactory(business=cafe).user
    customer = UserFactory(phone=CUSTOMER_PHONE)
    _key, raw_key = ApiKeyFactory(business=cafe)

    chain = crosspromo.create_chain(
        ChainConfig(
            source=salon,
            target=cafe,
            reward_kind="fixed",
            reward_value=Decimal(100),
            min_purchase_amount=Decimal(100),
            min_target_purchase=Decimal(300),
        )
    )
    crosspromo.accept_chain(chain, business=cafe)
    earning = loyalty.record_transaction(business=salon, external_id="S-1", amount=Decimal(500), phone=CUSTOMER_PHONE)
    coupon = earning.transaction.coupons_issued.get()
    loyalty.record_transaction(business=cafe, external_id="CHK-1", amount=Decimal(1000), phone=CUSTOMER_PHONE)

    starts = timezone.now() + timedelta(days=3)
    published = events.create_event(
        EventCreate(
            business=cafe, title="Дегустация", starts_at=starts, ends_at=starts + timedelta(hours=2), capacity=5
        ),
        owner,
    )
    proposed = events.create_event(
        EventCreate(
            business=cafe,
            title="Мастер-класс",
            starts_at=starts,
            ends_at=starts + timedelta(hours=2),
            capacity=5,
            propose=True,
            vote_threshold=3,
            voting_deadline=timezone.now() + timedelta(hours=24),
        ),
        owner,
    )
    device = notifications.register_device(user=customer, token="fcm-token-known", platform="android")

    World.known = {
        "customer": customer,
        "api_key": raw_key,
        "id": {
            "/api/v1/businesses/{id}/": [str(cafe.pk), str(salon.pk)],
            "/api/v1/events/{id}/": [published.pk, proposed.pk],
            "/api/v1/events/{id}/register/": [published.pk, proposed.pk],
            "/api/v1/events/{id}/cancel/": [published.pk, proposed.pk],
            "/api/v1/events/{id}/vote/": [published.pk, proposed.pk],
            "/api/v1/me/coupons/{id}/": [coupon.pk],
        },
        "token": [device.token],
        "code": [coupon.code, coupon.qr_payload],
        "phone": [CUSTOMER_PHONE, "89990001122"],
        "external_id": ["CHK-1", "S-1"],
    }
    yield World.known
    World.known = {}


@schema.hook
def flatmap_path_parameters(context, path_parameters):
    """Half the time, the path names a row that exists."""
    known = World.known
    if not known or not path_parameters:
        return st.just(path_parameters)
    return st.one_of(st.just(path_parameters), _one_of_known(path_parameters, known, context))


def _one_of_known(path_parameters, known, context):
    choices = {}
    for name in path_parameters:
        values = known["id"].get(context.operation.path) if name == "id" else known.get(name)
        choices[name] = st.sampled_from(values) if values else st.just(path_parameters[name])
    return st.fixed_dictionaries(choices)


@schema.hook
def flatmap_body(context, body):
    """Half the time, a body names the customer's phone, a live refresh token and a check the
    partner can record, so that purchases, quotes and logouts get past validation."""
    if not isinstance(body, dict):
        return st.just(body)
    swaps = {}
    if "phone" in body:
        swaps["phone"] = CUSTOMER_PHONE
    if "amount" in body:
        swaps["amount"] = "1250.00"
    if "redeem" in body:
        swaps["redeem"] = "0.00"
    if "refresh" in body:
        swaps["refresh"] = REFRESH_SENTINEL
    if not swaps:
        return st.just(body)
    valid = {name: value for name, value in body.items() if name != "occurred_at"} | swaps
    return st.sampled_from([body, valid])


@pytest.fixture
def server_errors():
    """The tracebacks of exceptions the views raised, to show with a 500."""
    errors = []

    def record(sender, request=None, **kwargs):
        errors.append(traceback.format_exc())

    got_request_exception.connect(record)
    yield errors
    got_request_exception.disconnect(record)


@schema.parametrize()
@pytest.mark.django_db(transaction=True)  # the calls go through the WSGI handler, which closes the connection
def test_every_operation_answers_as_documented(case, world, server_errors, sms):
    customer = world["customer"]
    if case.operation.path.startswith("/api/v1/partner/"):
        headers = {"Authorization": f"Api-Key {world['api_key']}"}
    else:  # the mobile app's operations; the public ones ignore the token
        headers = {"Authorization": f"Bearer {RefreshToken.for_user(customer).access_token}"}
    if isinstance(case.body, dict) and case.body.get("refresh") == REFRESH_SENTINEL:
        case.body["refresh"] = str(RefreshToken.for_user(customer))

    response = case.call(headers=headers)

    try:
        case.validate_response(response, checks=CHECKS, headers=headers)
    except Exception:
        for trace in server_errors:  # what the view raised, for a 500
            print(trace)
        raise


def test_every_operation_of_the_schema_is_tested():
    """No operation is left out: the schema loads whole, and none is excluded."""
    raw = schema.raw_schema["paths"]
    documented = {(method.upper(), path) for path, item in raw.items() for method in item if method != "parameters"}
    operations = {(result.ok().method.upper(), result.ok().path) for result in schema.get_all_operations()}

    assert operations == documented
    assert len(operations) >= 30
