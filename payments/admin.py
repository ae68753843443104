"""Operators' console for payments: attempts inline, filters, a guarded "retry now"."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.safestring import SafeString

from core.admin_tools import (
    GuardedActionsMixin,
    HistoryInline,
    NoAddDeleteMixin,
    events_link,
    moment,
    money,
    object_and_events,
)

from .models import Payment, PaymentAttempt, Refund
from .services import payment_retry_now, refund_retry_now


class AttemptInline(HistoryInline):
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


class RefundInline(HistoryInline):
    model = Refund
    fk_name = "payment"
    fields = ("amount", "status", "reason", "attempts", "gateway_reference", "last_error")
    readonly_fields = fields
    amount = money("amount_minor", description="amount")


@admin.register(Payment)
class PaymentAdmin(NoAddDeleteMixin, GuardedActionsMixin, admin.ModelAdmin):
    list_display = ("invoice_number", "customer_ref", "amount", "status", "dunning", "next_attempt")
    list_filter = ("status", "last_error_class", "currency")
    search_fields = (
        "=invoice_number",
        "=invoice_id",
        "=customer_ref",
        "customer_email",
        "=gateway_reference",
    )
    date_hierarchy = "created_at"
    fields = (
        "invoice",
        "amount",
        "status",
        "customer_ref",
        "customer_email",
        "dunning_step",
        "transient_failures",
        "next_attempt_at",
        "gateway_reference",
        "last_error_class",
        "last_error_message",
        "invoice_closed_at",
        "invoice_closed_reason",
        "history",
        "created_at",
        "updated_at",
        "aggregate_version",
        "id",
    )
    readonly_fields = fields
    inlines = [AttemptInline, RefundInline]
    actions = ["retry_now"]
    amount = money("amount_minor", description="amount")

    @admin.display(description="dunning", ordering="dunning_step")
    def dunning(self, obj: Payment) -> str:
        step = "first attempt" if obj.dunning_step == 0 else f"retry {obj.dunning_step}"
        return f"{step} · {obj.last_error_class}" if obj.last_error_class else step

    @admin.display(description="next attempt", ordering="next_attempt_at")
    def next_attempt(self, obj: Payment) -> SafeString:
        return moment(obj.next_attempt_at)

    @admin.display(description="invoice")
    def invoice(self, obj: Payment) -> SafeString:
        return object_and_events("invoicing", "invoice", obj.invoice_id, obj.invoice_number)

    @admin.display(description="events")
    def history(self, obj: Payment) -> SafeString:
        return events_link(obj.pk, "events of this payment")

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("payments.retry_payment")

    @admin.action(description="Retry now (charge again; idempotent)", permissions=["retry"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[Payment]) -> None:
        queued, skipped, refused = 0, 0, []
        for p in queryset:
            try:
                if payment_retry_now(payment_id=str(p.pk)):
                    queued += 1
                else:
                    skipped += 1
            except ValidationError as exc:
                refused.append("; ".join(exc.messages))
        self.message_user(
            request, f"Queued {queued} charge(s); {skipped} already succeeded or in flight.", messages.SUCCESS
        )
        if refused:
            self.message_user(request, "Not retried: " + " | ".join(refused[:20]), messages.WARNING)


@admin.register(Refund)
class RefundAdmin(NoAddDeleteMixin, GuardedActionsMixin, admin.ModelAdmin):
    list_display = ("invoice_id", "amount", "status", "reason", "attempts", "last_error", "created_at")
    list_filter = ("status", "currency")
    search_fields = ("=invoice_id", "=key", "=gateway_reference")
    fields = (
        "amount",
        "status",
        "reason",
        "invoice",
        "payment",
        "attempts",
        "operator_retries",
        "next_attempt_at",
        "gateway_reference",
        "last_error",
        "key",
        "created_at",
        "updated_at",
        "id",
    )
    readonly_fields = fields
    actions = ["retry_refund"]
    amount = money("amount_minor", description="amount")

    @admin.display(description="invoice")
    def invoice(self, obj: Refund) -> SafeString:
        return object_and_events("invoicing", "invoice", obj.invoice_id)

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("payments.retry_payment")

    @admin.action(description="Retry refund now (idempotent)", permissions=["retry"])
    def retry_refund(self, request: HttpRequest, queryset: QuerySet[Refund]) -> None:
        sent = sum(refund_retry_now(refund_id=str(r.pk)) for r in queryset)
        self.message_user(request, f"Sent {sent} refund(s) again.", messages.SUCCESS)
