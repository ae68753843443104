"""Invoices and credit notes with their lines: money with its currency, links to what they name."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString

from core.admin_tools import (
    GuardedActionsMixin,
    HistoryInline,
    ReadOnlyMixin,
    changelist_link,
    date_range,
    events_link,
    moment,
    money,
    object_and_events,
)

from ..models import CreditNote, CreditNoteLine, Invoice, InvoiceLine
from ..services import invoice_void


class InvoiceLineInline(HistoryInline):
    model = InvoiceLine
    fields = ("description", "quantity", "unit_amount", "amount")
    readonly_fields = fields
    unit_amount = money("unit_amount_minor", currency="invoice.currency", description="unit amount")
    amount = money("amount_minor", currency="invoice.currency", description="amount")

    def get_queryset(self, request: HttpRequest) -> QuerySet[InvoiceLine]:
        return super().get_queryset(request).select_related("invoice")


@admin.register(Invoice)
class InvoiceAdmin(GuardedActionsMixin, ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("number", "customer_name", "total", "period", "status", "issued")
    list_filter = ("status", "currency", "series")
    search_fields = ("=number", "=agreement_id", "customer_name", "customer_email", "=customer_ref")
    date_hierarchy = "issued_at"
    fields = (
        "number",
        "status",
        "total",
        "period",
        "due_date",
        "customer",
        "agreement",
        "payment",
        "history",
        "issued_at",
        "paid_at",
        "closed_reason",
        "voided_by",
        "series",
        "sequence",
        "aggregate_version",
        "id",
    )
    readonly_fields = fields
    inlines = [InvoiceLineInline]
    actions = ["void_selected"]
    show_full_result_count = False
    total = money("total_minor", description="total")

    @admin.display(description="period", ordering="period_start")
    def period(self, obj: Invoice) -> SafeString:
        if not obj.revision:
            return date_range(obj.period_start, obj.period_end)
        return format_html("{} · revision {}", date_range(obj.period_start, obj.period_end), obj.revision)

    @admin.display(description="issued", ordering="issued_at")
    def issued(self, obj: Invoice) -> SafeString:
        return moment(obj.issued_at, date_only=True)

    @admin.display(description="customer")
    def customer(self, obj: Invoice) -> SafeString:
        return format_html("{} &lt;{}&gt; · ref {}", obj.customer_name, obj.customer_email, obj.customer_ref)

    @admin.display(description="agreement")
    def agreement(self, obj: Invoice) -> SafeString:
        return object_and_events("agreements", "agreement", obj.agreement_id)

    @admin.display(description="payment")
    def payment(self, obj: Invoice) -> SafeString:
        if obj.payment_id:
            return object_and_events("payments", "payment", obj.payment_id)
        return changelist_link("payments", "payment", {"invoice_id": obj.pk}, "payments of this invoice")

    @admin.display(description="events")
    def history(self, obj: Invoice) -> SafeString:
        return events_link(obj.pk, "events of this invoice")

    def has_void_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("invoicing.void_invoice")

    @admin.action(
        description="Void selected unpaid invoices (payments stops collecting)", permissions=["void"]
    )
    def void_selected(self, request: HttpRequest, queryset: QuerySet[Invoice]) -> None:
        done, refused = 0, []
        for invoice in queryset:
            try:
                invoice_void(invoice_id=str(invoice.pk), reason=f"voided by {request.user.get_username()}")
                done += 1
            except ValidationError as exc:
                refused.append("; ".join(exc.messages))
        if done:
            self.message_user(request, f"Voided {done} invoice(s).", messages.SUCCESS)
        if refused:
            self.message_user(request, " | ".join(refused), messages.WARNING)


class CreditNoteLineInline(HistoryInline):
    model = CreditNoteLine
    fields = ("description", "amount")
    readonly_fields = fields
    amount = money("amount_minor", currency="credit_note.currency", description="amount")

    def get_queryset(self, request: HttpRequest) -> QuerySet[CreditNoteLine]:
        return super().get_queryset(request).select_related("credit_note")


@admin.register(CreditNote)
class CreditNoteAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("number", "invoice", "total", "period_start", "reason", "issued_at")
    list_select_related = ("invoice",)
    list_filter = ("currency", "series")
    search_fields = ("=number", "=agreement_id", "=invoice__number")
    date_hierarchy = "issued_at"
    fields = (
        "number",
        "invoice",
        "total",
        "period_start",
        "reason",
        "agreement",
        "history",
        "issued_at",
        "series",
        "sequence",
        "aggregate_version",
        "id",
    )
    readonly_fields = fields
    inlines = [CreditNoteLineInline]
    total = money("total_minor", description="total")

    @admin.display(description="agreement")
    def agreement(self, obj: CreditNote) -> SafeString:
        return object_and_events("agreements", "agreement", obj.agreement_id)

    @admin.display(description="events")
    def history(self, obj: CreditNote) -> SafeString:
        return events_link(obj.pk, "events of this credit note")
