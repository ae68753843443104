from __future__ import annotations

from django.db import models
from django.db.models import F, Q

INTERVAL_CHOICES = [("day", "day"), ("week", "week"), ("month", "month"), ("year", "year")]


class Agreement(models.Model):
    """A purchase: a customer agrees to pay ``amount_minor`` every ``interval_count`` ``interval``s.

    The upstream fact of the billing system. Changed only through
    agreements.services, each change recording its event with the new
    ``aggregate_version``.
    """

    class Status(models.TextChoices):
        ACTIVE = "active"
        PAUSED = "paused"
        CANCELLED = "cancelled"
        ENDED = "ended"

    id = models.UUIDField(primary_key=True, editable=False)
    external_ref = models.CharField(max_length=100, unique=True, help_text="The upstream system's id.")
    customer_ref = models.CharField(max_length=100, help_text="The customer's external reference.")
    customer_name = models.CharField(max_length=200)
    customer_email = models.EmailField(max_length=254)
    description = models.CharField(max_length=500, blank=True, default="")
    amount_minor = models.BigIntegerField(help_text="Price per period in minor units (cents).")
    currency = models.CharField(max_length=3, help_text="ISO 4217 code, e.g. EUR.")
    price_effective_from = models.DateField(help_text="The current price applies to periods from this date.")
    interval = models.CharField(max_length=5, choices=INTERVAL_CHOICES)
    interval_count = models.PositiveIntegerField(default=1)
    start_date = models.DateField()
    end_date = models.DateField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    paused_from = models.DateField(null=True, blank=True)
    cancel_effective_date = models.DateField(null=True, blank=True)
    aggregate_version = models.BigIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status"]), models.Index(fields=["customer_ref"])]
        constraints = [
            models.CheckConstraint(condition=Q(amount_minor__gt=0), name="agreement_amount_positive"),
            models.CheckConstraint(
                condition=Q(interval_count__gte=1), name="agreement_interval_count_positive"
            ),
            models.CheckConstraint(condition=Q(currency__regex=r"^[A-Z]{3}$"), name="agreement_currency_iso"),
            models.CheckConstraint(
                condition=Q(interval__in=["day", "week", "month", "year"]), name="agreement_interval_known"
            ),
            models.CheckConstraint(
                condition=Q(end_date__isnull=True) | Q(end_date__gte=F("start_date")),
                name="agreement_end_not_before_start",
            ),
        ]
        permissions = [("cancel_agreement", "Can cancel, pause and resume agreements")]

    def __str__(self) -> str:
        return f"{self.external_ref} ({self.customer_name})"
