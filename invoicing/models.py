from __future__ import annotations

from django.db import models
from django.db.models import Q


class BillableAgreement(models.Model):
    """invoicing's own projection of an agreement, built only from agreement events.

    Every event contributes independently (keyed by its aggregate_version), so
    the projection is the same whatever order events arrive in, with or
    without duplicates: prices, pauses and resumes are kept per version and
    the state is derived from them in version order.
    """

    agreement_id = models.CharField(max_length=64, unique=True)
    # The agreement's own external reference, from agreement.created v2 (blank while only a v1
    # event, which does not carry it, has been seen). Never changes for an agreement.
    external_ref = models.CharField(max_length=100, blank=True, default="", db_default="")
    created_seen = models.BooleanField(default=False)
    customer = models.JSONField(default=dict)
    description = models.CharField(max_length=500, blank=True, default="")
    currency = models.CharField(max_length=3, blank=True, default="")
    interval = models.CharField(max_length=5, blank=True, default="")
    interval_count = models.PositiveIntegerField(default=1)
    start_date = models.DateField(null=True, blank=True)
    end_date = models.DateField(null=True, blank=True)
    # [[effective_from, amount_minor, version], ...] sorted by (effective_from, version)
    prices = models.JSONField(default=list)
    # [[version, "pause"|"resume", date], ...] sorted by version
    toggles = models.JSONField(default=list)
    # [[version, effective_date], ...] sorted by version (normally one)
    cancellations = models.JSONField(default=list)
    last_version = models.BigIntegerField(default=0)
    # The first period not yet invoiced (index and start): the daily run's cursor.
    next_period_index = models.PositiveIntegerField(default=0)
    next_period_start = models.DateField(null=True, blank=True)
    flagged_reason = models.CharField(max_length=300, blank=True, default="")
    catchup_approved = models.BooleanField(default=False)
    # A late event changed periods older than INVOICING_MAX_CORRECTION_DAYS: the correction
    # waits for an operator (Admin -> Billable agreements -> "Approve correction").
    correction_flag = models.CharField(max_length=500, blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["next_period_start"],
                name="billable_due",
                condition=Q(created_seen=True, next_period_start__isnull=False),
            )
        ]

    def __str__(self) -> str:
        if not self.customer_ref:  # events arrived before agreement.created
            return f"agreement {self.agreement_id}"
        return f"{self.reference} ({self.customer_name})"

    @property
    def reference(self) -> str:
        """What operators know the agreement by: its external ref, or, for an agreement only a v1
        agreement.created described, its customer's ref, saying so."""
        if self.external_ref:
            return self.external_ref
        return f"customer {self.customer_ref}" if self.customer_ref else ""

    @property
    def customer_ref(self) -> str:
        """The customer's external reference from agreement.created (the agreement's own external
        reference unless the agreement named another)."""
        return str((self.customer or {}).get("external_ref", ""))

    @property
    def customer_name(self) -> str:
        return str((self.customer or {}).get("name", ""))


class InvoiceSeries(models.Model):
    """Gap-free numbering: the counter is advanced in the transaction that issues the invoices."""

    name = models.CharField(max_length=20, unique=True)
    last_number = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name} (last {self.last_number})"


class Invoice(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"
        OPEN = "open"
        PAID = "paid"
        VOID = "void"
        UNCOLLECTIBLE = "uncollectible"

    id = models.UUIDField(primary_key=True, editable=False)
    number = models.CharField(max_length=40, unique=True, help_text="series + sequence: unique, gap-free")
    series = models.CharField(max_length=20)
    sequence = models.BigIntegerField()
    agreement_id = models.CharField(max_length=64)
    customer_ref = models.CharField(max_length=100)
    customer_name = models.CharField(max_length=200)
    customer_email = models.CharField(max_length=254)
    period_start = models.DateField()
    period_end = models.DateField(help_text="Exclusive.")
    currency = models.CharField(max_length=3)
    total_minor = models.BigIntegerField()
    due_date = models.DateField()
    status = models.CharField(max_length=15, choices=Status.choices, default=Status.OPEN)
    issued_at = models.DateTimeField()
    paid_at = models.DateTimeField(null=True, blank=True)
    closed_reason = models.CharField(max_length=500, blank=True, default="")
    # Who voided it: an operator (the period is waived: corrections leave it alone) or a correction.
    voided_by = models.CharField(
        max_length=10,
        blank=True,
        default="",
        choices=[("operator", "operator"), ("correction", "correction")],
    )
    payment_id = models.CharField(max_length=64, blank=True, default="")
    aggregate_version = models.BigIntegerField(default=1)
    # 0: issued by the daily run; n > 0: the n-th correction of this period (a late event changed
    # what the period owes). Unique with the period, so two runs can never issue the same one.
    revision = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-issued_at", "-sequence"]
        constraints = [
            models.UniqueConstraint(
                fields=["agreement_id", "period_start", "revision"], name="one_invoice_per_period_revision"
            ),
            models.CheckConstraint(condition=Q(total_minor__gt=0), name="invoice_total_positive"),
        ]
        indexes = [
            models.Index(fields=["status"]),
            models.Index(fields=["issued_at"]),
            models.Index(fields=["agreement_id", "period_start"], name="invoice_agreement_period"),
        ]
        permissions = [("void_invoice", "Can void invoices")]

    def __str__(self) -> str:
        return self.number


class InvoiceLine(models.Model):
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    description = models.CharField(max_length=500)
    quantity = models.PositiveIntegerField(default=1)
    unit_amount_minor = models.BigIntegerField()
    amount_minor = models.BigIntegerField()

    def __str__(self) -> str:
        return self.description


class CreditNote(models.Model):
    """Money given back on a paid invoice (a correction): its own gap-free number series.

    An issued invoice is never edited; a credit note reduces what was billed for its period.
    Payments refunds its amount through the gateway (credit_note.issued).
    """

    id = models.UUIDField(primary_key=True, editable=False)
    number = models.CharField(max_length=40, unique=True, help_text="series + sequence: unique, gap-free")
    series = models.CharField(max_length=20)
    sequence = models.BigIntegerField()
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="credit_notes")
    agreement_id = models.CharField(max_length=64)
    period_start = models.DateField()
    currency = models.CharField(max_length=3)
    total_minor = models.BigIntegerField()
    reason = models.CharField(max_length=500)
    issued_at = models.DateTimeField()
    aggregate_version = models.BigIntegerField(default=1)

    class Meta:
        ordering = ["-issued_at", "-sequence"]
        constraints = [
            models.CheckConstraint(condition=Q(total_minor__gt=0), name="credit_note_total_positive")
        ]
        indexes = [models.Index(fields=["agreement_id", "period_start"], name="credit_note_agreement_period")]

    def __str__(self) -> str:
        return self.number


class CreditNoteLine(models.Model):
    credit_note = models.ForeignKey(CreditNote, on_delete=models.CASCADE, related_name="lines")
    description = models.CharField(max_length=500)
    amount_minor = models.BigIntegerField()

    def __str__(self) -> str:
        return self.description


class PendingPaymentOutcome(models.Model):
    """A payment event for an invoice not known here yet: kept, applied when the invoice exists."""

    invoice_id = models.CharField(max_length=64, db_index=True)
    payment_id = models.CharField(max_length=64)
    outcome = models.CharField(max_length=20)  # paid | uncollectible
    detail = models.JSONField(default=dict)
    received_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.outcome} for {self.invoice_id}"


class DailyRun(models.Model):
    """One daily invoice run: what it did and how long it took (the operators' heartbeat).

    Finished once every chunk has ended: ``finished`` if all were done, ``failed`` if any failed
    for good (an alert says which); never left ``running`` (the watchdog resumes dead chunks).
    """

    class Status(models.TextChoices):
        RUNNING = "running"
        FINISHED = "finished"
        FAILED = "failed"

    run_date = models.DateField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    chunks_total = models.PositiveIntegerField(default=0)
    chunks_done = models.PositiveIntegerField(default=0)
    chunks_failed = models.PositiveIntegerField(default=0)
    invoices_issued = models.PositiveIntegerField(default=0)
    agreements_flagged = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["status"], name="dailyrun_status")]

    def __str__(self) -> str:
        return f"run for {self.run_date}"

    @property
    def duration_seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class DailyRunChunk(models.Model):
    """One chunk of a run's agreements (a pk range), handled by one task in one transaction.

    While its task runs, the chunk's transaction holds this row locked: a ``running`` chunk whose
    row is not locked has lost its worker, and the watchdog sends it again (the chunk is
    idempotent) instead of waiting for the broker's visibility timeout.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    run = models.ForeignKey(DailyRun, on_delete=models.CASCADE, related_name="chunks")
    pk_from = models.BigIntegerField()
    pk_to = models.BigIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    issued = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["run", "pk_from"]
        indexes = [models.Index(fields=["status"], name="dailyrunchunk_status")]

    def __str__(self) -> str:
        return f"chunk {self.pk_from}-{self.pk_to} of {self.run}"
