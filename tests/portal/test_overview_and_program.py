"""The overview (dashboard) and the program page with its change history."""

from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.contrib.messages import get_messages

from loyalty import services
from loyalty.models import LoyaltyProgram, ProgramChange

MSK = ZoneInfo("Europe/Moscow")
NOW = datetime(2026, 3, 15, 12, 0, tzinfo=MSK)


def at(moment):
    return time_machine.travel(moment, tick=False)


def flashed(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


PROGRAM_FORM = {
    "accrual_rate": "5.00",
    "max_redeem_share": "30.00",
    "bonus_lifetime_days": "365",
    "hold_days": "0",
    "welcome_bonus": "0.00",
    "birthday_bonus": "0.00",
    "is_active": "on",
}


# --- Overview -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_overview_counts_today_and_this_month_in_the_business_time_zone(
    client, login, owner, business_a, business_b, buy
):
    with at(datetime(2026, 2, 20, 15, 0, tzinfo=MSK)):
        buy(business_a, "+79991110003", "300.00")  # last month: 15.00 accrued
    with at(datetime(2026, 3, 2, 10, 0, tzinfo=MSK)):
        buy(business_a, "+79991110001", "800.00")  # this month: 40.00
    with at(datetime(2026, 3, 14, 23, 30, tzinfo=MSK)):
        buy(business_a, "+79991110002", "100.00")  # yesterday in Moscow (20:30 UTC): 5.00
    with at(datetime(2026, 3, 15, 0, 30, tzinfo=MSK)):
        buy(business_a, "+79991110001", "1000.00")  # today in Moscow, yesterday in UTC: 50.00
    with at(NOW):
        buy(business_a, "+79991110002", "500.00")  # 25.00
        buy(business_a, "+79991110001", "200.00", redeem="60.00")  # pays 140.00: 7.00
        buy(business_b, "+79991110003", "999.00")  # another business: not counted
        services.adjust_balance(
            user=owner, amount=Decimal("10.00"), reason="gift", created_by=owner, business=business_a
        )
        services.adjust_balance(
            user=owner, amount=Decimal("3.00"), reason="gift", created_by=owner, business=business_b
        )
        login(owner)

        response = client.get("/portal/")

    assert response.status_code == 200
    context = response.context
    assert context["today_count"] == 3
    assert context["today_total"] == Decimal("1700.00")
    assert context["month_count"] == 5
    assert context["month_total"] == Decimal("2600.00")
    assert context["customers_count"] == 3
    assert context["issued"] == Decimal("137.00")  # 40 + 5 + 50 + 25 + 7 + the 10.00 adjustment
    assert context["spent"] == Decimal("60.00")
    html = response.content.decode()
    assert "1,700.00\u00a0₽" in html
    assert "2,600.00\u00a0₽" in html
    assert "137.00\u00a0₽" in html
    assert "60.00\u00a0₽" in html
    # The latest purchases, shown in Moscow time.
    assert "15.03.2026 00:30" in html
    assert "999.00" not in html


@pytest.mark.django_db
def test_overview_shows_times_in_the_business_own_time_zone(client, login, owner, business_a, buy):
    business_a.time_zone = "Asia/Yekaterinburg"  # UTC+5, Moscow is UTC+3
    business_a.save()
    with at(datetime(2026, 3, 14, 20, 30, tzinfo=UTC)):
        buy(business_a, "+79991110001", "100.00")
    with at(datetime(2026, 3, 15, 9, 0, tzinfo=UTC)):
        login(owner)
        response = client.get("/portal/")

    assert "15.03.2026 01:30" in response.content.decode()
    assert response.context["today_count"] == 1


@pytest.mark.django_db
def test_overview_of_a_new_business_shows_zeros(client, login, owner):
    login(owner)

    response = client.get("/portal/")

    assert response.status_code == 200
    assert response.context["today_total"] == Decimal("0.00")
    assert response.context["issued"] == Decimal("0.00")
    assert "No purchases." in response.content.decode()


# --- Program --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_program_page_shows_the_terms(client, login, owner):
    login(owner)

    response = client.get("/portal/program/")

    assert response.status_code == 200
    form = response.context["form"]
    assert form["accrual_rate"].value() == Decimal("5.00")
    assert form["max_redeem_share"].value() == Decimal("30.00")
    html = response.content.decode()
    assert 'action="/portal/program/edit/"' in html
    assert "Accrual rate, %" in html
    assert "The terms have not been changed yet." in html


@pytest.mark.django_db
@pytest.mark.parametrize("editor", ["owner", "manager"])
def test_owner_and_manager_change_the_program_and_the_history_shows_who_and_what(
    client, login, business_a, editor, request
):
    person = request.getfixturevalue(editor)
    login(person)

    with at(NOW):
        response = client.post(
            "/portal/program/edit/", {**PROGRAM_FORM, "accrual_rate": "7.5", "hold_days": "3", "is_active": ""}
        )

    assert response.status_code == 302
    assert response["Location"] == "/portal/program/"
    assert flashed(response) == ["The program is saved."]
    program = LoyaltyProgram.objects.get(business=business_a)
    assert program.accrual_rate == Decimal("7.50")
    assert program.hold_days == 3
    assert program.is_active is False
    (change,) = ProgramChange.objects.all()
    assert change.changed_by == person
    assert change.changes == {"accrual_rate": ["5.00", "7.50"], "hold_days": [0, 3], "is_active": [True, False]}

    page = client.get("/portal/program/")
    rows = page.context["history"][0].rows
    assert rows == [
        ("Accrual rate, %", "5.00", "7.50"),
        ("Hold before bonuses can be spent, days", "0", "3"),
        ("The program is on", "yes", "no"),
    ]
    html = page.content.decode()
    assert "15.03.2026 12:00" in html
    assert f"{person.first_name} Петрова" in html
    assert "Accrual rate, %: 5.00" in html


@pytest.mark.django_db
def test_saving_unchanged_terms_records_no_change(client, login, owner):
    login(owner)

    response = client.post("/portal/program/edit/", PROGRAM_FORM)

    assert flashed(response) == ["Nothing changed."]
    assert ProgramChange.objects.count() == 0


@pytest.mark.django_db
def test_invalid_terms_are_refused_and_nothing_changes(client, login, owner, business_a):
    login(owner)

    response = client.post("/portal/program/edit/", {**PROGRAM_FORM, "accrual_rate": "150", "bonus_lifetime_days": "0"})

    assert response.status_code == 400
    assert response.context["form"].errors == {
        "accrual_rate": ["Ensure this value is less than or equal to 100."],
        "bonus_lifetime_days": ["Ensure this value is greater than or equal to 1."],
    }
    program = LoyaltyProgram.objects.get(business=business_a)
    assert program.accrual_rate == Decimal("5.00")
    assert program.bonus_lifetime_days == 365
    assert ProgramChange.objects.count() == 0


@pytest.mark.django_db
def test_program_page_of_a_business_without_a_program_does_not_create_one(client, login, owner, business_a):
    LoyaltyProgram.objects.filter(business=business_a).delete()
    login(owner)

    response = client.get("/portal/program/")

    assert response.status_code == 200
    assert response.context["form"]["accrual_rate"].value() == Decimal("5.00")
    assert not LoyaltyProgram.objects.filter(business=business_a).exists()
