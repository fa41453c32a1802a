"""People and places: customers and partner staff (`User`), partner businesses, and who works where."""

import contextlib
import uuid
import zoneinfo

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.phones import InvalidPhone, normalize_phone


class UserManager(BaseUserManager):
    use_in_migrations = True

    def get_by_natural_key(self, username):
        # The admin's login form passes the phone as typed; look it up the way it is stored.
        with contextlib.suppress(InvalidPhone):
            username = normalize_phone(username)
        return self.get(**{self.model.USERNAME_FIELD: username})

    def create_user(self, phone, password=None, **extra_fields):
        user = self.model(phone=normalize_phone(phone), **extra_fields)
        if password:
            user.set_password(password)
        else:
            user.set_unusable_password()
        user.save(using=self._db)
        return user

    def create_superuser(self, phone, password=None, **extra_fields):
        extra_fields.setdefault("is_staff", True)
        extra_fields.setdefault("is_superuser", True)
        if not extra_fields["is_staff"] or not extra_fields["is_superuser"]:
            raise ValueError("A superuser must have is_staff=True and is_superuser=True.")
        return self.create_user(phone, password, **extra_fields)


class User(AbstractBaseUser, PermissionsMixin):
    """A person in the circle. The phone number is the identity; customers have no password.

    A closed account keeps its row (purchases and the ledger point at it) with the personal
    data wiped and `phone` set to NULL, so the number can join again as a new person."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    phone = models.CharField(_("phone"), max_length=16, unique=True, null=True, blank=True)
    first_name = models.CharField(_("first name"), max_length=100, blank=True)
    last_name = models.CharField(_("last name"), max_length=100, blank=True)
    email = models.EmailField(_("email"), blank=True)
    birth_date = models.DateField(_("birth date"), null=True, blank=True)
    marketing_consent = models.BooleanField(_("marketing consent"), default=False)
    marketing_consent_at = models.DateTimeField(_("marketing consent changed at"), null=True, blank=True)
    is_staff = models.BooleanField(_("staff"), default=False, help_text=_("Can log in to the admin."))
    is_active = models.BooleanField(_("active"), default=True)
    date_joined = models.DateTimeField(_("joined"), default=timezone.now)
    deleted_at = models.DateTimeField(_("account closed at"), null=True, blank=True)
    first_app_login_at = models.DateTimeField(_("first login in the app"), null=True, blank=True, editable=False)
    # Access tokens issued before this moment are refused (logout everywhere, account closed).
    tokens_valid_after = models.DateTimeField(null=True, blank=True, editable=False)

    objects = UserManager()

    USERNAME_FIELD = "phone"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        verbose_name = _("user")
        verbose_name_plural = _("users")
        ordering = ["-date_joined"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(phone__isnull=True) | models.Q(phone__regex=r"^\+[1-9][0-9]{6,14}$"),
                name="user_phone_e164",
            ),
            models.CheckConstraint(
                condition=models.Q(deleted_at__isnull=True) | models.Q(phone__isnull=True, is_active=False),
                name="user_closed_has_no_phone",
            ),
        ]

    def __str__(self):
        return self.phone or f"closed account {self.pk}"

    def clean(self):
        super().clean()
        if self.phone:
            try:
                self.phone = normalize_phone(self.phone)
            except InvalidPhone as exc:
                raise ValidationError({"phone": exc.message}) from exc
        if self.email:
            self.email = self.__class__.objects.normalize_email(self.email)

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()

    def get_full_name(self):
        return self.full_name or str(self)

    def get_short_name(self):
        return self.first_name or str(self)


def validate_time_zone(value: str):
    if value not in zoneinfo.available_timezones():
        raise ValidationError(_("%(value)s is not a known time zone."), params={"value": value})


class Business(models.Model):
    """A partner of the circle: a café, salon, clinic, studio or shop."""

    class Category(models.TextChoices):
        CAFE = "cafe", _("Café")
        RESTAURANT = "restaurant", _("Restaurant")
        BEAUTY = "beauty", _("Beauty salon")
        CLINIC = "clinic", _("Clinic")
        FITNESS = "fitness", _("Fitness studio")
        EDUCATION = "education", _("Education")
        SHOP = "shop", _("Shop")
        SERVICES = "services", _("Services")
        OTHER = "other", _("Other")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(_("name"), max_length=200)
    slug = models.SlugField(_("slug"), max_length=100, unique=True)
    category = models.CharField(_("category"), max_length=20, choices=Category.choices, default=Category.OTHER)
    address = models.CharField(_("address"), max_length=300, blank=True)
    latitude = models.DecimalField(
        _("latitude"),
        max_digits=9,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(-90), MaxValueValidator(90)],
    )
    longitude = models.DecimalField(
        _("longitude"),
        max_digits=9,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(-180), MaxValueValidator(180)],
    )
    time_zone = models.CharField(
        _("time zone"), max_length=64, default="Europe/Moscow", validators=[validate_time_zone]
    )
    is_active = models.BooleanField(_("active"), default=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    members = models.ManyToManyField(User, through="Membership", related_name="businesses")

    class Meta:
        verbose_name = _("business")
        verbose_name_plural = _("businesses")
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(latitude__isnull=True, longitude__isnull=True)
                | models.Q(latitude__isnull=False, longitude__isnull=False),
                name="business_coordinates_both_or_none",
            ),
        ]

    def __str__(self):
        return self.name


class Membership(models.Model):
    """A person working at a business, with a role that says what they may do in the portal."""

    class Role(models.TextChoices):
        OWNER = "owner", _("Owner")
        MANAGER = "manager", _("Manager")
        CASHIER = "cashier", _("Cashier")

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(_("role"), max_length=10, choices=Role.choices)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("membership")
        verbose_name_plural = _("memberships")
        constraints = [models.UniqueConstraint(fields=["user", "business"], name="membership_unique_user_business")]

    def __str__(self):
        return f"{self.user} — {self.business} ({self.get_role_display()})"


class ApiKey(models.Model):
    """A key a partner's POS or own system uses for the partner API. Only its hash is kept;
    the key itself is shown once, when it is made. `prefix` identifies it in lists and logs."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(_("name"), max_length=100)
    prefix = models.CharField(_("prefix"), max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    created_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)

    class Meta:
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
