"""Demo data of the accounts app: partner businesses of one city, their staff, customers.

Every row is keyed by a natural key (slug, phone), so seeding twice changes nothing."""

import random
from datetime import date
from decimal import Decimal

from django.db import transaction

from accounts.models import Business, Membership, User

BUSINESSES = [
    # slug, name, category, address, latitude, longitude
    ("zerno-coffee", "Кофейня «Зерно»", Business.Category.CAFE, "ул. Кирова, 10", "57.626559", "39.893813"),
    ("len-salon", "Салон красоты «Лён»", Business.Category.BEAUTY, "ул. Свободы, 24", "57.624210", "39.884120"),
    ("dental-plus", "Клиника «Дентал Плюс»", Business.Category.CLINIC, "пр. Ленина, 31", "57.637810", "39.869980"),
    (
        "asana-yoga",
        "Студия йоги «Асана»",
        Business.Category.FITNESS,
        "ул. Республиканская, 3",
        "57.628900",
        "39.877300",
    ),
    (
        "pereplet-books",
        "Книжная лавка «Переплёт»",
        Business.Category.SHOP,
        "ул. Большая Октябрьская, 7",
        "57.631400",
        "39.880500",
    ),
    ("volga-bistro", "Бистро «Волга»", Business.Category.RESTAURANT, "Волжская наб., 15", "57.629700", "39.901200"),
    ("kolos-bakery", "Пекарня «Колос»", Business.Category.CAFE, "ул. Победы, 18", "57.624000", "39.887000"),
    ("britva-barber", "Барбершоп «Бритва»", Business.Category.BEAUTY, "ул. Собинова, 40", "57.630000", "39.870000"),
    ("umka-kids", "Детский центр «Умка»", Business.Category.EDUCATION, "Московский пр., 90", "57.610000", "39.850000"),
    ("romashka-flowers", "Цветы «Ромашка»", Business.Category.SHOP, "ул. Чкалова, 2", "57.635000", "39.865000"),
    ("energy-fitness", "Фитнес-клуб «Энергия»", Business.Category.FITNESS, "пр. Октября, 55", "57.640000", "39.855000"),
    (
        "svezhest-cleaning",
        "Химчистка «Свежесть»",
        Business.Category.SERVICES,
        "ул. Урицкого, 9",
        "57.615000",
        "39.880000",
    ),
]

FIRST_NAMES = ["Анна", "Мария", "Елена", "Ольга", "Дарья", "Иван", "Алексей", "Дмитрий", "Сергей", "Никита"]
LAST_NAMES = [
    "Иванова",
    "Смирнова",
    "Кузнецова",
    "Попова",
    "Соколова",
    "Иванов",
    "Смирнов",
    "Кузнецов",
    "Попов",
    "Соколов",
]

ADMIN_PHONE_DEFAULT = "+79990000001"
CUSTOMER_COUNT = 2500


def staff_phone(business_index: int, role_index: int) -> str:
    return f"+7999200{business_index:02d}{role_index:02d}"


def customer_phone(index: int) -> str:
    return f"+7999100{index:04d}"


@transaction.atomic
def seed_accounts(*, admin_phone: str, admin_password: str, customer_count: int = CUSTOMER_COUNT) -> dict:
    """Create or refresh the demo admin, businesses, their owners and cashiers, and customers.

    Customers are created in one bulk insert, only those whose phone is not in the circle yet."""
    rng = random.Random(20261126)
    admin, _ = User.objects.get_or_create(
        phone=admin_phone,
        defaults={"first_name": "Админ", "last_name": "Круга", "is_staff": True, "is_superuser": True},
    )
    admin.is_staff = admin.is_superuser = admin.is_active = True
    admin.set_password(admin_password)
    admin.save()

    businesses = []
    for index, (slug, name, category, address, lat, lon) in enumerate(BUSINESSES, start=1):
        business, _ = Business.objects.update_or_create(
            slug=slug,
            defaults={
                "name": name,
                "category": category,
                "address": f"Ярославль, {address}",
                "latitude": Decimal(lat),
                "longitude": Decimal(lon),
                "time_zone": "Europe/Moscow",
                "is_active": True,
            },
        )
        businesses.append(business)
        for role_index, role in enumerate([Membership.Role.OWNER, Membership.Role.MANAGER, Membership.Role.CASHIER], 1):
            person, _ = User.objects.get_or_create(
                phone=staff_phone(index, role_index),
                defaults={"first_name": rng.choice(FIRST_NAMES), "last_name": rng.choice(LAST_NAMES)},
            )
            Membership.objects.update_or_create(user=person, business=business, defaults={"role": role})

    # Draw every customer's data, existing or not, so each index always gets the same person.
    wanted = {}
    for index in range(1, customer_count + 1):
        birth = date(rng.randint(1960, 2005), rng.randint(1, 12), rng.randint(1, 28))
        wanted[customer_phone(index)] = {
            "first_name": rng.choice(FIRST_NAMES),
            "last_name": rng.choice(LAST_NAMES),
            "birth_date": birth if index % 3 else None,
            "marketing_consent": index % 2 == 0,
        }
    existing = set(User.objects.filter(phone__in=wanted).values_list("phone", flat=True))
    new_customers = []
    for phone, fields in wanted.items():
        if phone in existing:
            continue
        customer = User(phone=phone, **fields)
        customer.set_unusable_password()
        new_customers.append(customer)
    User.objects.bulk_create(new_customers, batch_size=500)
    customers = list(User.objects.filter(phone__in=wanted).order_by("phone"))
    return {"admin": admin, "businesses": businesses, "customers": customers}
