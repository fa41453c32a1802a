from django import forms
from django.contrib import admin, messages
from django.contrib.auth import forms as auth_forms
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from accounts import services
from accounts.models import ApiKey, Business, Membership, User
from accounts.phones import InvalidPhone, normalize_phone


class PhoneFormMixin(forms.ModelForm):
    # Wider than the stored E.164 value: staff type numbers with spaces and brackets.
    phone = forms.CharField(label=_("phone"), max_length=32, required=False)

    def clean_phone(self):
        phone = self.cleaned_data.get("phone")
        if not phone:
            return None
        try:
            return normalize_phone(phone)
        except InvalidPhone as exc:
            raise forms.ValidationError(exc.message) from exc


class UserCreationForm(PhoneFormMixin):
    password = forms.CharField(
        label=_("Password"),
        widget=forms.PasswordInput,
        required=False,
        help_text=_("Only staff who log in to the admin need one; customers log in with SMS codes."),
    )

    class Meta:
        model = User
        fields = ("phone", "first_name", "last_name", "email", "is_staff")

    def clean(self):
        cleaned = super().clean()
        if not cleaned.get("phone") and "phone" not in self.errors:
            self.add_error("phone", _("A new user needs a phone number."))
        return cleaned

    def save(self, commit=True):
        user = super().save(commit=False)
        if self.cleaned_data.get("password"):
            user.set_password(self.cleaned_data["password"])
        else:
            user.set_unusable_password()
        if commit:
            user.save()
        return user


class UserChangeForm(PhoneFormMixin, auth_forms.UserChangeForm):
    """Django's change form (the password shows as a hash with a link to change it) with
    the phone parsed as typed."""

    class Meta(auth_forms.UserChangeForm.Meta):
        model = User
        fields = [
            "phone",
            "password",
            "first_name",
            "last_name",
            "email",
            "birth_date",
            "marketing_consent",
            "is_active",
            "is_staff",
            "is_superuser",
            "groups",
            "user_permissions",
        ]


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user", "business"]


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    form = UserChangeForm
    add_form = UserCreationForm
    ordering = ["-date_joined"]
    list_display = ["phone", "first_name", "last_name", "email", "is_staff", "is_active", "date_joined"]
    list_filter = ["is_staff", "is_superuser", "is_active", "marketing_consent", "memberships__role"]
    search_fields = ["phone", "first_name", "last_name", "email"]
    readonly_fields = ["id", "date_joined", "last_login", "marketing_consent_at", "deleted_at"]
    inlines = [MembershipInline]
    fieldsets = (
        (None, {"fields": ("id", "phone", "password")}),
        (_("Personal data"), {"fields": ("first_name", "last_name", "email", "birth_date")}),
        (_("Consent"), {"fields": ("marketing_consent", "marketing_consent_at")}),
        (
            _("Access"),
            {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")},
        ),
        (_("Dates"), {"fields": ("date_joined", "last_login", "deleted_at")}),
    )
    add_fieldsets = (
        (None, {"classes": ("wide",), "fields": ("phone", "first_name", "last_name", "email", "is_staff", "password")}),
    )
    filter_horizontal = ("groups", "user_permissions")


@admin.register(Business)
class BusinessAdmin(admin.ModelAdmin):
    list_display = ["name", "category", "address", "time_zone", "is_active", "created_at"]
    list_filter = ["category", "is_active", "time_zone"]
    search_fields = ["name", "slug", "address"]
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ["id", "created_at"]
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "business", "role", "created_at"]
    list_filter = ["role", "business__category", "business"]
    search_fields = ["user__phone", "user__first_name", "user__last_name", "business__name"]
    autocomplete_fields = ["user", "business"]
    list_select_related = ["user", "business"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are made by `services.create_api_key` (the key is shown once, in a message, and
    only its hash is kept) and revoked by `services.revoke_api_key`; nothing else changes them."""

    list_display = ["name", "business", "prefix", "is_active", "created_by", "created_at", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter), "business"]
    search_fields = ["name", "prefix", "business__name"]
    list_select_related = ["business", "created_by"]
    autocomplete_fields = ["business"]
    fields = ["business", "name", "prefix", "created_by", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    @admin.display(description=_("active"), boolean=True)
    def is_active(self, api_key):
        return api_key.is_active

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ["prefix", "created_by", "created_at", "last_used_at", "revoked_at"]
        return self.fields

    def has_change_permission(self, request, obj=None):
        # A key's data never changes by hand; the change page only shows it.
        return False

    def has_delete_permission(self, request, obj=None):
        # Revoked, never deleted: the row says which key was used and until when.
        return False

    def has_revoke_permission(self, request):
        return request.user.has_perm("accounts.change_apikey")

    def save_model(self, request, obj, form, change):
        api_key, raw_key = services.create_api_key(
            business=form.cleaned_data["business"], name=form.cleaned_data["name"], created_by=request.user
        )
        for field in ApiKey._meta.concrete_fields:
            setattr(obj, field.attname, getattr(api_key, field.attname))
        self.message_user(
            request,
            _("The new key for %(business)s is %(key)s — copy it now: it is not stored and will not be shown again.")
            % {"business": api_key.business, "key": raw_key},
            messages.WARNING,
        )

    @admin.action(description=_("Revoke selected keys"), permissions=["revoke"])
    def revoke(self, request, queryset):
        revoked = sum(services.revoke_api_key(api_key=api_key) for api_key in queryset)
        self.message_user(
            request,
            ngettext("Revoked %(count)d key.", "Revoked %(count)d keys.", revoked) % {"count": revoked},
            messages.SUCCESS,
        )
