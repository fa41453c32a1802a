"""The program terms and their history."""

import re
from decimal import Decimal

from django import forms
from django.contrib import messages
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.shortcuts import redirect, render
from django.utils import formats
from django.utils.text import capfirst
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_GET, require_POST

from accounts.portal import MANAGING_ROLES, paginate, portal_view
from loyalty import services
from loyalty.models import LoyaltyProgram, ProgramChange
from loyalty.portal.common import add_domain_error
from svoykrug.exceptions import DomainError


class ProgramForm(forms.ModelForm):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("label_suffix", "")
        super().__init__(*args, **kwargs)

    class Meta:
        model = LoyaltyProgram
        fields = services.PROGRAM_FIELDS
        labels = {"is_active": _("The program is on")}


def _program_page(request, form: ProgramForm, status: int = 200):
    history = paginate(
        request,
        ProgramChange.objects.filter(program__business=request.business).select_related("changed_by"),
        per_page=20,
    )
    for change in history:
        change.rows = [
            (_field_label(field), _shown(values[0]), _shown(values[1]))
            # In the form's order: a JSON column does not keep the keys' order on PostgreSQL.
            for field, values in sorted(change.changes.items(), key=lambda item: _field_order(item[0]))
            if isinstance(values, list | tuple) and len(values) == 2
        ]
    if not request.can_manage:
        for field in form.fields.values():
            field.disabled = True
    return render(request, "portal/loyalty/program.html", {"form": form, "history": history}, status=status)


def _field_order(field: str) -> int:
    fields = services.PROGRAM_FIELDS
    return fields.index(field) if field in fields else len(fields)


def _field_label(field: str) -> str:
    """A program field as the form labels it (a field since removed by its name)."""
    if field in ProgramForm.base_fields:
        return str(ProgramForm.base_fields[field].label)
    try:
        return capfirst(LoyaltyProgram._meta.get_field(field).verbose_name)
    except FieldDoesNotExist:
        return field


def _shown(value) -> str:
    """A value of the change history as the page shows it: yes/no, or a localised number."""
    if isinstance(value, bool):
        return gettext("yes") if value else gettext("no")
    if value is None:
        return "—"
    if isinstance(value, str) and re.fullmatch(r"-?\d+\.\d+", value):
        return formats.number_format(Decimal(value), 2)
    return str(value)


def _current_program(business) -> LoyaltyProgram:
    # Reading must not create the program: a missing one shows the default terms.
    return LoyaltyProgram.objects.filter(business=business).first() or LoyaltyProgram(business=business)


@require_GET
@portal_view()
def program(request):
    """The program's terms (a form for owners and managers, read-only for cashiers) and
    every change of them: who, when, what from what to what."""
    return _program_page(request, ProgramForm(instance=_current_program(request.business)))


@portal_view(roles=MANAGING_ROLES)  # first: a visitor is sent to log in, a cashier sees "not allowed"
@require_POST
def program_update(request):
    form = ProgramForm(request.POST, instance=_current_program(request.business))
    if form.is_valid():
        changes = {field: form.cleaned_data[field] for field in services.PROGRAM_FIELDS}
        try:
            services.update_program(business=request.business, changed_by=request.user, **changes)
        except ValidationError as exc:
            form.add_error(None, exc)
        except DomainError as exc:
            add_domain_error(form, exc)
        else:
            if form.has_changed():
                messages.success(request, gettext("The program is saved."))
            else:
                messages.info(request, gettext("Nothing changed."))
            return redirect("portal:program")
    return _program_page(request, form, status=400)
