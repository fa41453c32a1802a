"""Staff run the loyalty app from Django admin: programs keep their history, balances change
only through the ledger, and the ledger's rows cannot be changed or deleted."""

import uuid

import pytest
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import ApiKey, User
from accounts.services import authenticate_api_key
from loyalty import services
from loyalty.models import BonusAccount, BonusLot, LedgerEntry, LoyaltyProgram, ProgramChange, Refund
from tests.factories import ApiKeyFactory, BusinessFactory, LoyaltyProgramFactory, UserFactory
from tests.loyalty.conftest import D

pytestmark = pytest.mark.django_db

ACCOUNTS = "/admin/loyalty/bonusaccount/"
LEDGER = "/admin/loyalty/ledgerentry/"


@pytest.fixture
def admin_user(db):
    return User.objects.create_superuser(phone="+79990000001", password="correct horse battery")


@pytest.fixture
def staff_client(client, admin_user):
    client.force_login(admin_user)
    return client


def buy(business, customer, external_id, amount, **kwargs):
    return services.record_transaction(
        business=business, customer=customer, external_id=external_id, amount=D(amount), **kwargs
    )


def levels(response):
    """(level, text) of each message: tests check levels and data, not wording (it gets translated)."""
    return [(message.level_tag, str(message)) for message in get_messages(response.wsgi_request)]


def program_form(program, **changes):
    data = {
        "accrual_rate": program.accrual_rate,
        "max_redeem_share": program.max_redeem_share,
        "bonus_lifetime_days": program.bonus_lifetime_days,
        "hold_days": program.hold_days,
        "welcome_bonus": program.welcome_bonus,
        "birthday_bonus": program.birthday_bonus,
        "is_active": "on" if program.is_active else "",
        "changes-TOTAL_FORMS": "0",
        "changes-INITIAL_FORMS": "0",
    }
    data.update(changes)
    return {key: value for key, value in data.items() if value != ""}


# --- Programs and tiers ---------------------------------------------------------------------


def test_program_change_goes_through_the_service_and_is_kept_in_the_history(staff_client, admin_user, cafe):
    program = LoyaltyProgram.objects.get(business=cafe)

    response = staff_client.post(
        f"/admin/loyalty/loyaltyprogram/{program.pk}/change/", program_form(program, accrual_rate="7.50")
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    program.refresh_from_db()
    assert program.accrual_rate == D("7.50")
    [change] = ProgramChange.objects.filter(program=program)
    assert change.changes == {"accrual_rate": ["5.00", "7.50"]}
    assert change.changed_by == admin_user


def test_program_history_is_shown_inline_and_read_only(staff_client, admin_user, cafe):
    services.update_program(business=cafe, changed_by=admin_user, hold_days=3)
    program = LoyaltyProgram.objects.get(business=cafe)

    response = staff_client.get(f"/admin/loyalty/loyaltyprogram/{program.pk}/change/")

    assert response.status_code == 200
    [history] = [
        formset for formset in response.context["inline_admin_formsets"] if formset.opts.model is ProgramChange
    ]
    assert history.has_add_permission is False
    assert history.has_change_permission is False
    assert history.has_delete_permission is False
    assert "hold_days" in response.text and "+79990000001" in response.text


def test_saving_an_unchanged_program_records_nothing(staff_client, cafe):
    program = LoyaltyProgram.objects.get(business=cafe)

    response = staff_client.post(f"/admin/loyalty/loyaltyprogram/{program.pk}/change/", program_form(program))

    assert response.status_code == 302
    assert ProgramChange.objects.count() == 0


def test_adding_a_program_records_the_terms_that_differ_from_the_defaults(staff_client, admin_user, tiers):
    business = BusinessFactory(name="Пекарня")
    data = program_form(LoyaltyProgram(), welcome_bonus="150.00", business=str(business.pk))

    response = staff_client.post("/admin/loyalty/loyaltyprogram/add/", data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    program = LoyaltyProgram.objects.get(business=business)
    assert program.welcome_bonus == D("150.00")
    assert program.accrual_rate == D("5.00")
    [change] = ProgramChange.objects.filter(program=program)
    assert change.changes == {"welcome_bonus": ["0.00", "150.00"]}
    assert change.changed_by == admin_user


def test_an_invalid_program_is_refused_and_nothing_changes(staff_client, cafe):
    program = LoyaltyProgram.objects.get(business=cafe)

    response = staff_client.post(
        f"/admin/loyalty/loyaltyprogram/{program.pk}/change/", program_form(program, accrual_rate="150")
    )

    assert response.status_code == 200
    assert "accrual_rate" in response.context["adminform"].form.errors
    program.refresh_from_db()
    assert program.accrual_rate == D("5.00")
    assert ProgramChange.objects.count() == 0


def test_programs_filter_and_search(staff_client, tiers):
    LoyaltyProgramFactory(business=BusinessFactory(name="Кофейня Зерно"), is_active=True)
    LoyaltyProgramFactory(business=BusinessFactory(name="Салон Лотос"), is_active=False)

    searched = staff_client.get("/admin/loyalty/loyaltyprogram/", {"q": "Зерно"})
    filtered = staff_client.get("/admin/loyalty/loyaltyprogram/", {"is_active__exact": "0"})

    assert "Кофейня Зерно" in searched.text and "Салон Лотос" not in searched.text
    assert "Салон Лотос" in filtered.text and "Кофейня Зерно" not in filtered.text


def test_tiers_are_editable(staff_client, tiers):
    silver = tiers["Silver"]

    response = staff_client.post(
        f"/admin/loyalty/statustier/{silver.pk}/change/",
        {"name": "Silver", "threshold": "20000.00", "accrual_uplift": "1.50", "extra_redeem_share": "5.00"},
    )

    assert response.status_code == 302
    silver.refresh_from_db()
    assert silver.threshold == D("20000.00")
    assert silver.accrual_uplift == D("1.50")


# --- Purchases ------------------------------------------------------------------------------


def test_purchases_are_read_only(staff_client, cafe, customer):
    purchase = buy(cafe, customer, "p1", "1000.00").transaction
    url = f"/admin/loyalty/transaction/{purchase.pk}/"

    assert staff_client.get(url + "change/").status_code == 200
    assert staff_client.post(url + "change/", {"gross_amount": "1.00"}).status_code == 403
    assert staff_client.post(url + "delete/", {"post": "yes"}).status_code == 403
    assert staff_client.get("/admin/loyalty/transaction/add/").status_code == 403
    purchase.refresh_from_db()
    assert purchase.gross_amount == D("1000.00")


def test_purchases_search_by_external_id_and_by_phone_as_typed(staff_client, cafe, customer):
    buy(cafe, customer, "CHECK-7781", "100.00")
    buy(cafe, UserFactory(phone="+79990004455"), "CHECK-9900", "100.00")

    by_id = staff_client.get("/admin/loyalty/transaction/", {"q": "7781"})
    by_phone = staff_client.get("/admin/loyalty/transaction/", {"q": "8 (999) 000-44-55"})

    assert "CHECK-7781" in by_id.text and "CHECK-9900" not in by_id.text
    assert "CHECK-9900" in by_phone.text and "CHECK-7781" not in by_phone.text


def test_purchases_filter_by_status_and_business(staff_client, cafe, salon, customer):
    buy(cafe, customer, "CAFE-1", "100.00")
    buy(salon, customer, "SALON-1", "100.00")
    services.refund_transaction(business=salon, external_id="SALON-1")

    refunded = staff_client.get("/admin/loyalty/transaction/", {"status__exact": "refunded"})
    at_cafe = staff_client.get("/admin/loyalty/transaction/", {"business__id__exact": str(cafe.pk)})

    assert "SALON-1" in refunded.text and "CAFE-1" not in refunded.text
    assert "CAFE-1" in at_cafe.text and "SALON-1" not in at_cafe.text


def test_a_purchase_shows_its_refunds_inline(staff_client, cafe, customer):
    purchase = buy(cafe, customer, "p1", "1000.00").transaction
    services.refund_transaction(business=cafe, external_id="p1", amount=D("400.00"), refund_id="R-42")

    response = staff_client.get(f"/admin/loyalty/transaction/{purchase.pk}/change/")

    assert response.status_code == 200
    assert "R-42" in response.text
    [refunds] = [formset for formset in response.context["inline_admin_formsets"] if formset.opts.model is Refund]
    assert refunds.has_change_permission is False


# --- Accounts and the adjustment action -----------------------------------------------------


def test_accounts_are_read_only_and_show_their_lots(staff_client, cafe, customer):
    buy(cafe, customer, "p1", "1000.00")
    account = BonusAccount.objects.get(user=customer)

    page = staff_client.get(f"{ACCOUNTS}{account.pk}/change/")
    refused = staff_client.post(f"{ACCOUNTS}{account.pk}/change/", {"balance": "99999.00"})

    assert page.status_code == 200
    [lots] = [formset for formset in page.context["inline_admin_formsets"] if formset.opts.model is BonusLot]
    assert len(lots.formset.forms) == 1
    assert refused.status_code == 403
    assert staff_client.post(f"{ACCOUNTS}{account.pk}/delete/", {"post": "yes"}).status_code == 403
    account.refresh_from_db()
    assert account.balance == D("50.00")


def test_accounts_search_by_phone_and_filter_by_tier(staff_client, cafe, customer, tiers):
    buy(cafe, customer, "p1", "100.00")
    buy(cafe, UserFactory(phone="+79990004455"), "p2", "20000.00")

    by_phone = staff_client.get(ACCOUNTS, {"q": "1112233"})
    silver = staff_client.get(ACCOUNTS, {"tier__id__exact": str(tiers["Silver"].pk)})

    assert "+79991112233" in by_phone.text and "+79990004455" not in by_phone.text
    assert "+79990004455" in silver.text and "+79991112233" not in silver.text


def adjust(client, accounts, **fields):
    selected = [str(account.pk) for account in accounts]
    confirm = client.post(ACCOUNTS, {"action": "adjust_balance", "_selected_action": selected, "index": "0"})
    assert confirm.status_code == 200
    assert "Adjust" in confirm.text or "amount" in confirm.text
    token = confirm.context["form"].initial["token"]
    data = {"action": "adjust_balance", "_selected_action": selected, "apply": "1", "token": str(token), **fields}
    return client.post(ACCOUNTS, data), token


def test_adjust_action_shows_a_form_then_adjusts_through_the_ledger(
    staff_client, admin_user, cafe, customer, books_balance
):
    buy(cafe, customer, "p1", "1000.00")
    account = BonusAccount.objects.get(user=customer)

    response, _token = adjust(staff_client, [account], amount="150.00", reason="Компенсация за сбой")

    assert response.status_code == 302
    account.refresh_from_db()
    assert account.balance == D("200.00")
    [entry] = LedgerEntry.objects.filter(account=account, kind=LedgerEntry.Kind.ADJUSTMENT)
    assert entry.amount == D("150.00")
    assert entry.reason == "Компенсация за сбой"
    assert entry.created_by == admin_user
    assert entry.business is None
    assert entry.lot.remaining == D("150.00")
    [(level, text)] = levels(response)
    assert level == "success" and "1" in text
    books_balance()


def test_adjust_action_can_name_the_issuing_business(staff_client, cafe, customer):
    buy(cafe, customer, "p1", "1000.00")
    account = BonusAccount.objects.get(user=customer)

    adjust(staff_client, [account], amount="30.00", reason="Акция", business=str(cafe.pk))

    entry = LedgerEntry.objects.get(account=account, kind=LedgerEntry.Kind.ADJUSTMENT)
    assert entry.business == cafe
    assert entry.lot.business == cafe


def test_adjust_action_refuses_an_adjustment_without_a_reason(staff_client, cafe, customer):
    buy(cafe, customer, "p1", "1000.00")
    account = BonusAccount.objects.get(user=customer)

    response, _token = adjust(staff_client, [account], amount="150.00", reason="   ")

    assert response.status_code == 200  # the form again
    assert "reason" in response.context["form"].errors
    account.refresh_from_db()
    assert account.balance == D("50.00")
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.ADJUSTMENT).exists()


def test_adjust_action_refuses_zero(staff_client, cafe, customer):
    buy(cafe, customer, "p1", "1000.00")
    account = BonusAccount.objects.get(user=customer)

    response, _token = adjust(staff_client, [account], amount="0", reason="Ошибка")

    assert response.status_code == 200
    assert "amount" in response.context["form"].errors
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.ADJUSTMENT).exists()


def test_adjust_action_reports_a_refusal_per_account_and_adjusts_the_others(
    staff_client, cafe, customer, books_balance
):
    rich = UserFactory(phone="+79990004455")
    buy(cafe, customer, "p1", "100.00")  # 5.00
    buy(cafe, rich, "p2", "2000.00")  # 100.00
    poor_account = BonusAccount.objects.get(user=customer)
    rich_account = BonusAccount.objects.get(user=rich)

    response, _token = adjust(staff_client, [poor_account, rich_account], amount="-40.00", reason="Списание ошибки")

    assert response.status_code == 302
    poor_account.refresh_from_db()
    rich_account.refresh_from_db()
    assert poor_account.balance == D("5.00")
    assert rich_account.balance == D("60.00")
    [(error, refusal), (success, _done)] = levels(response)
    assert error == "error" and refusal.startswith("+79991112233:")
    assert "+79990004455" not in refusal
    assert success == "success"
    books_balance()


def test_submitting_the_adjustment_twice_adjusts_once(staff_client, cafe, customer):
    buy(cafe, customer, "p1", "1000.00")
    account = BonusAccount.objects.get(user=customer)
    response, token = adjust(staff_client, [account], amount="25.00", reason="Повтор")
    data = {
        "action": "adjust_balance",
        "_selected_action": [str(account.pk)],
        "apply": "1",
        "token": str(token),
        "amount": "25.00",
        "reason": "Повтор",
    }

    again = staff_client.post(ACCOUNTS, data)

    assert response.status_code == again.status_code == 302
    account.refresh_from_db()
    assert account.balance == D("75.00")
    assert LedgerEntry.objects.filter(kind=LedgerEntry.Kind.ADJUSTMENT).count() == 1


def test_staff_who_may_only_view_accounts_get_no_adjust_action(client, cafe, customer):
    viewer = User.objects.create_user(phone="+79990000002", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_bonusaccount"))
    client.force_login(viewer)
    buy(cafe, customer, "p1", "1000.00")
    account = BonusAccount.objects.get(user=customer)

    page = client.get(ACCOUNTS)
    attempt = client.post(
        ACCOUNTS,
        {
            "action": "adjust_balance",
            "_selected_action": [str(account.pk)],
            "apply": "1",
            "token": str(uuid.uuid4()),
            "amount": "1000.00",
            "reason": "Себе",
        },
    )

    assert page.status_code == 200
    action_form = page.context["action_form"]  # None: no action at all for this user
    assert action_form is None or "adjust_balance" not in dict(action_form.fields["action"].choices)
    assert attempt.status_code in {200, 302}
    account.refresh_from_db()
    assert account.balance == D("50.00")


# --- The ledger -----------------------------------------------------------------------------


def test_ledger_entries_cannot_be_added_changed_or_deleted(staff_client, cafe, customer):
    buy(cafe, customer, "p1", "1000.00")
    entry = LedgerEntry.objects.get(account__user=customer)
    url = f"{LEDGER}{entry.pk}/"

    assert staff_client.get(url + "change/").status_code == 200  # shown, read-only
    assert staff_client.post(url + "change/", {"amount": "5000.00", "kind": "accrual"}).status_code == 403
    assert staff_client.get(url + "delete/").status_code == 403
    assert staff_client.post(url + "delete/", {"post": "yes"}).status_code == 403
    assert staff_client.get(f"{LEDGER}add/").status_code == 403
    bulk = staff_client.post(LEDGER, {"action": "delete_selected", "_selected_action": [entry.pk], "index": "0"})
    assert bulk.status_code in {200, 302}
    entry.refresh_from_db()
    assert entry.amount == D("50.00")
    assert LedgerEntry.objects.count() == 1


def test_ledger_admin_grants_no_write_permission_even_to_a_superuser(rf, admin_user):
    from django.contrib import admin

    request = rf.get(LEDGER)
    request.user = admin_user
    model_admin = admin.site._registry[LedgerEntry]

    assert model_admin.has_view_permission(request) is True
    assert model_admin.has_add_permission(request) is False
    assert model_admin.has_change_permission(request) is False
    assert model_admin.has_delete_permission(request) is False
    assert "delete_selected" not in model_admin.get_actions(request)


def test_ledger_filters_by_kind_and_business_and_searches_by_phone_and_key(staff_client, cafe, salon, customer):
    other = UserFactory(phone="+79990004455")
    cafe_purchase = buy(cafe, customer, "p1", "1000.00").transaction
    buy(salon, other, "p2", "1000.00")
    services.adjust_balance(user=customer, amount=D("7.00"), reason="Подарок", created_by=None)

    adjustments = staff_client.get(LEDGER, {"kind__exact": "adjustment"})
    at_salon = staff_client.get(LEDGER, {"business__id__exact": str(salon.pk)})
    by_phone = staff_client.get(LEDGER, {"q": "+7 999 000-44-55"})
    by_key = staff_client.get(LEDGER, {"q": f"accrual:{cafe_purchase.pk}"})

    assert adjustments.context["cl"].result_count == 1
    assert "Подарок" in adjustments.text
    assert [e.account.user for e in at_salon.context["cl"].result_list] == [other]
    assert [e.account.user for e in by_phone.context["cl"].result_list] == [other]
    assert [e.transaction for e in by_key.context["cl"].result_list] == [cafe_purchase]


def test_ledger_list_query_count_does_not_grow_with_the_rows(staff_client, tiers, customer):
    partners = [LoyaltyProgramFactory(business=BusinessFactory(name=f"Партнёр {n}")).business for n in range(12)]
    buy(partners[0], customer, "p0", "100.00")
    with CaptureQueriesContext(connection) as one_row:
        assert staff_client.get(LEDGER).status_code == 200
    for number, partner in enumerate(partners[1:], start=1):
        buy(partner, UserFactory(phone=f"+7999000{number:04d}"), f"p{number}", "100.00")
    services.adjust_balance(user=customer, amount=D("1.00"), reason="r", created_by=None)

    with CaptureQueriesContext(connection) as many_rows:
        response = staff_client.get(LEDGER)

    assert response.context["cl"].result_count == 13
    assert len(many_rows) == len(one_row)


@pytest.mark.parametrize(
    "url",
    [
        "/admin/loyalty/loyaltyprogram/",
        "/admin/loyalty/statustier/",
        "/admin/loyalty/transaction/",
        "/admin/loyalty/refund/",
        "/admin/loyalty/bonusaccount/",
        "/admin/loyalty/bonuslot/",
        "/admin/loyalty/ledgerentry/",
        "/admin/accounts/apikey/",
    ],
)
def test_every_list_renders_with_data(staff_client, cafe, customer, url):
    buy(cafe, customer, "p1", "1000.00")
    services.refund_transaction(business=cafe, external_id="p1", amount=D("100.00"), refund_id="r1")
    ApiKeyFactory(business=cafe)

    response = staff_client.get(url)

    assert response.status_code == 200
    assert response.context["cl"].result_count >= 1


def test_lots_and_refunds_are_read_only(staff_client, cafe, customer):
    buy(cafe, customer, "p1", "1000.00")
    services.refund_transaction(business=cafe, external_id="p1", amount=D("100.00"), refund_id="r1")
    lot = BonusLot.objects.get()
    refund = Refund.objects.get()

    assert staff_client.get(f"/admin/loyalty/bonuslot/{lot.pk}/change/").status_code == 200
    assert staff_client.post(f"/admin/loyalty/bonuslot/{lot.pk}/change/", {"remaining": "50"}).status_code == 403
    assert staff_client.post(f"/admin/loyalty/refund/{refund.pk}/delete/", {"post": "yes"}).status_code == 403
    lot.refresh_from_db()
    assert lot.remaining == D("45.00")


# --- API keys -------------------------------------------------------------------------------


def test_adding_an_api_key_shows_the_key_once_and_stores_only_its_hash(staff_client, admin_user):
    business = BusinessFactory(name="Кофейня")

    response = staff_client.post("/admin/accounts/apikey/add/", {"business": str(business.pk), "name": "Касса 1"})

    assert response.status_code == 302
    api_key = ApiKey.objects.get()
    assert api_key.name == "Касса 1"
    assert api_key.created_by == admin_user
    [text] = [text for level, text in levels(response) if level == "warning"]
    [raw_key] = [word for word in text.split() if word.startswith(f"sk_{api_key.prefix}_")]
    assert authenticate_api_key(raw_key) == api_key
    assert raw_key not in api_key.key_hash
    assert raw_key in staff_client.get("/admin/accounts/apikey/").text  # the next page shows it, once
    assert raw_key not in staff_client.get(f"/admin/accounts/apikey/{api_key.pk}/change/").text


def test_api_keys_are_revoked_by_the_action_and_never_edited(staff_client):
    api_key, raw_key = ApiKeyFactory(business=BusinessFactory(name="Кофейня"))
    other, other_raw = ApiKeyFactory(business=BusinessFactory(name="Салон"))

    response = staff_client.post(
        "/admin/accounts/apikey/", {"action": "revoke", "_selected_action": [str(api_key.pk)], "index": "0"}
    )

    assert response.status_code == 302
    assert [level for level, _text in levels(response)] == ["success"]
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None
    assert authenticate_api_key(raw_key) is None
    assert authenticate_api_key(other_raw) == other
    assert staff_client.post(f"/admin/accounts/apikey/{other.pk}/change/", {"name": "x"}).status_code == 403
    assert staff_client.post(f"/admin/accounts/apikey/{other.pk}/delete/", {"post": "yes"}).status_code == 403
