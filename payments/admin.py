"""Operators' console for payments: attempts inline, filters, a guarded "retry now"."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from events.admin_tools import GuardedActionsMixin
from events.money import format_money

from .models import Payment, PaymentAttempt
from .services import payment_retry_now


class AttemptInline(admin.TabularInline):
    model = PaymentAttempt
    fields = (
        "idempotency_key",
        "started_at",
        "finished_at",
        "outcome",
        "http_status",
        "gateway_reference",
        "error_message",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Payment)
class PaymentAdmin(GuardedActionsMixin, admin.ModelAdmin):
    list_display = (
        "invoice_number",
        "customer_ref",
        "amount",
        "status",
        "dunning_step",
        "last_error_class",
        "next_attempt_at",
        "updated_at",
    )
    list_filter = ("status", "last_error_class", "currency")
    search_fields = (
        "=invoice_number",
        "=invoice_id",
        "=customer_ref",
        "customer_email",
        "=gateway_reference",
    )
    date_hierarchy = "created_at"
    inlines = [AttemptInline]
    actions = ["retry_now"]
    readonly_fields = [f.name for f in Payment._meta.fields]

    @admin.display(description="amount", ordering="amount_minor")
    def amount(self, obj: Payment) -> str:
        return format_money(obj.amount_minor, obj.currency)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("payments.retry_payment")

    @admin.action(description="Retry now (charge again; idempotent)", permissions=["retry"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[Payment]) -> None:
        queued = sum(payment_retry_now(payment_id=str(p.pk)) for p in queryset)
        skipped = queryset.count() - queued
        self.message_user(
            request, f"Queued {queued} charge(s); {skipped} already succeeded or in flight.", messages.SUCCESS
        )
