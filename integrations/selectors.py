"""Read queries of the portal's Integrations pages. Every query takes the business (or one of
its integrations) as a required argument, so another business's objects are never found."""

from dataclasses import dataclass, field

from django.db.models import Count, Q, QuerySet
from django.utils.translation import gettext_lazy as _

from accounts.models import Business
from accounts.phones import InvalidPhone, mask_phone, normalize_phone
from integrations import crypto, imports
from integrations.models import CRMIntegration, CrmRecord, ImportJob, WebhookDelivery
from integrations.providers import provider_class
from integrations.providers.base import Provider

Status = CrmRecord.Status


# --- Integrations --------------------------------------------------------------------------


def business_integrations(business: Business) -> QuerySet:
    return CRMIntegration.objects.filter(business=business).select_related("business")


@dataclass
class ProviderCard:
    """One provider on the Integrations page: its spec (templates read `can_sync` and
    `accepts_webhooks`: they would call the class), and the business's integration with it
    (None when not connected) with what came through it."""

    code: str
    title: str
    spec: type[Provider]
    can_sync: bool = True
    accepts_webhooks: bool = True
    integration: CRMIntegration | None = None
    recorded: int = 0
    unmatched: int = 0
    credentials: list = field(default_factory=list)  # (label, masked value)
    settings: list = field(default_factory=list)  # (label, value) of the non-secret fields


def provider_cards(business: Business) -> list[ProviderCard]:
    """Every provider, in the order of CRMIntegration.Provider, with the business's integration."""
    connected = {
        integration.provider: integration
        for integration in business_integrations(business).annotate(
            recorded_count=Count(
                "records", filter=Q(records__status=Status.RECORDED, records__kind=CrmRecord.Kind.PURCHASE)
            ),
            unmatched_count=Count("records", filter=Q(records__status=Status.UNMATCHED)),
        )
    }
    cards = []
    for code, _label in CRMIntegration.Provider.choices:
        spec = provider_class(code)
        card = ProviderCard(
            code=code,
            title=spec.title,
            spec=spec,
            can_sync=spec.can_sync,
            accepts_webhooks=spec.accepts_webhooks,
            integration=connected.get(code),
        )
        if card.integration is not None:
            card.recorded = card.integration.recorded_count
            card.unmatched = card.integration.unmatched_count
            card.credentials = masked_credentials(card.integration, spec)
            config = card.integration.config or {}
            card.settings = [
                (form_field.label, config[form_field.name])
                for form_field in spec.fields
                if not form_field.secret and str(config.get(form_field.name) or "").strip()
            ]
        cards.append(card)
    return cards


def masked_credentials(integration: CRMIntegration, spec: type[Provider]) -> list[tuple[str, str]]:
    """(label, masked value) of each stored secret: the form's label where the secret is a
    form field, else its name (tokens a provider got for itself, such as amoCRM's)."""
    labels = {form_field.name: form_field.label for form_field in spec.fields}
    try:
        stored = integration.credentials
    except crypto.CredentialsUnreadable:
        return [(_("Credentials"), _("unreadable with the configured keys: connect again"))]
    return [(labels.get(name, name.replace("_", " ")), crypto.mask(value)) for name, value in stored.items()]


def stored_secrets(integration: CRMIntegration | None) -> dict[str, str]:
    """{secret name: masked value} for the connect form's "stored" hints; {} when unreadable."""
    if integration is None:
        return {}
    try:
        return {name: crypto.mask(value) for name, value in integration.credentials.items()}
    except crypto.CredentialsUnreadable:
        return {}


# --- Records and webhooks ---------------------------------------------------------------------

RECORD_FILTERS = (Status.UNMATCHED, Status.RECORDED, Status.REJECTED, Status.IGNORED)


def integration_records(integration: CRMIntegration, status: str | None = None) -> QuerySet:
    """The records the CRM sent, newest first, optionally of one status."""
    records = CrmRecord.objects.filter(integration=integration).select_related("transaction")
    if status:
        records = records.filter(status=status)
    return records.order_by("-updated_at", "-id")


def record_counts(integration: CRMIntegration) -> dict[str, int]:
    """{status: count} for every status (0 included), and "all"."""
    counts = dict.fromkeys(Status.values, 0)
    for row in CrmRecord.objects.filter(integration=integration).values("status").annotate(count=Count("pk")):
        counts[row["status"]] = row["count"]
    counts["all"] = sum(counts.values())
    return counts


def masked_phone(raw: str) -> str:
    """A phone as the CRM sent it, masked: normalised first when it is a valid number."""
    if not raw:
        return "—"
    try:
        return mask_phone(normalize_phone(raw))
    except InvalidPhone:
        return mask_phone(raw)


def masked_reason(record: CrmRecord) -> str:
    """The record's reason with the raw phone it may quote masked as in the phone column."""
    if record.phone and record.phone in record.reason:
        return record.reason.replace(record.phone, masked_phone(record.phone))
    return record.reason


def integration_webhooks(integration: CRMIntegration) -> QuerySet:
    """The latest webhooks, newest first, without their bodies (customers' data; staff see
    them in the admin)."""
    return (
        WebhookDelivery.objects.filter(integration=integration)
        .only("pk", "integration_id", "received_at", "status", "result", "error", "attempts", "processed_at")
        .order_by("-received_at", "-id")
    )


def webhook_summary(delivery: WebhookDelivery) -> tuple[int | None, list[tuple[str, int]]]:
    """(events in the webhook, [(result, count), ...]) from its stored result: a received
    webhook has {"events": n}, a processed one the counts of what its events did."""
    result = delivery.result if isinstance(delivery.result, dict) else {}
    counts = result.get("counts") if isinstance(result.get("counts"), dict) else {}
    events = result.get("events")
    if not isinstance(events, int):
        events = sum(value for value in counts.values() if isinstance(value, int)) if counts else None
    return events, sorted((str(name), value) for name, value in counts.items() if isinstance(value, int))


# --- Imports ------------------------------------------------------------------------------------


def business_import_jobs(business: Business) -> QuerySet:
    return ImportJob.objects.filter(business=business).select_related("uploaded_by").order_by("-created_at")


def is_draft(job: ImportJob) -> bool:
    """Uploaded but not confirmed: still pending, and no row count yet (the portal counts the
    rows when the partner confirms, just before it queues the import)."""
    return job.status == ImportJob.Status.PENDING and job.rows_total is None


def file_header(job: ImportJob) -> list[str]:
    """The uploaded file's header as the import reads it; ImportFileError when there is none."""
    with job.file.open("rb") as binary:
        return list(imports.read_header(binary))


def import_preview(job: ImportJob, mapping: dict[str, str] | None) -> dict:
    """imports.preview of the job's file, with the chosen columns in the order of
    imports.FIELDS (`fields`: [(field, column)]) and each row's cells of those columns
    (`cells`), so that a rejected row shows what was read."""
    with job.file.open("rb") as binary:
        result = imports.preview(binary, mapping=mapping, business=job.business)
    header = result["header"]
    result["fields"] = [(name, result["columns"][name]) for name in imports.FIELDS]
    indexes = [header.index(column) for _name, column in result["fields"]]
    for row in result["rows"]:
        values = row.get("values") or []
        row["cells"] = [values[index].strip() if index < len(values) else "" for index in indexes]
    return result
