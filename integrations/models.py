"""CRM integrations: a business's connection to its CRM or POS, what came through it, and CSV imports."""

import secrets
import uuid

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from accounts.models import Business
from integrations import crypto
from loyalty.models import Transaction


def _new_webhook_secret() -> str:
    return secrets.token_urlsafe(32)


class CRMIntegration(models.Model):
    """One business's connection to one CRM or POS. Secrets live encrypted in `credentials`;
    the rest of what the provider needs (company id, subdomain, host) in `config`."""

    class Provider(models.TextChoices):
        YCLIENTS = "yclients", "YCLIENTS"
        IIKO = "iiko", "iiko Cloud"
        AMOCRM = "amocrm", "amoCRM"
        ONEC = "onec", "1C"
        RENOVATIO = "renovatio", "Renovatio"

    class Health(models.TextChoices):
        OK = "ok", _("OK")
        DEGRADED = "degraded", _("Degraded")
        FAILING = "failing", _("Failing")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="crm_integrations")
    provider = models.CharField(_("provider"), max_length=20, choices=Provider.choices)
    config = models.JSONField(_("settings"), default=dict, blank=True)
    credentials_encrypted = models.TextField(_("credentials (encrypted)"), blank=True, editable=False)
    webhook_secret = models.CharField(_("webhook secret"), max_length=64, default=_new_webhook_secret, editable=False)
    is_active = models.BooleanField(_("active"), default=True)
    health = models.CharField(_("health"), max_length=10, choices=Health.choices, default=Health.OK)
    last_sync_at = models.DateTimeField(_("last sync"), null=True, blank=True)
    last_success_at = models.DateTimeField(_("last successful sync"), null=True, blank=True)
    watermark = models.DateTimeField(
        _("synced up to"), null=True, blank=True, help_text=_("Changes up to this time have been fetched.")
    )
    last_error = models.TextField(_("last error"), blank=True)
    last_error_at = models.DateTimeField(_("last error at"), null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(_("failures in a row"), default=0)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("CRM integration")
        verbose_name_plural = _("CRM integrations")
        ordering = ["business__name", "provider"]
        constraints = [
            models.UniqueConstraint(fields=["business", "provider"], name="integration_one_per_provider"),
        ]

    def __str__(self):
        return f"{self.business} · {self.get_provider_display()}"

    @property
    def credentials(self) -> dict:
        return crypto.decrypt(self.credentials_encrypted)

    @credentials.setter
    def credentials(self, value: dict) -> None:
        self.credentials_encrypted = crypto.encrypt(value)

    def masked_credentials(self) -> dict:
        try:
            return {key: crypto.mask(value) for key, value in self.credentials.items()}
        except crypto.CredentialsUnreadable:
            return {"error": str(_("unreadable with the configured keys"))}

    def webhook_path(self) -> str:
        from django.urls import reverse

        return reverse("integrations:webhook", kwargs={"integration_id": self.pk, "secret": self.webhook_secret})


class CrmRecord(models.Model):
    """A sale, visit or order as the CRM reported it, kept whether or not it became a purchase:
    the one place that says what happened to each of the CRM's records and why."""

    class Kind(models.TextChoices):
        PURCHASE = "purchase", _("Purchase")
        REFUND = "refund", _("Refund")

    class Status(models.TextChoices):
        RECORDED = "recorded", _("Recorded")
        UNMATCHED = "unmatched", _("No customer phone")
        IGNORED = "ignored", _("Ignored")
        REJECTED = "rejected", _("Rejected")

    integration = models.ForeignKey(CRMIntegration, on_delete=models.CASCADE, related_name="records")
    kind = models.CharField(_("kind"), max_length=10, choices=Kind.choices)
    external_id = models.CharField(_("id in the CRM"), max_length=100)
    status = models.CharField(_("status"), max_length=10, choices=Status.choices)
    reason = models.CharField(_("reason"), max_length=500, blank=True)
    phone = models.CharField(_("phone as the CRM has it"), max_length=40, blank=True)
    customer_name = models.CharField(_("customer name"), max_length=200, blank=True)
    amount = models.DecimalField(_("amount"), max_digits=12, decimal_places=2, null=True, blank=True)
    occurred_at = models.DateTimeField(_("occurred at"), null=True, blank=True)
    transaction = models.ForeignKey(
        Transaction, on_delete=models.SET_NULL, null=True, blank=True, related_name="crm_records"
    )
    via = models.CharField(_("came by"), max_length=10, choices=Transaction.Source.choices)
    times_seen = models.PositiveIntegerField(_("times seen"), default=1)
    first_seen_at = models.DateTimeField(_("first seen"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("CRM record")
        verbose_name_plural = _("CRM records")
        ordering = ["-updated_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["integration", "kind", "external_id"], name="crm_record_once"),
        ]
        indexes = [models.Index(fields=["integration", "status", "-updated_at"], name="crm_record_by_status")]

    def __str__(self):
        return f"{self.integration.provider}:{self.external_id} ({self.status})"


class WebhookDelivery(models.Model):
    """A webhook body exactly as it arrived, with what processing it made of it. Kept for
    INTEGRATIONS_WEBHOOK_RETENTION_DAYS, then deleted."""

    class Status(models.TextChoices):
        RECEIVED = "received", _("Received")
        PROCESSED = "processed", _("Processed")
        FAILED = "failed", _("Failed")
        REJECTED = "rejected", _("Rejected (unreadable)")

    integration = models.ForeignKey(CRMIntegration, on_delete=models.CASCADE, related_name="webhooks")
    received_at = models.DateTimeField(_("received at"), auto_now_add=True, db_index=True)
    content_type = models.CharField(_("content type"), max_length=200, blank=True)
    body = models.TextField(_("body"), blank=True)
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.RECEIVED)
    result = models.JSONField(_("result"), default=dict, blank=True)
    error = models.TextField(_("error"), blank=True)
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    processed_at = models.DateTimeField(_("processed at"), null=True, blank=True)

    class Meta:
        verbose_name = _("webhook")
        verbose_name_plural = _("webhooks")
        ordering = ["-received_at", "-id"]

    def __str__(self):
        return f"{self.integration} · {self.received_at:%Y-%m-%d %H:%M:%S} · {self.status}"


class ImportJob(models.Model):
    """A CSV of a partner's purchase history, uploaded in the portal and imported in the background."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Waiting")
        RUNNING = "running", _("Importing")
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    business = models.ForeignKey(Business, on_delete=models.CASCADE, related_name="import_jobs")
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    file = models.FileField(_("file"), upload_to="imports/%Y/%m/")
    original_name = models.CharField(_("file name"), max_length=255)
    mapping = models.JSONField(_("column mapping"), default=dict, blank=True)
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.PENDING)
    rows_total = models.PositiveIntegerField(_("rows"), null=True, blank=True)
    rows_done = models.PositiveIntegerField(_("rows read"), default=0)
    imported = models.PositiveIntegerField(_("imported"), default=0)
    duplicates = models.PositiveIntegerField(_("already there"), default=0)
    rejected = models.PositiveIntegerField(_("rejected"), default=0)
    errors = models.JSONField(_("rejected rows"), default=list, blank=True)
    message = models.TextField(_("message"), blank=True)
    # The runs that claimed the job, counted: a run writes only while the number is still its
    # own, so a run another took the job from (see imports.run_import_job) writes nothing more.
    attempt = models.PositiveIntegerField(_("attempts"), default=0)
    # When the running run last showed life (claimed the job, wrote a batch). A job left running
    # with no life for IMPORT_STALE_AFTER_SECONDS has lost its run and is taken over.
    heartbeat_at = models.DateTimeField(_("updated at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    class Meta:
        verbose_name = _("import")
        verbose_name_plural = _("imports")
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.original_name} → {self.business} ({self.status})"

    @property
    def percent(self) -> int:
        if not self.rows_total:
            return 100 if self.status == self.Status.DONE else 0
        return min(100, round(100 * self.rows_done / self.rows_total))
