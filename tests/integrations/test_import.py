"""`manage.py import_transactions`: a partner's purchase history from CSV, in batches, into the
same ledger as every other purchase; every row imported, a duplicate or rejected with its line."""

import csv
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from accounts.models import User
from loyalty import services as loyalty
from loyalty.models import BonusAccount, BonusLot, LedgerEntry, Transaction
from loyalty.selectors import ledger_mismatches
from notifications.models import NotificationLog
from tests.factories import BusinessFactory, LoyaltyProgramFactory
from tests.integrations.support import MOSCOW, PHONE, D

pytestmark = pytest.mark.django_db

OTHER = "+79997776655"


def ago(days: float) -> str:
    """A time `days` ago as a partner's spreadsheet writes it (local, to the minute)."""
    return f"{(timezone.now() - timedelta(days=days)).astimezone(MOSCOW):%d.%m.%Y %H:%M}"


def write(tmp_path, lines, *, name="history.csv", encoding="utf-8", newline="\n"):
    path = tmp_path / name
    path.write_bytes(newline.join(lines).encode(encoding) + newline.encode())
    return str(path)


def run(path, *, business="history", **options) -> list[str]:
    out = StringIO()
    call_command(
        "import_transactions", path, business=business, no_progress=True, stdout=out, stderr=StringIO(), **options
    )
    return out.getvalue().splitlines()


@pytest.fixture
def history(db):
    """A partner whose program has a welcome bonus (an import never grants it) and bonuses that live a year."""
    return LoyaltyProgramFactory(
        business=BusinessFactory(slug="history", name="История"),
        accrual_rate=D(5),
        welcome_bonus=D(100),
        bonus_lifetime_days=365,
    ).business


@pytest.fixture
def small_csv_fields():
    """A field over 200 characters is a CSV error (the limit is otherwise 128 KiB)."""
    before = csv.field_size_limit(200)
    yield
    csv.field_size_limit(before)


def mixed_file(tmp_path) -> str:
    return write(
        tmp_path,
        [
            "id,phone,amount,date",
            f"p-1,{PHONE},1000,{ago(10)}",  # 2
            f'p-2,8 916 123-45-67,"1 500,50",{ago(5)}',  # 3: the same customer
            f"p-3,{OTHER},200,{ago(400)}",  # 4: older than the bonuses' lifetime
            f"p-1,{PHONE},999,{ago(9)}",  # 5: the same id again
            f"p-6,12345,100,{ago(3)}",
            f"p-7,{PHONE},abc,{ago(3)}",
            f"p-8,{PHONE},10.123,{ago(3)}",
            f"p-9,{PHONE},100,{ago(-1)}",
            f"p-10,{PHONE},100,{ago(1200)}",
            f",{PHONE},100,{ago(3)}",
            f"p-12,{PHONE},100,{'x' * 300}",  # 12: unreadable
            f"p-13,{PHONE},100,{ago(1)}",  # 13
        ],
    )


REJECTED = [
    "Rejected rows (line: reason):",
    "  6: the phone '12345' is not a valid number",
    "  7: the amount 'abc' is not a number",
    "  8: the amount '10.123' has more than two decimal places",
    "  9: the date is in the future",
    "  10: the date is more than 1095 days ago",
    "  11: no purchase id",
    "  12: unreadable CSV: field larger than field limit (200)",
]


def check_mixed_import_result():
    assert sorted(Transaction.objects.values_list("external_id", "gross_amount", "bonuses_accrued", "source")) == [
        ("p-1", D(1000), D(50), "import"),
        ("p-13", D(100), D(5), "import"),
        ("p-2", D("1500.50"), D("75.02"), "import"),
        ("p-3", D(200), D(0), "import"),
    ]
    mine = BonusAccount.objects.get(user__phone=PHONE)
    assert (mine.balance, mine.lifetime_earned, mine.spend_365, mine.clawback_due) == (
        D("130.02"),
        D("130.02"),
        D("2600.50"),
        D(0),
    )
    assert mine.first_purchase_at == Transaction.objects.get(external_id="p-1").occurred_at
    other = BonusAccount.objects.get(user__phone=OTHER)
    assert (other.balance, other.spend_365) == (D(0), D(0))  # nothing earned, not within the year
    assert other.first_purchase_at is not None
    assert not BonusLot.objects.filter(account=other).exists()
    assert sorted(LedgerEntry.objects.values_list("kind", "amount")) == [
        ("accrual", D(5)),
        ("accrual", D(50)),
        ("accrual", D("75.02")),
    ]
    assert ledger_mismatches() == []


@pytest.mark.parametrize("batch_rows", [3, 5000])
def test_a_mixed_history_is_imported_rejected_rows_reported_and_a_second_run_adds_nothing(
    settings, tmp_path, history, small_csv_fields, batch_rows
):
    settings.IMPORT_BATCH_ROWS = batch_rows
    path = mixed_file(tmp_path)

    first = run(path)
    again = run(path)

    assert first == ["12 rows: 4 imported, 1 already there, 7 rejected.", *REJECTED]
    assert again == ["12 rows: 0 imported, 5 already there, 7 rejected.", *REJECTED]
    check_mixed_import_result()
    p2 = Transaction.objects.get(external_id="p-2")
    assert p2.customer.phone == PHONE
    assert p2.occurred_at.astimezone(MOSCOW).strftime("%d.%m.%Y %H:%M") == ago(5)


def test_a_dry_run_writes_nothing_and_says_what_would_happen(tmp_path, history, small_csv_fields):
    people = User.objects.count()

    output = run(mixed_file(tmp_path), dry_run=True)

    assert output == ["12 rows: 4 would be imported, 1 already there, 7 rejected.", *REJECTED]
    assert Transaction.objects.count() == 0
    assert User.objects.count() == people
    assert BonusAccount.objects.count() == 0


def test_no_welcome_bonus_and_no_messages_for_history(tmp_path, history, django_capture_on_commit_callbacks):
    path = write(tmp_path, ["id,phone,amount,date", f"a,{PHONE},1000,{ago(3)}", f"b,{OTHER},500,{ago(2)}"])

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        run(path)

    # Only the renewal of the customers' cached answers waits for the commit: no message.
    assert {callback.__module__ for callback in callbacks} <= {"svoykrug.answers"}
    assert NotificationLog.objects.count() == 0
    assert not LedgerEntry.objects.filter(kind=LedgerEntry.Kind.WELCOME).exists()
    assert (
        BonusAccount.objects.get(user__phone=PHONE).balance,
        BonusAccount.objects.get(user__phone=OTHER).balance,
    ) == (
        D(50),
        D(25),
    )


def test_bonuses_of_an_imported_purchase_live_from_the_purchase(tmp_path, history):
    path = write(tmp_path, ["id,phone,amount,date", f"a,{PHONE},1000,{ago(300)}", f"b,{PHONE},1000,{ago(366)}"])

    run(path)

    a, b = Transaction.objects.get(external_id="a"), Transaction.objects.get(external_id="b")
    assert (a.bonuses_accrued, b.bonuses_accrued) == (D(50), D(0))
    (lot,) = BonusLot.objects.all()
    assert (lot.transaction, lot.expires_at, lot.spendable_from) == (
        a,
        a.occurred_at + timedelta(days=365),
        a.occurred_at,
    )
    assert BonusAccount.objects.get(user__phone=PHONE).spend_365 == D(1000)


@pytest.mark.parametrize("batch_rows", [1, 5000])
def test_spend_within_the_year_raises_the_tier_as_the_history_goes(settings, tmp_path, tiers, history, batch_rows):
    settings.IMPORT_BATCH_ROWS = batch_rows
    path = write(
        tmp_path,
        [
            "id,phone,amount,date",
            f"t-1,{PHONE},10000,{ago(100)}",
            f"t-2,{PHONE},6000,{ago(50)}",  # 16 000 after it: Silver, 1 point more from the next purchase
            f"t-3,{PHONE},1000,{ago(10)}",
            f"t-4,{PHONE},5000,{ago(370)}",  # a year ago: no tier, no bonuses
        ],
    )

    run(path)

    accrued = dict(Transaction.objects.values_list("external_id", "bonuses_accrued"))
    assert accrued == {"t-1": D(500), "t-2": D(300), "t-3": D(60), "t-4": D(0)}
    account = BonusAccount.objects.get(user__phone=PHONE)
    assert (account.tier, account.spend_365, account.balance) == (tiers["Silver"], D(17000), D(860))
    assert account.tier_updated_at is not None
    assert ledger_mismatches() == []


def test_bonuses_still_owed_after_a_refund_are_settled_from_imported_accruals(tmp_path, history):
    loyalty.update_program(business=history, changed_by=None, welcome_bonus=D(0))
    first = loyalty.record_transaction(business=history, external_id="api-1", amount=D(1000), phone=PHONE)
    loyalty.record_transaction(business=history, external_id="api-2", amount=D(200), redeem=D(40), phone=PHONE)
    loyalty.refund_transaction(business=history, external_id="api-1")
    account = BonusAccount.objects.get(user__phone=PHONE)
    assert (first.transaction.bonuses_accrued, account.balance, account.clawback_due) == (D(50), D(0), D(32))
    assert account.lifetime_earned == D(8)

    run(write(tmp_path, ["id,phone,amount,date", f"imp-1,{PHONE},1000,{ago(1)}"]))

    account.refresh_from_db()
    assert (account.balance, account.clawback_due) == (D(18), D(0))
    txn = Transaction.objects.get(external_id="imp-1")
    lot = BonusLot.objects.get(transaction=txn)
    assert (lot.amount, lot.remaining) == (D(50), D(18))
    settle = LedgerEntry.objects.get(idempotency_key=f"accrual:{txn.pk}:settle")
    assert (settle.kind, settle.amount, settle.lot) == ("refund_reversal", D(-32), lot)
    assert ledger_mismatches() == []


def test_a_semicolon_windows_1251_file_with_russian_headers_is_read(tmp_path, history):
    path = write(
        tmp_path,
        [
            "Номер чека;Телефон;Сумма;Дата и время",
            f"ч-1;8 916 123-45-67;1 234,50;{ago(3)}",
            f"ч-2;+7 999 777-66-55;99,90 руб.;{ago(2)}",
        ],
        encoding="cp1251",
        newline="\r\n",
    )

    assert run(path) == ["2 rows: 2 imported, 0 already there, 0 rejected."]

    assert sorted(Transaction.objects.values_list("external_id", "gross_amount", "customer__phone")) == [
        ("ч-1", D("1234.50"), PHONE),
        ("ч-2", D("99.90"), OTHER),
    ]


def test_a_comma_utf8_file_with_a_bom_is_read(tmp_path, history):
    path = write(
        tmp_path,
        ["\ufeffexternal_id,phone,amount,occurred_at", f"u-1,{PHONE},10.5,{ago(1)}"],
        encoding="utf-8",
    )

    assert run(path) == ["1 rows: 1 imported, 0 already there, 0 rejected."]
    assert Transaction.objects.get().external_id == "u-1"
    assert Transaction.objects.get().gross_amount == D("10.50")


def test_columns_are_mapped_with_map(tmp_path, history):
    path = write(tmp_path, ["Чек №,Клиент,Итого,Когда,Телефон", f"m-1,{PHONE},100,{ago(1)},{OTHER}"])

    output = run(path, map=["Чек №=external_id", "Клиент=phone", "Итого=amount", "Когда=occurred_at"])

    assert output == ["1 rows: 1 imported, 0 already there, 0 rejected."]
    assert Transaction.objects.get().customer.phone == PHONE  # the mapped column, not the one named Телефон


def test_a_missing_column_is_an_error_naming_the_columns(tmp_path, history):
    path = write(tmp_path, ["id,phone,date", f"x,{PHONE},{ago(1)}"])

    with pytest.raises(CommandError) as caught:
        run(path)

    assert str(caught.value) == "No column for amount. Map one with column=field; the file has: id, phone, date."
    assert Transaction.objects.count() == 0


def test_a_mapping_of_an_unknown_column_or_field_is_an_error(tmp_path, history):
    path = write(tmp_path, ["id,phone,amount,date", f"x,{PHONE},1,{ago(1)}"])

    with pytest.raises(CommandError, match=r"^The file has no column 'Клиент'; it has: id, phone, amount, date\.$"):
        run(path, map=["Клиент=phone"])
    with pytest.raises(CommandError, match=r"^Unknown field 'client': the fields are external_id, phone, amount"):
        run(path, map=["phone=client"])


def test_an_unknown_business_or_file_is_an_error(tmp_path, history):
    path = write(tmp_path, ["id,phone,amount,date", f"x,{PHONE},1,{ago(1)}"])

    with pytest.raises(CommandError, match=r"^No business with the slug 'nope'\.$"):
        run(path, business="nope")
    with pytest.raises(CommandError, match=r"^No such file: "):
        run(str(tmp_path / "missing.csv"))
    assert Transaction.objects.count() == 0


def test_the_same_id_twice_in_a_file_is_one_purchase(tmp_path, history):
    path = write(tmp_path, ["id,phone,amount,date", f"d-1,{PHONE},100,{ago(2)}", f"d-1,{OTHER},300,{ago(1)}"])

    assert run(path) == ["2 rows: 1 imported, 1 already there, 0 rejected."]
    (txn,) = Transaction.objects.all()
    assert (txn.gross_amount, txn.customer.phone) == (D(100), PHONE)


def test_an_id_another_business_has_is_no_duplicate(tmp_path, history):
    other = LoyaltyProgramFactory(business=BusinessFactory(slug="other")).business
    loyalty.record_transaction(business=other, external_id="same", amount=D(100), phone=OTHER)
    path = write(tmp_path, ["id,phone,amount,date", f"same,{PHONE},100,{ago(2)}"])

    assert run(path) == ["1 rows: 1 imported, 0 already there, 0 rejected."]


def test_a_closed_account_is_rejected(tmp_path, history):
    User.objects.create_user(phone=OTHER, is_active=False)
    path = write(tmp_path, ["id,phone,amount,date", f"c-1,{OTHER},100,{ago(2)}", f"c-2,{PHONE},100,{ago(2)}"])

    assert run(path) == [
        "2 rows: 1 imported, 0 already there, 1 rejected.",
        "Rejected rows (line: reason):",
        "  2: the customer's account is closed",
    ]


@pytest.mark.postgres
def test_the_postgresql_path_copy_and_update_from_unnest(settings, tmp_path, tiers, history, small_csv_fields):
    """PostgreSQL writes with COPY and one UPDATE ... FROM unnest: the same books as SQLite's bulk path."""
    assert connection.vendor == "postgresql"
    settings.IMPORT_BATCH_ROWS = 3
    path = mixed_file(tmp_path)

    assert run(path)[0] == "12 rows: 4 imported, 1 already there, 7 rejected."
    assert run(path)[0] == "12 rows: 0 imported, 5 already there, 7 rejected."
    check_mixed_import_result()

    loyalty.record_transaction(business=history, external_id="api-2", amount=D(200), redeem=D(40), phone=PHONE)
    loyalty.refund_transaction(business=history, external_id="p-1")  # takes back 50, finds 130.02 - 40 + 8
    tier_path = write(
        tmp_path,
        [
            "id,phone,amount,date",
            f"t-1,{OTHER},10000,{ago(100)}",
            f"t-2,{OTHER},6000,{ago(50)}",
            f"t-3,{OTHER},1000,{ago(10)}",
        ],
        name="tiers.csv",
    )
    assert run(tier_path)[0] == "3 rows: 3 imported, 0 already there, 0 rejected."

    other = BonusAccount.objects.get(user__phone=OTHER)
    assert (other.tier, other.spend_365, other.balance) == (tiers["Silver"], D(17000), D(860))
    assert dict(
        Transaction.objects.filter(external_id__startswith="t-").values_list("external_id", "bonuses_accrued")
    ) == {
        "t-1": D(500),
        "t-2": D(300),
        "t-3": D(60),
    }
    assert ledger_mismatches() == []
    assert BonusAccount.objects.get(user__phone=PHONE).balance == D("130.02") - D(40) + D(8) - D(50)


def test_only_as_many_rejected_rows_as_asked_are_shown(tmp_path, history, small_csv_fields):
    output = run(mixed_file(tmp_path), show=2)

    assert output == ["12 rows: 4 imported, 1 already there, 7 rejected.", *REJECTED[:3], "  … and 5 more."]


def test_a_file_whose_encoding_changes_after_its_start_is_an_error(tmp_path, history):
    head = "".join(f"x{n:05d},,1,{ago(1)}\n" for n in range(3000)).encode()  # over 64 KiB of ASCII
    path = tmp_path / "mixed.csv"
    path.write_bytes(b"id,phone,amount,date\n" + head + f"y,{PHONE},1,{ago(1)},Иван\n".encode("cp1251"))

    with pytest.raises(CommandError, match=r"^The file is not all in one encoding \(UTF-8 or Windows-1251\): "):
        run(str(path))
