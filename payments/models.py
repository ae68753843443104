from __future__ import annotations

from django.db import models
from django.db.models import Q


class Payment(models.Model):
    """Collecting one invoice. One per invoice (unique), however often invoice.issued arrives."""

    class Status(models.TextChoices):
        PENDING = "pending"  # waiting for (another) charge attempt
        PROCESSING = "processing"  # a charge is in flight
        RETRY_SCHEDULED = "retry_scheduled"  # soft decline: the next dunning attempt is scheduled
        SUCCEEDED = "succeeded"
        FAILED = "failed"  # final: hard decline or dunning exhausted

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
        """Same key for every try of one dunning step: a retry after a lost response is replayed."""
        return f"pay-{self.id}#{self.dunning_step + 1}"


class PaymentAttempt(models.Model):
    payment = models.ForeignKey(Payment, on_delete=models.CASCADE, related_name="attempts")
    idempotency_key = models.CharField(max_length=100)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=20, blank=True, default="")  # succeeded | <error class>
    gateway_reference = models.CharField(max_length=100, blank=True, default="")
    http_status = models.PositiveSmallIntegerField(default=0)
    error_message = models.CharField(max_length=500, blank=True, default="")

    class Meta:
        ordering = ["started_at"]

    def __str__(self) -> str:
        return f"{self.idempotency_key}: {self.outcome or 'in flight'}"


class RateLimitBucket(models.Model):
    """A token bucket shared by every worker (global charges-per-second limit)."""

    name = models.CharField(max_length=50, unique=True)
    tokens = models.FloatField(default=0)
    updated_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.name
