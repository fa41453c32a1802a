"""The partner portal's Integrations section: connecting a CRM, its health and what came
through it (records, webhooks), and the CSV history import.

Owners and managers only (`portal_view(roles=MANAGING_ROLES)`). Every object is looked up
through `integrations.selectors` scoped by `request.business`, so another business's
integration or import is 404. Writes go through `integrations.services` and the tasks;
secrets are never rendered (password inputs are never filled in; stored ones show masked).

An import is uploaded first (an ImportJob, status "pending", not queued: a draft), shown as a
preview with the column mapping, and queued only when the partner confirms; the portal then
counts the file's rows, which is what tells a confirmed job from a draft
(`selectors.is_draft`). Cancelling a draft deletes it with its file.
"""

from pathlib import Path

from celery.result import EagerResult
from django.conf import settings
from django.contrib import messages
from django.db import transaction
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.portal import MANAGING_ROLES, paginate, portal_view
from integrations import crypto, imports, selectors, services, tasks
from integrations.forms import FIELD_LABELS, ConnectForm, ImportUploadForm, MappingForm
from integrations.models import CRMIntegration, CrmRecord, ImportJob
from integrations.providers import get_provider, provider_class
from integrations.providers.base import Provider, ProviderError

# Where each CRM takes the webhook URL (providers without webhooks have none).
WEBHOOK_HINTS = {
    "yclients": _(
        "Svoy Krug sets it up in YCLIENTS when you connect, if your YCLIENTS user may change the company's "
        "settings; otherwise paste it in YCLIENTS → Settings → Webhooks."
    ),
    "iiko": _(
        "Svoy Krug sets it up in iiko Cloud for each organisation when you connect; save the form again "
        "to set it up anew."
    ),
    "amocrm": _(
        "Paste it in amoCRM → Settings → Integrations → Webhooks, for “lead status changed”, "
        "“lead added” and “lead deleted”."
    ),
    "onec": _(
        "Give it to your 1C developer with the Svoy Krug contract for 1C: your 1C sends each closed sale "
        "and return to this address."
    ),
}
# How each health state looks (the portal's badge colours).
HEALTH_BADGES = {
    CRMIntegration.Health.OK: "active",
    CRMIntegration.Health.DEGRADED: "partially_refunded",
    CRMIntegration.Health.FAILING: "revoked",
}
RECORD_BADGES = {
    CrmRecord.Status.RECORDED: "completed",
    CrmRecord.Status.UNMATCHED: "partially_refunded",
    CrmRecord.Status.REJECTED: "refunded",
    CrmRecord.Status.IGNORED: "",
}
IMPORT_BADGES = {
    ImportJob.Status.PENDING: "",
    ImportJob.Status.RUNNING: "partially_refunded",
    ImportJob.Status.DONE: "completed",
    ImportJob.Status.FAILED: "refunded",
}
# What a webhook's events did (the keys of services.Outcome's counts).
RESULT_LABELS = {
    "recorded": _("recorded"),
    "duplicate": _("already recorded"),
    "changed": _("changed after it was counted"),
    "unmatched": _("no customer phone"),
    "rejected": _("rejected"),
    "ignored": _("ignored"),
    "refunded": _("refunded"),
    "closed": _("closed"),
    "skipped": _("nothing to do"),
}


def _posted(request):
    return request.POST if request.method == "POST" else None


def _integration_or_404(request, integration_id) -> CRMIntegration:
    return get_object_or_404(selectors.business_integrations(request.business), pk=integration_id)


def _job_or_404(request, job_id) -> ImportJob:
    return get_object_or_404(selectors.business_import_jobs(request.business), pk=job_id)


def _card_url(integration: CRMIntegration) -> str:
    return f"{reverse('portal:integrations')}#{integration.provider}"


def _title(integration: CRMIntegration) -> str:
    return provider_class(integration.provider).title or integration.get_provider_display()


def _registers_webhooks(spec: type[Provider]) -> bool:
    """The provider sets its webhook up through the CRM's API (else the partner pastes it)."""
    return spec.accepts_webhooks and spec.register_webhook is not Provider.register_webhook


# --- The providers' cards ---------------------------------------------------------------------


@never_cache
@require_GET
@portal_view(roles=MANAGING_ROLES)
def integration_list(request):
    """One card per provider: connect, or the integration's health, sync times, masked
    credentials, webhook URL, actions and what came through it."""
    cards = selectors.provider_cards(request.business)
    for card in cards:
        card.webhook_hint = WEBHOOK_HINTS.get(card.code, "")
        card.webhook_url = ""
        if card.integration is not None:
            card.health_badge = HEALTH_BADGES.get(card.integration.health, "")
            if card.spec.accepts_webhooks:
                card.webhook_url = request.build_absolute_uri(card.integration.webhook_path())
    return render(request, "portal/integrations/list.html", {"cards": cards})


@never_cache
@require_http_methods(["GET", "POST"])
@portal_view(roles=MANAGING_ROLES)
def integration_connect(request, provider):
    """Connect a provider, or change its settings. The form's secrets are never filled in;
    empty keeps a stored one. Saved, the connection is tested and the webhook set up where
    the CRM's API allows it."""
    if provider not in CRMIntegration.Provider.values:
        raise Http404
    spec = provider_class(provider)
    integration = selectors.business_integrations(request.business).filter(provider=provider).first()
    form = ConnectForm(
        _posted(request),
        spec=spec,
        stored=selectors.stored_secrets(integration),
        connected=integration is not None,
        initial=dict(integration.config or {}) if integration else None,
    )
    if request.method == "POST" and form.is_valid():
        try:
            # A refusal of the CRM (a wrong amoCRM code) leaves the integration as it was.
            with transaction.atomic():
                integration = services.connect_integration(
                    business=request.business, provider=provider, form_data=dict(form.cleaned_data)
                )
        except ProviderError as exc:
            form.add_error(None, exc.message)
        except crypto.CredentialsUnreadable:
            form.add_error(
                None,
                gettext("The stored credentials cannot be read; ask Svoy Krug's support to reset this integration."),
            )
        else:
            _after_connect(request, integration, spec)
            return redirect(_card_url(integration))
    context = {"form": form, "title": spec.title, "provider": provider, "integration": integration}
    status = 400 if request.method == "POST" else 200
    return render(request, "portal/integrations/connect.html", context, status=status)


def _after_connect(request, integration: CRMIntegration, spec: type[Provider]) -> None:
    title = spec.title
    ok, text = services.check_connection(integration)
    if ok:
        messages.success(
            request, gettext("%(provider)s is connected: %(description)s") % {"provider": title, "description": text}
        )
    else:
        messages.warning(
            request,
            gettext("The %(provider)s settings are saved, but the connection test failed: %(error)s")
            % {"provider": title, "error": text},
        )
    if not spec.accepts_webhooks:
        return
    if not _registers_webhooks(spec):
        messages.info(
            request,
            gettext("Paste the webhook URL from the %(provider)s card below into %(provider)s.") % {"provider": title},
        )
        return
    if not ok:
        messages.warning(
            request,
            gettext(
                "The webhook was not set up in %(provider)s while the connection fails: fix the settings and "
                "save them again, or paste the webhook URL into %(provider)s by hand."
            )
            % {"provider": title},
        )
        return
    url = request.build_absolute_uri(integration.webhook_path())
    try:
        registered = get_provider(integration).register_webhook(url)
    except ProviderError as exc:
        messages.warning(
            request,
            gettext(
                "Svoy Krug could not set up the webhook in %(provider)s (%(error)s): paste the webhook URL "
                "into %(provider)s by hand."
            )
            % {"provider": title, "error": exc.message},
        )
        return
    if registered:
        messages.success(request, gettext("The webhook is set up in %(provider)s automatically.") % {"provider": title})
    else:
        messages.info(
            request,
            gettext("Paste the webhook URL from the %(provider)s card below into %(provider)s.") % {"provider": title},
        )


@require_POST
@portal_view(roles=MANAGING_ROLES)
def integration_test(request, integration_id):
    """One cheap authenticated call to the CRM, now; its answer as a message."""
    integration = _integration_or_404(request, integration_id)
    ok, text = services.check_connection(integration)
    if ok:
        messages.success(
            request,
            gettext("The connection to %(provider)s works: %(description)s")
            % {"provider": _title(integration), "description": text},
        )
    else:
        messages.error(
            request,
            gettext("The connection to %(provider)s failed: %(error)s")
            % {"provider": _title(integration), "error": text},
        )
    return redirect(_card_url(integration))


@require_POST
@portal_view(roles=MANAGING_ROLES)
def integration_sync(request, integration_id):
    """Queue a sync now. Where tasks run in the request (no broker), its outcome is shown."""
    integration = _integration_or_404(request, integration_id)
    title = _title(integration)
    if not provider_class(integration.provider).can_sync:
        messages.error(
            request, gettext("%(provider)s cannot be synced: it sends its sales itself.") % {"provider": title}
        )
        return redirect(_card_url(integration))
    if not integration.is_active:
        messages.error(request, gettext("%(provider)s is paused: resume it to sync.") % {"provider": title})
        return redirect(_card_url(integration))
    result = tasks.sync_integration.delay(str(integration.pk))
    if isinstance(result, EagerResult):
        _report_sync(request, title, result.result)
    else:
        messages.success(
            request,
            gettext("A sync of %(provider)s is queued: new purchases appear in a minute or two.") % {"provider": title},
        )
    return redirect(_card_url(integration))


def _report_sync(request, title: str, outcome) -> None:
    outcome = outcome if isinstance(outcome, dict) else {}
    if "failed" in outcome:
        messages.error(
            request,
            gettext("The sync of %(provider)s failed: %(error)s") % {"provider": title, "error": outcome["failed"]},
        )
    elif outcome.get("skipped") == "busy":
        messages.info(
            request,
            gettext("A sync of %(provider)s is already running; its purchases appear when it ends.")
            % {"provider": title},
        )
    elif outcome.get("skipped"):
        messages.warning(request, gettext("%(provider)s is paused: resume it to sync.") % {"provider": title})
    else:
        counts = outcome.get("counts") or {}
        recorded = int(counts.get("recorded", 0))
        messages.success(
            request,
            ngettext(
                "The sync of %(provider)s is done: %(count)d new purchase.",
                "The sync of %(provider)s is done: %(count)d new purchases.",
                recorded,
            )
            % {"provider": title, "count": recorded},
        )
        unmatched = int(counts.get("unmatched", 0))
        if unmatched:
            messages.warning(
                request,
                ngettext(
                    "%(count)d record has no customer phone: add the phone in %(provider)s.",
                    "%(count)d records have no customer phone: add the phones in %(provider)s.",
                    unmatched,
                )
                % {"provider": title, "count": unmatched},
            )


@require_POST
@portal_view(roles=MANAGING_ROLES)
def integration_active(request, integration_id):
    """Pause or resume: `active` 1 or 0 (a form sent twice does the same), else a toggle.
    A paused integration takes no webhooks and is not synced."""
    integration = _integration_or_404(request, integration_id)
    wanted = {"1": True, "0": False}.get(request.POST.get("active", ""), not integration.is_active)
    CRMIntegration.objects.filter(pk=integration.pk).update(is_active=wanted, updated_at=timezone.now())
    if wanted:
        messages.success(request, gettext("%(provider)s is resumed.") % {"provider": _title(integration)})
    else:
        messages.success(
            request,
            gettext("%(provider)s is paused: its webhooks are refused and it is not synced until you resume it.")
            % {"provider": _title(integration)},
        )
    return redirect(_card_url(integration))


@never_cache
@require_GET
@portal_view(roles=MANAGING_ROLES)
def integration_records(request, integration_id):
    """What the CRM sent, newest first, by status; unmatched records wait for a phone in the CRM."""
    integration = _integration_or_404(request, integration_id)
    status = request.GET.get("status", "")
    if status not in CrmRecord.Status.values:
        status = ""
    page = paginate(request, selectors.integration_records(integration, status or None))
    for record in page:
        record.masked_phone = selectors.masked_phone(record.phone)
        record.shown_reason = selectors.masked_reason(record)
        record.badge = RECORD_BADGES.get(record.status, "")
    counts = selectors.record_counts(integration)
    tabs = [("", gettext("All"), counts["all"])] + [
        (value, CrmRecord.Status(value).label, counts[value]) for value in selectors.RECORD_FILTERS
    ]
    context = {
        "integration": integration,
        "title": _title(integration),
        "page": page,
        "status": status,
        "tabs": tabs,
        "counts": counts,
    }
    return render(request, "portal/integrations/records.html", context)


@never_cache
@require_GET
@portal_view(roles=MANAGING_ROLES)
def integration_webhooks(request, integration_id):
    """The latest webhooks: when, status, events and what they did, error. Never the bodies."""
    integration = _integration_or_404(request, integration_id)
    page = paginate(request, selectors.integration_webhooks(integration))
    for delivery in page:
        events, counts = selectors.webhook_summary(delivery)
        delivery.events = events
        delivery.counts = [(RESULT_LABELS.get(name, name), count) for name, count in counts]
    context = {
        "integration": integration,
        "title": _title(integration),
        "page": page,
        "retention_days": settings.INTEGRATIONS_WEBHOOK_RETENTION_DAYS,
    }
    return render(request, "portal/integrations/webhooks.html", context)


# --- CSV import --------------------------------------------------------------------------------


@never_cache
@require_http_methods(["GET", "POST"])
@portal_view(roles=MANAGING_ROLES)
def import_list(request):
    """Upload a CSV (kept as a draft ImportJob, not yet imported) and the previous imports."""
    form = ImportUploadForm(_posted(request), request.FILES or None)
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        job = ImportJob(business=request.business, uploaded_by=request.user, original_name=Path(upload.name).name[:255])
        job.file.save(f"{job.pk}{Path(upload.name).suffix.lower()}", upload, save=False)
        job.save()
        return redirect("portal:import-preview", job_id=job.pk)
    page = paginate(request, selectors.business_import_jobs(request.business), per_page=20)
    for job in page:
        job.draft = selectors.is_draft(job)
        job.badge = IMPORT_BADGES.get(job.status, "")
    status = 400 if request.method == "POST" else 200
    return render(request, "portal/integrations/imports.html", {"form": form, "page": page}, status=status)


@never_cache
@require_http_methods(["GET", "POST"])
@portal_view(roles=MANAGING_ROLES)
def import_preview(request, job_id):
    """Step 2: the file's columns and first rows as they will be read, with a select per
    field. "Preview" shows them again with the chosen columns; "Import" queues the import."""
    job = _job_or_404(request, job_id)
    if not selectors.is_draft(job):
        return redirect("portal:import", job_id=job.pk)
    context = {"job": job, "form": None, "preview": None, "columns": [], "file_error": ""}
    try:
        header = selectors.file_header(job)
    except (imports.ImportFileError, UnicodeDecodeError, OSError) as exc:
        context["file_error"] = str(exc)
        return render(request, "portal/integrations/import_preview.html", context, status=400)
    if request.method == "POST":
        form = MappingForm(request.POST, header=header)
        if not form.is_valid():
            context["form"] = form
            return render(request, "portal/integrations/import_preview.html", context, status=400)
        mapping = form.mapping()
    else:
        form, mapping = None, job.mapping or None
    try:
        context["preview"] = selectors.import_preview(job, mapping)
    except (imports.ImportFileError, UnicodeDecodeError) as exc:
        context["file_error"] = str(exc)
    else:
        context["columns"] = [(FIELD_LABELS.get(name, name), column) for name, column in context["preview"]["fields"]]
    if form is None:
        columns = context["preview"]["columns"] if context["preview"] else None
        form = MappingForm(header=header, initial=MappingForm.initial_from(job.mapping, columns))
    context["form"] = form
    if request.method == "POST" and request.POST.get("action") == "import" and not context["file_error"]:
        return _start_import(request, job, mapping or {})
    status = 400 if context["file_error"] else 200
    return render(request, "portal/integrations/import_preview.html", context, status=status)


def _start_import(request, job: ImportJob, mapping: dict[str, str]):
    with job.file.open("rb") as binary:
        rows = imports.count_rows(binary)
    # Once: a form sent twice finds the job no longer a draft.
    confirmed = ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.PENDING, rows_total__isnull=True).update(
        mapping=mapping, rows_total=rows
    )
    if confirmed:
        tasks.run_import.delay(str(job.pk))
        messages.success(request, gettext("The import has started: this page shows its progress."))
    return redirect("portal:import", job_id=job.pk)


@require_POST
@portal_view(roles=MANAGING_ROLES)
def import_cancel(request, job_id):
    """Delete a draft and its file; an import already started runs on."""
    job = _job_or_404(request, job_id)
    deleted, _by_model = ImportJob.objects.filter(
        pk=job.pk, status=ImportJob.Status.PENDING, rows_total__isnull=True
    ).delete()
    if not deleted:
        messages.error(request, gettext("This import has already started and cannot be cancelled."))
        return redirect("portal:import", job_id=job.pk)
    if job.file:
        job.file.storage.delete(job.file.name)
    messages.success(request, gettext("The upload “%(name)s” is deleted.") % {"name": job.original_name})
    return redirect("portal:imports")


@never_cache
@require_GET
@portal_view(roles=MANAGING_ROLES)
def import_detail(request, job_id):
    """An import's progress (the page reloads itself while it runs) and, when done, its report."""
    job = _job_or_404(request, job_id)
    if selectors.is_draft(job):
        return redirect("portal:import-preview", job_id=job.pk)
    running = job.status in (ImportJob.Status.PENDING, ImportJob.Status.RUNNING)
    errors = paginate(request, job.errors or [], per_page=100) if job.status == ImportJob.Status.DONE else None
    context = {
        "job": job,
        "running": running,
        "errors": errors,
        "badge": IMPORT_BADGES.get(job.status, ""),
        "unlisted": max(0, job.rejected - len(job.errors or [])),
    }
    return render(request, "portal/integrations/import_detail.html", context)


@never_cache
@require_GET
@portal_view(roles=MANAGING_ROLES)
def import_progress(request, job_id):
    job = _job_or_404(request, job_id)
    return JsonResponse(
        {
            "status": job.status,
            "percent": job.percent,
            "rows_done": job.rows_done,
            "rows_total": job.rows_total,
            "imported": job.imported,
            "duplicates": job.duplicates,
            "rejected": job.rejected,
        }
    )
