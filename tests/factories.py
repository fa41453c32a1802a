from decimal import Decimal

import factory

from accounts.models import Business, Membership, User


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("phone",)

    phone = factory.Sequence(lambda n: f"+7999555{n:04d}")
    first_name = factory.Faker("first_name", locale="ru_RU")
    last_name = factory.Faker("last_name", locale="ru_RU")
    password = factory.django.Password(None)


class BusinessFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Business

    name = factory.Sequence(lambda n: f"Кофейня №{n}")
    slug = factory.Sequence(lambda n: f"business-{n}")
    category = Business.Category.CAFE


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    business = factory.SubFactory(BusinessFactory)
    role = Membership.Role.OWNER


class LoyaltyProgramFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = "loyalty.LoyaltyProgram"
        django_get_or_create = ("business",)

    business = factory.SubFactory(BusinessFactory)
    accrual_rate = Decimal("5.00")
    max_redeem_share = Decimal("30.00")
    bonus_lifetime_days = 365
    hold_days = 0
    welcome_bonus = Decimal("0.00")
    birthday_bonus = Decimal("0.00")


class ApiKeyFactory:
    """`ApiKeyFactory(business=...)` → (ApiKey, raw key), made through the service."""

    def __new__(cls, business=None, name="POS"):
        from accounts.services import create_api_key

        return create_api_key(business=business or BusinessFactory(), name=name)


class CRMIntegrationFactory(factory.django.DjangoModelFactory):
    """`CRMIntegrationFactory(provider="yclients", config={...}, credentials={...})`;
    the credentials are encrypted as the model stores them."""

    class Meta:
        model = "integrations.CRMIntegration"
        skip_postgeneration_save = True

    business = factory.SubFactory(BusinessFactory)
    provider = "yclients"
    config = factory.LazyFunction(dict)

    @factory.post_generation
    def credentials(obj, create, extracted, **kwargs):
        obj.credentials = extracted or {}
        if create:
            obj.save(update_fields=["credentials_encrypted"])
