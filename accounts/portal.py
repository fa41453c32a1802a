"""The partner portal's frame: login by phone and SMS code, logout, the business switcher,
the `portal_view` guard every portal page goes through, and the partner's API keys.

Every portal view is wrapped in `portal_view(roles=...)`: it lets in only a logged-in person
with a membership of an active business, sets `request.business` and `request.membership`
(the business chosen in the switcher, else the first), activates the business's time zone,
and answers 403 to a role the view does not allow. Views then scope every query by
`request.business`, so another business's objects are 404.

This module is also the `portal` template library (`{% load portal %}`, registered in
settings): the filters that show money and phones the one portal way.
"""

import zoneinfo
from decimal import Decimal, InvalidOperation
from functools import wraps

import phonenumbers
from django import forms, template
from django.contrib import messages
from django.contrib.auth import login as auth_login
from django.contrib.auth import logout as auth_logout
from django.contrib.auth.views import redirect_to_login
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from accounts import services
from accounts.models import ApiKey, Membership
from accounts.phones import InvalidPhone, normalize_phone
from svoykrug.exceptions import DomainError

OWNER, MANAGER, CASHIER = Membership.Role.OWNER, Membership.Role.MANAGER, Membership.Role.CASHIER
ALL_ROLES = (OWNER, MANAGER, CASHIER)
MANAGING_ROLES = (OWNER, MANAGER)

PAGE_SIZE = 50
SESSION_BUSINESS = "portal_business_id"
SESSION_PENDING_LOGIN = "portal_login"

NO_ACCESS = _(
    "This phone number has no access to the partner portal. "
    "If you work at a partner of the circle, ask its owner to add you."
)


# --- Template filters -----------------------------------------------------------------------

register = template.Library()


@register.filter
def money(value) -> str:
    """`Decimal("1234.5")` → `1 234,50 ₽` (in the active language's number format)."""
    if value is None or value == "":
        return "—"
    try:
        amount = Decimal(value).quantize(Decimal("0.01"))
    except (InvalidOperation, TypeError, ValueError):
        return "—"
    return f"{formats.number_format(amount, 2, force_grouping=True)}\u00a0₽"


@register.filter
def phone(value) -> str:
    """`+79123456789` → `+7 912 345-67-89` (non-breaking spaces: a number never wraps);
    anything unparsable is shown as stored."""
    if not value:
        return "—"
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return value
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL).replace(" ", "\u00a0")


@register.simple_tag(takes_context=True)
def nav_active(context, url_name: str, exact: bool = False) -> str:
    """`active` on the navigation link of the section the page belongs to."""
    url = reverse(url_name)
    path = context["request"].path
    return "active" if (path == url if exact else path.startswith(url)) else ""


# --- Helpers --------------------------------------------------------------------------------


def active_memberships(user):
    """The person's memberships of active businesses, in the switcher's order."""
    return (
        Membership.objects.filter(user=user, business__is_active=True)
        .select_related("business")
        .order_by("business__name", "business_id")
    )


def domain_error_message(exc: DomainError) -> str:
    """A domain error as a sentence for a person, with the wait when it is a rate limit."""
    message = str(exc.message)
    if isinstance(exc, services.RateLimited):
        seconds = exc.retry_after
        message += " " + ngettext(
            "You can try again in %(seconds)d second.", "You can try again in %(seconds)d seconds.", seconds
        ) % {"seconds": seconds}
    elif isinstance(exc, services.CodeInvalid):
        left = exc.attempts_left
        message += " " + ngettext("%(count)d attempt left.", "%(count)d attempts left.", left) % {"count": left}
    return message


def paginate(request, items, per_page: int = PAGE_SIZE):
    """The page asked for in `?page=`; a bad or too large number gives the nearest page."""
    return Paginator(items, per_page).get_page(request.GET.get("page"))


def _posted(request):
    """The form data of a POST (also an empty one, so that it is validated), else None."""
    return request.POST if request.method == "POST" else None


def _safe_next(request, url: str | None) -> str | None:
    if url and url.startswith("/portal/") and url_has_allowed_host_and_scheme(url, allowed_hosts=None):
        return url
    return None


def portal_view(roles=ALL_ROLES):
    """Guard a portal view: login, a membership of an active business, one of `roles`.

    Sets `request.memberships`, `request.membership`, `request.business` and
    `request.can_manage` (owner or manager), and runs the view in the business's time zone."""

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not request.user.is_authenticated:
                # After the login, come back to the page; a form's POST cannot be replayed.
                back = request.get_full_path() if request.method == "GET" else reverse("portal:dashboard")
                return redirect_to_login(back)
            memberships = list(active_memberships(request.user))
            if not memberships:
                return render(request, "portal/accounts/no_access.html", {"message": NO_ACCESS}, status=403)
            chosen = request.session.get(SESSION_BUSINESS)
            membership = next((m for m in memberships if str(m.business_id) == chosen), memberships[0])
            request.memberships = memberships
            request.membership = membership
            request.business = membership.business
            request.can_manage = membership.role in MANAGING_ROLES
            with timezone.override(zoneinfo.ZoneInfo(membership.business.time_zone)):
                if membership.role not in roles:
                    return render(request, "portal/forbidden.html", status=403)
                return view(request, *args, **kwargs)

        wrapper.portal_roles = tuple(roles)
        return wrapper

    return decorator


# --- Forms ---------------------------------------------------------------------------------


class PortalForm(forms.Form):
    """A portal form: labels stand above their fields, without a colon."""

    # A service's names for the inputs it finds at fault, where they differ from the form's
    # (None: not a field of the form).
    SERVICE_FIELDS: dict[str, str | None] = {}

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)

    def add_service_error(self, message, fields: dict | None) -> None:
        """Show a service's refusal: each problem under the field it names, or the message
        above the form when it names none of the form's fields."""
        placed = False
        for name, problems in (fields or {}).items():
            field = self.SERVICE_FIELDS.get(name, name)
            if field in self.fields:
                for problem in problems:
                    self.add_error(field, problem)
                placed = True
        if not placed:
            self.add_error(None, message)


# --- Login ----------------------------------------------------------------------------------


class PhoneForm(PortalForm):
    phone = forms.CharField(
        label=_("Phone number"),
        max_length=32,
        widget=forms.TextInput(
            attrs={"autocomplete": "tel", "inputmode": "tel", "placeholder": "+7 900 000-00-00", "autofocus": True}
        ),
    )
    next = forms.CharField(required=False, widget=forms.HiddenInput)

    def clean_phone(self):
        try:
            return normalize_phone(self.cleaned_data["phone"])
        except InvalidPhone as exc:
            raise forms.ValidationError(exc.message) from exc


class CodeForm(PortalForm):
    code = forms.RegexField(
        label=_("Code from the SMS"),
        regex=r"^\d{1,12}$",
        max_length=12,
        error_messages={"invalid": _("Enter the digits of the code.")},
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}),
    )


@never_cache
@require_http_methods(["GET", "POST"])
def login_phone(request):
    """Step 1: the phone. A code goes to any allowed phone, so the answer says nothing
    about who has an account; who may enter is decided after the code is verified."""
    if request.user.is_authenticated and active_memberships(request.user).exists():
        return redirect("portal:dashboard")
    form = PhoneForm(_posted(request), initial={"next": _safe_next(request, request.GET.get("next"))})
    if request.method == "POST" and form.is_valid():
        phone_number = form.cleaned_data["phone"]
        try:
            challenge = services.send_otp_code(phone_number, client=services.client_ip(request))
        except DomainError as exc:
            form.add_error("phone", domain_error_message(exc))
        else:
            request.session[SESSION_PENDING_LOGIN] = {
                "code_id": challenge.code_id,
                "phone": phone_number,
                "next": _safe_next(request, form.cleaned_data["next"]),
            }
            return redirect("portal:login-code")
    return render(request, "portal/accounts/login_phone.html", {"form": form})


@never_cache
@require_http_methods(["GET", "POST"])
def login_code(request):
    """Step 2: the code. A wrong code says how many tries are left; a dead code sends the
    person back to step 1; a right code of a phone without a membership is refused."""
    pending = request.session.get(SESSION_PENDING_LOGIN)
    if not pending:
        return redirect("portal:login")
    form = CodeForm(_posted(request))
    if request.method == "POST" and form.is_valid():
        try:
            user = services.check_login_code(pending["code_id"], form.cleaned_data["code"])
        except services.CodeInvalid as exc:
            form.add_error("code", domain_error_message(exc))
        except DomainError as exc:
            del request.session[SESSION_PENDING_LOGIN]
            messages.error(request, domain_error_message(exc))
            return redirect("portal:login")
        else:
            del request.session[SESSION_PENDING_LOGIN]
            memberships = list(active_memberships(user)) if user is not None else []
            if not memberships:
                messages.error(request, NO_ACCESS)
                return redirect("portal:login")
            auth_login(request, user, backend="django.contrib.auth.backends.ModelBackend")
            request.session[SESSION_BUSINESS] = str(memberships[0].business_id)
            return redirect(pending.get("next") or "portal:dashboard")
    resend = PhoneForm(initial={"phone": pending["phone"], "next": pending.get("next")})
    return render(
        request, "portal/accounts/login_code.html", {"form": form, "phone": pending["phone"], "resend": resend}
    )


@require_POST
def logout_view(request):
    auth_logout(request)
    messages.info(request, gettext("You have logged out."))
    return redirect("portal:login")


@require_POST
@portal_view()
def switch_business(request):
    """Work in another business the person is a member of; anything else is 404."""
    wanted = request.POST.get("business", "")
    membership = next((m for m in request.memberships if str(m.business_id) == wanted), None)
    if membership is None:
        raise Http404
    request.session[SESSION_BUSINESS] = str(membership.business_id)
    messages.success(request, gettext("You are now working in %(business)s.") % {"business": membership.business})
    return redirect("portal:dashboard")


# --- API keys -------------------------------------------------------------------------------


class ApiKeyForm(PortalForm):
    name = forms.CharField(
        label=_("Name"),
        max_length=100,
        help_text=_("Where the key is used, e.g. “POS at the counter”."),
    )


@never_cache
@require_http_methods(["GET", "POST"])
@portal_view(roles=MANAGING_ROLES)
def api_keys(request):
    """The business's partner API keys. A new key is shown once, in the answer to the POST
    that made it: it is never stored, nor put in the session or a redirect."""
    form = ApiKeyForm(_posted(request))
    raw_key = new_key = None
    if request.method == "POST" and form.is_valid():
        new_key, raw_key = services.create_api_key(
            business=request.business, name=form.cleaned_data["name"], created_by=request.user
        )
        form = ApiKeyForm()
    keys = ApiKey.objects.filter(business=request.business).select_related("created_by").order_by("-created_at")
    return render(
        request,
        "portal/accounts/api_keys.html",
        {"form": form, "keys": keys, "raw_key": raw_key, "new_key": new_key},
    )


@require_POST
@portal_view(roles=MANAGING_ROLES)
def api_key_revoke(request, key_id):
    api_key = get_object_or_404(ApiKey, pk=key_id, business=request.business)
    if services.revoke_api_key(api_key=api_key):
        messages.success(
            request, gettext("The key “%(name)s” is revoked; it stops working at once.") % {"name": api_key.name}
        )
    else:
        messages.info(request, gettext("The key “%(name)s” was already revoked.") % {"name": api_key.name})
    return redirect("portal:api-keys")
