"""The event notifications' templates: every part each event kind needs, in both languages."""

import pytest

from notifications.services import KINDS, _render

EVENT_KINDS = sorted(kind for kind in KINDS if kind.startswith("event_"))
LANGUAGES = ("ru", "en")
TITLE = "Вечер настольных игр у камина!"  # 30 characters
PRICED = ("event_registered", "event_waitlisted", "event_promoted", "event_waitlist_missed")


def parts(kind: str) -> list[str]:
    spec = KINDS[kind]
    needed = ["title.txt", "body.txt"]
    if spec.email:
        needed += ["subject.txt", "email.txt", "email.html"]
    if spec.sms:
        needed.append("sms.txt")
    return needed


def context(kind: str, **extra) -> dict:
    """What `events.services.messages` gives the kind, with its extras as strings."""
    ctx = {
        "event_id": 42,
        "event_title": TITLE,
        "business_name": "Кофейня Зерно",
        "starts_on": "2025-06-14",
        "starts_time": "19:30",
        "place": "ул. Ленина, 12, второй этаж",
    }
    if kind != "event_published":
        ctx["ticket_code"] = "K7M2QX9P"
    if kind in PRICED:
        ctx["price"] = "350.00"
    elif kind == "event_reminder":
        ctx["hours"] = "24"
    elif kind == "event_cancelled":
        ctx["refunded"] = "350.00"
    return ctx | extra


def test_the_event_kinds_are_there():
    assert len(EVENT_KINDS) == 8


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_every_part_renders_with_the_event_title(kind, language):
    for part in parts(kind):
        text = _render(kind, part, context(kind), language)
        assert text, (kind, part)
        assert TITLE in text, (kind, part)
        assert "{{" not in text and "{%" not in text and "}}" not in text, (kind, part)
        if part != "title.txt" and part != "subject.txt":
            assert "2025-06-14" in text, (kind, part)
        if part == "sms.txt":
            assert len(text) <= 140, (kind, language, len(text), text)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", [kind for kind in EVENT_KINDS if KINDS[kind].sms])
def test_sms_stays_within_two_parts_whatever_the_title_and_place(kind, language):
    """Two UCS-2 parts are 134 characters; titles and places can be long (150 and 300)."""
    ctx = context(kind, event_title="Т" * 150, place="П" * 300, price="10000.00", refunded="10000.00")

    assert len(_render(kind, "sms.txt", ctx, language)) <= 134


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", [kind for kind in EVENT_KINDS if kind in PRICED])
def test_the_price_shows_only_when_the_event_is_not_free(kind, language):
    for part in parts(kind):
        assert "0.00" not in _render(kind, part, context(kind, price="0.00"), language), (kind, part)
    paid_parts = [part for part in parts(kind) if part not in ("title.txt", "subject.txt")]
    for part in paid_parts:
        assert "350.00" in _render(kind, part, context(kind), language), (kind, part)


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_cancellation_mentions_the_refund_only_when_there_is_one(language):
    for part in parts("event_cancelled"):
        refunded = _render("event_cancelled", part, context("event_cancelled", refunded="350.00"), language)
        nothing = _render("event_cancelled", part, context("event_cancelled", refunded="0.00"), language)
        if part in ("title.txt", "subject.txt"):
            assert "350.00" not in refunded
        else:
            assert "350.00" in refunded, part
        assert "0.00" not in nothing, part


@pytest.mark.parametrize("language", LANGUAGES)
def test_a_reminder_says_how_soon(language):
    day = _render("event_reminder", "title.txt", context("event_reminder", hours="24"), language)
    soon = _render("event_reminder", "title.txt", context("event_reminder", hours="2"), language)

    assert day != soon
    assert ("2 часа" if language == "ru" else "2 hours") in soon
