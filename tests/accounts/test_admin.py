"""Staff run users, businesses and memberships from the Django admin."""

import pytest

from accounts.models import Business, Membership, User
from tests.factories import BusinessFactory, MembershipFactory, UserFactory


@pytest.fixture
def staff_client(client):
    admin = User.objects.create_superuser(phone="+79990000001", password="correct horse battery")
    client.force_login(admin)
    return client


@pytest.mark.django_db
def test_admin_logs_in_with_the_phone_as_typed(client):
    User.objects.create_superuser(phone="+79990000001", password="correct horse battery")

    response = client.post(
        "/admin/login/?next=/admin/",
        {"username": "8 999 000-00-01", "password": "correct horse battery"},
    )

    assert response.status_code == 302
    assert response["Location"] == "/admin/"


@pytest.mark.django_db
def test_customer_without_password_cannot_log_in_to_admin(client):
    User.objects.create_user(phone="+79991112233")

    response = client.post("/admin/login/", {"username": "+79991112233", "password": ""})

    assert response.status_code == 200  # the form again, with an error
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_user_search_by_phone_and_name(staff_client):
    UserFactory(phone="+79995550123", first_name="Варвара")
    UserFactory(phone="+79995550456", first_name="Глеб")

    by_phone = staff_client.get("/admin/accounts/user/", {"q": "5550123"})
    by_name = staff_client.get("/admin/accounts/user/", {"q": "Глеб"})

    assert by_phone.status_code == 200
    assert "+79995550123" in by_phone.text and "+79995550456" not in by_phone.text
    assert "+79995550456" in by_name.text and "+79995550123" not in by_name.text


@pytest.mark.django_db
def test_user_filters_by_role(staff_client):
    MembershipFactory(user=UserFactory(phone="+79995550777"), role=Membership.Role.CASHIER)
    UserFactory(phone="+79995550888")

    response = staff_client.get("/admin/accounts/user/", {"memberships__role": "cashier"})

    assert "+79995550777" in response.text and "+79995550888" not in response.text


@pytest.mark.django_db
def test_adding_a_user_normalises_the_phone(staff_client):
    response = staff_client.post(
        "/admin/accounts/user/add/",
        {
            "phone": "8 (999) 555-01-99",
            "first_name": "Ира",
            "last_name": "",
            "email": "",
            "password": "",
            "memberships-TOTAL_FORMS": "0",
            "memberships-INITIAL_FORMS": "0",
        },
    )

    assert response.status_code == 302
    user = User.objects.get(phone="+79995550199")
    assert user.has_usable_password() is False


@pytest.mark.django_db
def test_business_page_shows_its_memberships_inline(staff_client):
    membership = MembershipFactory(user=UserFactory(phone="+79995550321"), role=Membership.Role.MANAGER)

    response = staff_client.get(f"/admin/accounts/business/{membership.business.pk}/change/")

    assert response.status_code == 200
    assert "memberships-TOTAL_FORMS" in response.text
    assert "+79995550321" in response.text


@pytest.mark.django_db
def test_business_list_filters_by_category(staff_client):
    BusinessFactory(name="Кофейня А", category=Business.Category.CAFE)
    BusinessFactory(name="Клиника Б", category=Business.Category.CLINIC)

    response = staff_client.get("/admin/accounts/business/", {"category__exact": "clinic"})

    assert "Клиника Б" in response.text and "Кофейня А" not in response.text


@pytest.mark.django_db
def test_membership_admin_searches_by_phone(staff_client):
    MembershipFactory(user=UserFactory(phone="+79995550654"))

    response = staff_client.get("/admin/accounts/membership/", {"q": "5550654"})

    assert response.status_code == 200
    assert "+79995550654" in response.text


@pytest.mark.django_db
def test_user_change_page_shows_the_password_as_a_hash_not_a_field(staff_client):
    user = UserFactory(phone="+79995550999")

    response = staff_client.get(f"/admin/accounts/user/{user.pk}/change/")

    assert response.status_code == 200
    assert 'name="password"' not in response.text
    assert "+79995550999" in response.text
