"""invoicing's projection of agreements: who it is, what it waits for, and the approvals."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from core.admin_tools import GuardedActionsMixin, NoAddDeleteMixin, object_and_events, warning
from core.money import format_money

from ..models import BillableAgreement
from ..services import catchup_approve, correction_approve


class FlagFilter(admin.SimpleListFilter):
    title = "waiting for an operator"
    parameter_name = "flag"
    options = {
        "catchup": ("Catch-up to approve", ~Q(flagged_reason="")),
        "approved": ("Catch-up approved (next run bills it)", Q(catchup_approved=True)),
        "correction": ("Correction to approve", ~Q(correction_flag="")),
    }

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(key, label) for key, (label, _q) in self.options.items()]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[BillableAgreement]
    ) -> QuerySet[BillableAgreement]:
        choice = self.options.get(self.value() or "")
        return queryset if choice is None else queryset.filter(choice[1])


@admin.register(BillableAgreement)
class BillableAgreementAdmin(NoAddDeleteMixin, GuardedActionsMixin, admin.ModelAdmin):
    list_display = (
        "external_ref_shown",
        "customer_ref",
        "customer_name",
        "agreement_short",
        "every",
        "next_period_start",
        "flag",
    )
    list_filter = (FlagFilter, "created_seen", "interval", "currency")
    search_fields = (
        "^agreement_id",
        "external_ref",
        "customer__external_ref",
        "customer__name",
        "customer__email",
    )
    search_help_text = (
        "External ref, customer ref, customer name or e-mail, or the first characters of the agreement id."
    )
    fields = (
        "agreement",
        "external_ref_shown",
        "customer_ref",
        "customer_shown",
        "description",
        "every",
        "start_date",
        "end_date",
        "prices_shown",
        "toggles",
        "cancellations",
        "next_period_index",
        "next_period_start",
        "flagged_reason",
        "catchup_approved",
        "correction_flag",
        "created_seen",
        "last_version",
        "updated_at",
    )
    readonly_fields = [f for f in fields if f != "catchup_approved"]
    actions = ["approve_catchup", "approve_correction"]

    @admin.display(description="external ref", ordering="external_ref")
    def external_ref_shown(self, obj: BillableAgreement) -> SafeString | str:
        if obj.external_ref:
            return obj.external_ref
        if obj.customer_ref:  # only a v1 agreement.created was seen: it does not name the agreement
            return format_html(
                '{} <span class="console-note" title="{}">(customer ref)</span>',
                obj.customer_ref,
                "agreement.created v1 does not carry the agreement's own external ref; "
                "the customer's is shown instead",
            )
        return "-"

    @admin.display(description="customer ref", ordering="customer__external_ref")
    def customer_ref(self, obj: BillableAgreement) -> str:
        return obj.customer_ref or "-"

    @admin.display(description="customer", ordering="customer__name")
    def customer_name(self, obj: BillableAgreement) -> str:
        return obj.customer_name or "-"

    @admin.display(description="customer")
    def customer_shown(self, obj: BillableAgreement) -> str:
        c = obj.customer or {}
        return f"{c.get('name', '')} <{c.get('email', '')}>" if c else "-"

    @admin.display(description="agreement", ordering="agreement_id")
    def agreement_short(self, obj: BillableAgreement) -> SafeString:
        return format_html('<span title="{}">{}…</span>', obj.agreement_id, obj.agreement_id[:8])

    @admin.display(description="agreement")
    def agreement(self, obj: BillableAgreement) -> SafeString:
        return object_and_events("agreements", "agreement", obj.agreement_id)

    @admin.display(description="every")
    def every(self, obj: BillableAgreement) -> str:
        if not obj.interval:
            return "-"
        return f"{obj.interval_count} {obj.interval}{'s' if obj.interval_count > 1 else ''}"

    @admin.display(description="prices")
    def prices_shown(self, obj: BillableAgreement) -> SafeString:
        return format_html_join(
            mark_safe("<br>"),
            "from {}: {} (version {})",
            ((start, format_money(amount, obj.currency), v) for start, amount, v in obj.prices),
        )

    @admin.display(description="flag")
    def flag(self, obj: BillableAgreement) -> SafeString | str:
        if obj.flagged_reason:
            return format_html("{} {}", warning("catch-up"), obj.flagged_reason)
        if obj.correction_flag:
            return format_html("{} {}", warning("correction"), obj.correction_flag)
        if obj.catchup_approved:
            return "catch-up approved: the next run bills it"
        if not obj.created_seen:
            return "waiting for agreement.created"
        return ""

    def save_model(self, request: HttpRequest, obj: BillableAgreement, form: Any, change: bool) -> None:
        if "catchup_approved" in form.changed_data and obj.catchup_approved:
            catchup_approve(agreement_ids=[obj.agreement_id])
            return
        # Only what the form edits: the projection and the daily run write the other fields under
        # the row's lock, and a full save would put back what this page read before they did.
        obj.save(update_fields=[*form.changed_data, "updated_at"])

    @admin.action(
        description="Approve catch-up billing of flagged agreements (next run bills them)",
        permissions=["change"],
    )
    def approve_catchup(self, request: HttpRequest, queryset: QuerySet[BillableAgreement]) -> None:
        ids = list(queryset.exclude(flagged_reason="").values_list("agreement_id", flat=True))
        n = catchup_approve(agreement_ids=ids)
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
