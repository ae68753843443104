"""Operators' console for invoicing: invoices with lines, the projection, daily runs."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from core.admin_tools import GuardedActionsMixin, NoAddDeleteMixin, ReadOnlyMixin
from core.money import format_money

from .models import (
    BillableAgreement,
    CreditNote,
    CreditNoteLine,
    DailyRun,
    DailyRunChunk,
    Invoice,
    InvoiceLine,
)
from .services import correction_approve, invoice_void


class InvoiceLineInline(ReadOnlyMixin, admin.TabularInline):
    model = InvoiceLine
    fields = ("description", "quantity", "unit_amount_minor", "amount_minor")
    readonly_fields = fields
    extra = 0


@admin.register(Invoice)
class InvoiceAdmin(GuardedActionsMixin, ReadOnlyMixin, admin.ModelAdmin):
    list_display = (
        "number",
        "customer_name",
        "total",
        "period_start",
        "period_end",
        "status",
        "revision",
        "due_date",
        "issued_at",
    )
    list_filter = ("status", "currency", "series")
    search_fields = ("=number", "=agreement_id", "customer_name", "customer_email", "=customer_ref")
    date_hierarchy = "issued_at"
    inlines = [InvoiceLineInline]
    actions = ["void_selected"]
    show_full_result_count = False

    @admin.display(description="total", ordering="total_minor")
    def total(self, obj: Invoice) -> str:
        return format_money(obj.total_minor, obj.currency)

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


class CreditNoteLineInline(ReadOnlyMixin, admin.TabularInline):
    model = CreditNoteLine
    fields = ("description", "amount_minor")
    readonly_fields = fields
    extra = 0


@admin.register(CreditNote)
class CreditNoteAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("number", "invoice", "total", "period_start", "reason", "issued_at")
    list_filter = ("currency", "series")
    search_fields = ("=number", "=agreement_id", "=invoice__number")
    date_hierarchy = "issued_at"
    inlines = [CreditNoteLineInline]

    @admin.display(description="total", ordering="total_minor")
    def total(self, obj: CreditNote) -> str:
        return format_money(obj.total_minor, obj.currency)


@admin.register(BillableAgreement)
class BillableAgreementAdmin(NoAddDeleteMixin, GuardedActionsMixin, admin.ModelAdmin):
    list_display = (
        "agreement_id",
        "created_seen",
        "currency",
        "interval",
        "next_period_start",
        "last_version",
        "flagged_reason",
        "correction_flag",
    )
    list_filter = ("created_seen", "interval", "currency")
    search_fields = ("=agreement_id",)
    readonly_fields = [f.name for f in BillableAgreement._meta.fields if f.name != "catchup_approved"]
    actions = ["approve_catchup", "approve_correction"]

    def save_model(self, request: HttpRequest, obj: BillableAgreement, form: Any, change: bool) -> None:
        # Only what the form edits: the projection and the daily run write the other fields under
        # the row's lock, and a full save would put back what this page read before they did.
        obj.save(update_fields=[*form.changed_data, "updated_at"])

    @admin.action(
        description="Approve catch-up billing of flagged agreements (next run bills them)",
        permissions=["change"],
    )
    def approve_catchup(self, request: HttpRequest, queryset: QuerySet[BillableAgreement]) -> None:
        n = queryset.exclude(flagged_reason="").update(catchup_approved=True)
        self.message_user(request, f"Approved catch-up for {n} agreement(s).", messages.SUCCESS)

    @admin.action(
        description="Approve correction of old periods (voids, credit notes, reissues now)",
        permissions=["change"],
    )
    def approve_correction(self, request: HttpRequest, queryset: QuerySet[BillableAgreement]) -> None:
        corrected = 0
        for row in queryset.exclude(correction_flag=""):
            corrected += len(correction_approve(agreement_id=row.agreement_id).corrected)
        self.message_user(request, f"Corrected {corrected} period(s).", messages.SUCCESS)


class DailyRunChunkInline(ReadOnlyMixin, admin.TabularInline):
    model = DailyRunChunk
    fields = ("pk_from", "pk_to", "status", "attempts", "issued", "started_at", "finished_at", "error")
    readonly_fields = fields
    extra = 0


@admin.register(DailyRun)
class DailyRunAdmin(ReadOnlyMixin, admin.ModelAdmin):
    inlines = [DailyRunChunkInline]
    list_filter = ("status",)
    list_display = (
        "run_date",
        "status",
        "started_at",
        "finished_at",
        "duration",
        "chunks_done",
        "chunks_failed",
        "chunks_total",
        "invoices_issued",
        "agreements_flagged",
    )
    date_hierarchy = "started_at"

    @admin.display(description="duration")
    def duration(self, obj: DailyRun) -> str:
        return "running" if obj.duration_seconds is None else f"{obj.duration_seconds:.1f}s"
