import pytest
from django.core.management import CommandError, call_command

from accounts.models import Business, Membership, User


def counts():
    return Business.objects.count(), Membership.objects.count(), User.objects.count()


@pytest.mark.django_db
def test_seed_demo_twice_duplicates_nothing(settings, capsys):
    settings.DEBUG = True

    call_command("seed_demo")
    first = counts()
    call_command("seed_demo")

    assert counts() == first
    assert first[0] >= 5
    assert len(set(Business.objects.values_list("category", flat=True))) >= 5
    assert set(Membership.objects.values_list("role", flat=True)) == {"owner", "manager", "cashier"}
    admin = User.objects.get(phone=settings.DEMO_ADMIN_PHONE)
    assert admin.is_superuser and admin.check_password(settings.DEMO_ADMIN_PASSWORD)
    out = capsys.readouterr().out
    assert settings.DEMO_ADMIN_PHONE in out and settings.DEMO_ADMIN_PASSWORD in out


@pytest.mark.django_db
def test_seed_demo_refuses_in_production_unless_forced(settings):
    settings.DEBUG = False

    with pytest.raises(CommandError, match="--force"):
        call_command("seed_demo")
    assert counts() == (0, 0, 0)

    call_command("seed_demo", force=True)
    assert Business.objects.exists()
