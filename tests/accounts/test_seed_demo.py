import pytest
from django.core.management import CommandError, call_command

from accounts.models import Business, Membership, User

# Small sizes: the loyalty part has its own test (tests/loyalty/test_demo.py).
SMALL = {"customers": 30, "purchases": 150}


def counts():
    return Business.objects.count(), Membership.objects.count(), User.objects.count()


@pytest.mark.django_db
def test_seed_demo_twice_duplicates_nothing(settings, tiers, capsys):
    settings.DEBUG = True

    call_command("seed_demo", **SMALL)
    first = counts()
    call_command("seed_demo", **SMALL)

    assert counts() == first
    assert first[0] >= 5
    assert User.objects.filter(memberships__isnull=True, is_staff=False).count() == SMALL["customers"]
    assert len(set(Business.objects.values_list("category", flat=True))) >= 5
    assert set(Membership.objects.values_list("role", flat=True)) == {"owner", "manager", "cashier"}
    admin = User.objects.get(phone=settings.DEMO_ADMIN_PHONE)
    assert admin.is_superuser and admin.check_password(settings.DEMO_ADMIN_PASSWORD)
    out = capsys.readouterr().out
    assert settings.DEMO_ADMIN_PHONE in out and settings.DEMO_ADMIN_PASSWORD in out


@pytest.mark.django_db
def test_seed_demo_refuses_in_production_unless_forced(settings, tiers):
    settings.DEBUG = False

    with pytest.raises(CommandError, match="--force"):
        call_command("seed_demo")
    assert counts() == (0, 0, 0)

    call_command("seed_demo", force=True, **SMALL)
    assert Business.objects.exists()


@pytest.mark.django_db
def test_seed_demo_gives_customers_devices_and_messages(settings, tiers):
    from notifications.models import Device, NotificationLog

    settings.DEBUG = True
    call_command("seed_demo", customers=30, purchases=60)
    first = (Device.objects.count(), NotificationLog.objects.count())
    call_command("seed_demo", customers=30, purchases=60)

    assert first[0] == 12
    assert NotificationLog.objects.filter(kind="promotion").exists()
    assert (Device.objects.count(), NotificationLog.objects.count()) == first
