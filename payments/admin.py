"""Operators' console for payments: attempts inline, filters, a guarded "retry now"."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from core.admin_tools import GuardedActionsMixin, NoAddDeleteMixin, ReadOnlyMixin
from core.money import format_money

from .models import Payment, PaymentAttempt, Refund
from .services import payment_retry_now, refund_retry_now


class AttemptInline(ReadOnlyMixin, admin.TabularInline):
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


class RefundInline(ReadOnlyMixin, admin.TabularInline):
    model = Refund
    fk_name = "payment"
    fields = ("amount_minor", "currency", "status", "reason", "attempts", "gateway_reference", "last_error")
    readonly_fields = fields
    extra = 0


@admin.register(Payment)
class PaymentAdmin(NoAddDeleteMixin, GuardedActionsMixin, admin.ModelAdmin):
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
    inlines = [AttemptInline, RefundInline]
    actions = ["retry_now"]
    readonly_fields = [f.name for f in Payment._meta.fields]

    @admin.display(description="amount", ordering="amount_minor")
    def amount(self, obj: Payment) -> str:
        return format_money(obj.amount_minor, obj.currency)

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
    readonly_fields = [f.name for f in Refund._meta.fields]
    actions = ["retry_refund"]

    @admin.display(description="amount", ordering="amount_minor")
    def amount(self, obj: Refund) -> str:
        return format_money(obj.amount_minor, obj.currency)

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("payments.retry_payment")

    @admin.action(description="Retry refund now (idempotent)", permissions=["retry"])
    def retry_refund(self, request: HttpRequest, queryset: QuerySet[Refund]) -> None:
        sent = sum(refund_retry_now(refund_id=str(r.pk)) for r in queryset)
        self.message_user(request, f"Sent {sent} refund(s) again.", messages.SUCCESS)
