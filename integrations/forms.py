"""Forms of the portal's Integrations pages: a provider's connect form (built from the
provider's `fields`), the CSV upload and the column mapping of an import."""

from pathlib import Path

from django import forms
from django.conf import settings
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from accounts.portal import PortalForm
from integrations.imports import FIELDS
from integrations.providers.base import Provider

IMPORT_EXTENSIONS = (".csv", ".txt")
FIELD_LABELS = {
    "external_id": _("Purchase id"),
    "phone": _("Customer's phone"),
    "amount": _("Amount"),
    "occurred_at": _("Date and time"),
}
FIELD_HELP = {
    "external_id": _("The receipt or order number: a purchase already in the circle is not imported twice."),
    "phone": _("The customer's mobile phone."),
    "amount": _("The check's amount, e.g. 1500 or 1 500,50."),
    "occurred_at": _("When the purchase was made, e.g. 2026-03-14 12:30 or 14.03.2026 12:30."),
}


class ConnectForm(PortalForm):
    """The provider's fields. A secret is a password input that is never filled in: when
    one is stored, its hint shows the masked value and empty keeps it. Secrets are required
    only when connecting for the first time."""

    def __init__(self, *args, spec: type[Provider], stored: dict[str, str] | None = None, connected=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.spec = spec
        stored = stored or {}
        for form_field in spec.fields:
            help_text = str(form_field.help_text or "")
            if form_field.secret:
                if stored.get(form_field.name):
                    kept = gettext("Stored: %(masked)s. Leave empty to keep it.") % {"masked": stored[form_field.name]}
                    help_text = f"{help_text} {kept}".strip()
                self.fields[form_field.name] = forms.CharField(
                    label=form_field.label,
                    help_text=help_text,
                    required=form_field.required and not connected,
                    max_length=2000,
                    widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
                )
            else:
                self.fields[form_field.name] = forms.CharField(
                    label=form_field.label,
                    help_text=help_text,
                    required=form_field.required,
                    max_length=500,
                    widget=forms.TextInput(attrs={"autocomplete": "off"}),
                )

    def secret_names(self) -> set[str]:
        return {form_field.name for form_field in self.spec.fields if form_field.secret}


class ImportUploadForm(PortalForm):
    file = forms.FileField(label=_("CSV file"))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["file"].help_text = gettext(
            "A .csv or .txt file of up to %(size)d MB: comma, semicolon or tab separated, "
            "UTF-8 or Windows-1251 (as Excel saves it), with a header row."
        ) % {"size": settings.IMPORT_MAX_UPLOAD_MB}
        self.fields["file"].widget.attrs["accept"] = ",".join(IMPORT_EXTENSIONS)

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if Path(upload.name).suffix.lower() not in IMPORT_EXTENSIONS:
            raise forms.ValidationError(_("Upload a .csv or .txt file."))
        limit = settings.IMPORT_MAX_UPLOAD_MB
        if upload.size > limit * 1024 * 1024:
            raise forms.ValidationError(
                gettext("The file is larger than %(size)d MB: split it into smaller files.") % {"size": limit}
            )
        return upload


class MappingForm(PortalForm):
    """One select per import field, choosing among the file's columns; empty means "find the
    column by its name" (Телефон, Сумма, …)."""

    def __init__(self, *args, header: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        columns = []
        for column in header:
            if column.strip() and column not in columns:
                columns.append(column)
        choices = [("", _("Find by the column's name")), *((column, column) for column in columns)]
        for name in FIELDS:
            self.fields[name] = forms.ChoiceField(
                label=FIELD_LABELS.get(name, name), help_text=FIELD_HELP.get(name, ""), required=False, choices=choices
            )

    def clean(self):
        cleaned = super().clean()
        chosen: dict[str, str] = {}
        for name in FIELDS:
            column = cleaned.get(name)
            if not column:
                continue
            if column in chosen:
                self.add_error(
                    name,
                    gettext("The column “%(column)s” is already chosen for “%(field)s”.")
                    % {"column": column, "field": FIELD_LABELS.get(chosen[column], chosen[column])},
                )
            else:
                chosen[column] = name
        return cleaned

    def mapping(self) -> dict[str, str]:
        """{column: field} as `integrations.imports` takes it."""
        return {self.cleaned_data[name]: name for name in FIELDS if self.cleaned_data.get(name)}

    @staticmethod
    def initial_from(mapping: dict[str, str] | None, columns: dict[str, str] | None = None) -> dict[str, str]:
        """The selects' initial values: the job's mapping, else the columns the import found."""
        if mapping:
            return {field_name: column for column, field_name in mapping.items()}
        return dict(columns or {})
