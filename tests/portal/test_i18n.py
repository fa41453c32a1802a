"""The portal speaks Russian by default and English on request; the catalogue is complete
and the committed django.mo matches django.po."""

import gettext
import re
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from loyalty.models import BonusAccount

LOCALE = Path(settings.BASE_DIR) / "locale" / "ru" / "LC_MESSAGES"


@pytest.fixture
def russian():
    return Client(headers={"Accept-Language": "ru"})


@pytest.mark.django_db
def test_login_page_in_russian(russian):
    response = russian.get("/portal/login/")

    html = response.content.decode()
    assert '<html lang="ru">' in html
    assert "Кабинет партнёра" in html
    assert "Введите номер телефона — мы пришлём код в СМС." in html
    assert "Получить код" in html
    assert "Partner portal" not in html


@pytest.mark.django_db
def test_russian_is_the_default_and_english_is_available():
    assert "Кабинет партнёра" in Client().get("/portal/login/").content.decode()
    english = Client(headers={"Accept-Language": "en"}).get("/portal/login/").content.decode()
    assert "Partner portal" in english
    assert '<html lang="en">' in english


@pytest.mark.django_db
def test_portal_pages_in_russian_with_russian_money(russian, owner, business_a, buy):
    buy(business_a, "+79991110001", "1234.50")
    russian.force_login(owner)

    overview = russian.get("/portal/").content.decode()
    purchases = russian.get("/portal/transactions/").content.decode()
    program = russian.get("/portal/program/").content.decode()

    assert "Покупок сегодня" in overview
    assert "на 1\u00a0234,50\u00a0₽" in overview
    assert ">Касса</a>" in overview
    assert ">Обзор</a>" in overview
    assert "Владелец" in overview
    assert "Выйти" in overview
    assert "1 покупка на 1\u00a0234,50\u00a0₽; оплачено бонусами 0,00\u00a0₽, начислено 61,72\u00a0₽." in purchases
    assert "Проведена" in purchases
    assert "Процент начисления, %" in program
    assert "Программа действует" in program


@pytest.mark.django_db
def test_refusals_and_plurals_in_russian(russian, sms, owner, business_a, buy):
    customer = buy(business_a, "+79991110001", "1000.00").customer  # 50.00 bonuses
    russian.force_login(owner)

    refused = russian.post(
        "/portal/cashier/",
        {
            "phone": customer.phone,
            "amount": "1000.00",
            "redeem": "100.00",
            "external_id": "cashier-" + "a" * 32,
            "action": "record",
        },
    )

    assert refused.context["form"].errors == {"redeem": ["Недостаточно бонусов для списания. Доступно: 50,00\u00a0₽."]}
    assert BonusAccount.objects.get(user=customer).balance == Decimal("50.00")

    anonymous = Client(headers={"Accept-Language": "ru"})
    anonymous.post("/portal/login/", {"phone": owner.phone})
    wrong = f"{(int(sms.last_code()) + 1) % 1_000_000:06d}"
    assert anonymous.post("/portal/login/code/", {"code": wrong}).context["form"].errors == {
        "code": ["Неверный код. Осталось 4 попытки."]
    }
    for _ in range(2):
        anonymous.post("/portal/login/code/", {"code": wrong})
    assert anonymous.post("/portal/login/code/", {"code": wrong}).context["form"].errors == {
        "code": ["Неверный код. Осталась 1 попытка."]
    }


def _po_entries():
    """(msgid, [msgstr forms], flags) of every entry of django.po but the header."""
    text = LOCALE.joinpath("django.po").read_text()
    for block in re.split(r"\n\s*\n", text.strip()):
        fields: dict[str, str] = {}
        flags: list[str] = []
        key = None
        for line in block.splitlines():
            if line.startswith("#,"):
                flags += [flag.strip() for flag in line[2:].split(",")]
            elif line.startswith("#"):
                continue
            elif line.startswith('"'):
                fields[key] += line[1:-1]
            else:
                key, _, rest = line.partition(" ")
                fields[key] = rest[1:-1]
        if fields.get("msgid"):
            yield fields["msgid"], [v for k, v in fields.items() if k.startswith("msgstr")], flags


def test_every_message_is_translated_and_none_is_fuzzy():
    entries = list(_po_entries())

    assert len(entries) > 400
    assert [msgid for msgid, forms, _flags in entries if not all(forms)] == []
    assert [msgid for msgid, _forms, flags in entries if "fuzzy" in flags] == []


def test_the_compiled_catalogue_matches_the_po_file():
    with LOCALE.joinpath("django.mo").open("rb") as mo:
        compiled = gettext.GNUTranslations(mo)

    assert compiled.gettext("Partner portal") == "Кабинет партнёра"
    assert compiled.pgettext("portal section: the cash desk page", "Cashier") == "Касса"
    assert compiled.ngettext("%(count)d attempt left.", "%(count)d attempts left.", 3) == "Осталось %(count)d попытки."
    # Every message of the .po is in the .mo (a stale .mo would miss the newest ones).
    messages = {msgid.replace('\\"', '"').replace("\\n", "\n") for msgid, _forms, _flags in _po_entries()}
    catalogue = {key[0] if isinstance(key, tuple) else key for key in compiled._catalog}
    catalogue = {key.split("\x04", 1)[-1] for key in catalogue}
    assert messages - catalogue == set()
