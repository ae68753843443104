from __future__ import annotations

from django.db import models
from django.db.models import Q

from core.money import format_money

from .gateway import maybe_charged_try


class Payment(models.Model):
    """Collecting one invoice. One per invoice (unique), however often invoice.issued arrives."""

    class Status(models.TextChoices):
        PENDING = "pending"  # waiting for (another) charge attempt
        PROCESSING = "processing"  # a charge is in flight
        RETRY_SCHEDULED = "retry_scheduled"  # soft decline: the next dunning attempt is scheduled
        SUCCEEDED = "succeeded"
        FAILED = "failed"  # final: hard decline or dunning exhausted
        CANCELLED = "cancelled"  # its invoice was closed (voided) before the money was taken
        REFUNDED = "refunded"  # charged, then given back in full (its invoice was closed)

    id = models.UUIDField(primary_key=True, editable=False)
    invoice_id = models.CharField(max_length=64, unique=True)
    invoice_number = models.CharField(max_length=40)
    customer_ref = models.CharField(max_length=100)
    customer_email = models.CharField(max_length=254)
    amount_minor = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    dunning_step = models.PositiveIntegerField(
        default=0, help_text="0 = first attempt; n = n-th dunning retry"
    )
    transient_failures = models.PositiveIntegerField(default=0, help_text="in the current step")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    gateway_reference = models.CharField(max_length=100, blank=True, default="")
    last_error_class = models.CharField(max_length=20, blank=True, default="")
    last_error_message = models.CharField(max_length=500, blank=True, default="")
    # Set when invoicing closes the invoice (invoice.voided): nothing more is collected, and money
    # taken anyway (a charge already in flight) is refunded.
    invoice_closed_at = models.DateTimeField(null=True, blank=True)
    invoice_closed_reason = models.CharField(max_length=500, blank=True, default="")
    aggregate_version = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                name="payment_due",
                condition=Q(status__in=["pending", "retry_scheduled"]),
            ),
            models.Index(fields=["status"]),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(amount_minor__gt=0), name="payment_amount_positive")
        ]
        permissions = [("retry_payment", "Can retry payments now")]

    def __str__(self) -> str:
        return f"payment for {self.invoice_number}"

    @property
    def idempotency_key(self) -> str:
        """Same key for every try of one dunning step: a retry after a lost response is replayed.
        (selectors.payments_outcome_unknown writes it in a query too.)"""
        return f"pay-{self.id}#{self.dunning_step + 1}"


class PaymentAttempt(models.Model):
    payment = models.ForeignKey(Payment, on_delete=models.CASCADE, related_name="attempts")
    idempotency_key = models.CharField(max_length=100)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # succeeded | <error class> | not_sent (held back by the local rate limiter)
    outcome = models.CharField(max_length=20, blank=True, default="")
    gateway_reference = models.CharField(max_length=100, blank=True, default="")
    http_status = models.PositiveSmallIntegerField(default=0)
    error_message = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        ordering = ["started_at"]
        indexes = [
            # the tries that may have charged unheard, a few (payments/health.py reads the old ones)
            models.Index(fields=["started_at"], name="attempt_maybe_charged", condition=maybe_charged_try())
        ]

    def __str__(self) -> str:
        return f"{self.idempotency_key}: {self.outcome or 'in flight'}"


class Refund(models.Model):
    """Money given back on a charge: a credit note, or a charge taken on a closed invoice.

    ``key`` says why (``credit_note:<id>``, ``closed:<invoice id>``) and is unique, so however
    often the cause arrives the refund exists once; the gateway call's idempotency key is derived
    from the refund's id, so a retry after a lost response never refunds twice.
    """

    class Status(models.TextChoices):
        PENDING = "pending"  # waiting for its turn (or for the charge it refunds to succeed)
        PROCESSING = "processing"
        SUCCEEDED = "succeeded"
        FAILED = "failed"  # refused by the gateway: an operator must act (alert.refund_failed)

    id = models.UUIDField(primary_key=True, editable=False)
    key = models.CharField(max_length=100, unique=True)
    invoice_id = models.CharField(max_length=64, db_index=True)
    payment = models.ForeignKey(
        Payment, null=True, blank=True, on_delete=models.PROTECT, related_name="refunds"
    )
    amount_minor = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    reason = models.CharField(max_length=500)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    # Bumped when an operator retries a refund the gateway refused: a gateway replays a refused
    # result for a key it has seen, so a deliberate retry needs a key of its own.
    operator_retries = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    gateway_reference = models.CharField(max_length=100, blank=True, default="")
    last_error = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                name="refund_due",
                condition=Q(status__in=["pending", "processing"]),
            )
        ]
        constraints = [models.CheckConstraint(condition=Q(amount_minor__gt=0), name="refund_amount_positive")]

    def __str__(self) -> str:
        return f"refund of {format_money(self.amount_minor, self.currency)} for invoice {self.invoice_id}"

    @property
    def idempotency_key(self) -> str:
        """Every automatic try uses the same key (a lost answer is replayed, never refunded twice);
        an operator's retry after a refusal gets the next one."""
        return f"refund-{self.id}" + (f"#{self.operator_retries}" if self.operator_retries else "")


class ClosedInvoice(models.Model):
    """``invoice.voided`` seen for an invoice whose ``invoice.issued`` has not arrived yet: when it
    does, its payment starts cancelled (events arrive in any order)."""

    invoice_id = models.CharField(max_length=64, unique=True)
    reason = models.CharField(max_length=500, blank=True, default="")
    closed_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"closed {self.invoice_id}"


class RateLimitBucket(models.Model):
    """A token bucket shared by every worker (global charges-per-second limit)."""

    name = models.CharField(max_length=50, unique=True)
    tokens = models.FloatField(default=0)
    updated_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.name
