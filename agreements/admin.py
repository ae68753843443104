"""Operators' console for agreements: create and change through the services only."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.forms.models import construct_instance
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString

from core.admin_tools import GuardedActionsMixin, changelist_link, events_link
from core.money import format_money

from . import services
from .models import Agreement

CREATE_FIELDS = services.FIELDS


class AgreementForm(forms.ModelForm):
    """Parses what the operator typed; the services decide whether it is valid.

    Form fields only turn text into numbers and dates. Every rule (lengths, characters, the
    e-mail, the currency, the price) is the services', so admin, the import and the event
    contracts refuse the same values with the same messages, one per field.
    """

    class Meta:
        model = Agreement
        fields = CREATE_FIELDS
        labels = {"amount_minor": "Amount in minor units"}
        help_texts = {
            "customer_ref": "Optional; defaults to the external reference.",
            "amount_minor": "In the currency's smallest unit: 1999 is 19.99 (a new price applies from "
            "the next period).",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "customer_ref" in self.fields:
            self.fields["customer_ref"].required = False
        for field in self.fields.values():
            # Django's own validators (its e-mail rule accepts bob@localhost, its NUL check has
            # its own words) would be a second definition of a valid field.
            field.validators = []

    def clean_currency(self) -> str:
        # Lower case is what people type; the import upper-cases too, the service does not guess.
        return str(self.cleaned_data["currency"]).strip().upper()

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.instance.pk is None:
            for field, errors in services.agreement_errors(data).items():
                if field not in self.errors:  # a field that did not parse already says so
                    self.add_error(field, errors)
        elif "amount_minor" in self.changed_data and "amount_minor" in data:
            try:
                services.agreement_change_price_validate(
                    agreement=self.instance, amount_minor=data["amount_minor"]
                )
            except ValidationError as exc:
                self.add_error(None, exc)  # a field error for a bad amount, else one for the form
        return data

    def _post_clean(self) -> None:
        # Model.full_clean would judge the input a second time, by the model's rules, and show
        # CheckConstraint names ('Constraint "agreement_amount_positive" is violated.'). The
        # services decided in clean(); here only fill the instance and ask the database's
        # question, whether the external_ref is taken.
        try:
            self.instance = construct_instance(self, self.instance, self._meta.fields, self._meta.exclude)
        except ValidationError as exc:
            self._update_errors(exc)
        if self._validate_unique:
            self.validate_unique()

    def to_input(self) -> services.AgreementInput:
        d = self.cleaned_data
        return services.AgreementInput(
            external_ref=d["external_ref"],
            customer_ref=d.get("customer_ref") or "",
            customer_name=d["customer_name"],
            customer_email=d["customer_email"],
            description=d.get("description") or "",
            amount_minor=d["amount_minor"],
            currency=d["currency"],
            interval=d["interval"],
            interval_count=d["interval_count"],
            start_date=d["start_date"],
            end_date=d.get("end_date"),
        )


@admin.register(Agreement)
class AgreementAdmin(GuardedActionsMixin, admin.ModelAdmin):
    form = AgreementForm
    list_display = (
        "external_ref",
        "customer_name",
        "price",
        "every",
        "status",
        "start_date",
        "end_date",
        "aggregate_version",
    )
    list_filter = ("status", "interval", "currency")
    search_fields = ("external_ref", "customer_ref", "customer_name", "customer_email")
    date_hierarchy = "created_at"
    actions = ["pause", "resume", "cancel_now", "cancel_at_period_end"]

    def get_readonly_fields(self, request: HttpRequest, obj: Agreement | None = None) -> tuple[str, ...]:
        if obj is None:
            return ()
        # After creation only the price changes here (from the next period); the rest is history.
        return ("price",) + tuple(f for f in CREATE_FIELDS if f != "amount_minor") + (
            "status",
            "price_effective_from",
            "paused_from",
            "cancel_effective_date",
            "aggregate_version",
            "related",
        )

    def get_fields(self, request: HttpRequest, obj: Agreement | None = None) -> list[str]:
        if obj is None:
            return list(CREATE_FIELDS)
        readonly = self.get_readonly_fields(request, obj)
        return [readonly[0], "amount_minor", *readonly[1:]]  # the price, then the new price's input

    @admin.display(description="price", ordering="amount_minor")
    def price(self, obj: Agreement) -> str:
        return format_money(obj.amount_minor, obj.currency)

    @admin.display(description="history")
    def related(self, obj: Agreement) -> SafeString:
        return format_html(
            "{} · {}",
            events_link(obj.pk, "events of this agreement"),
            changelist_link("invoicing", "invoice", {"agreement_id": obj.pk}, "its invoices"),
        )

    @admin.display(description="every")
    def every(self, obj: Agreement) -> str:
        return f"{obj.interval_count} {obj.interval}{'s' if obj.interval_count > 1 else ''}"

    def save_model(self, request: HttpRequest, obj: Agreement, form: AgreementForm, change: bool) -> None:
        if not change:
            created = services.agreement_create(data=form.to_input())
            obj.pk = created.pk
            obj.__dict__.update(created.__dict__)
        elif "amount_minor" in form.changed_data:
            services.agreement_change_price(
                agreement_id=obj.pk, amount_minor=form.cleaned_data["amount_minor"]
            )

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # cancel instead: history must not change

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("agreements.cancel_agreement")

    def _each(self, request: HttpRequest, queryset: QuerySet[Agreement], verb: str, fn: Any) -> None:
        done, failed = 0, []
        for agreement in queryset:
            try:
                fn(agreement_id=agreement.pk)
                done += 1
            except ValidationError as exc:
                failed.append(f"{agreement.external_ref}: {'; '.join(exc.messages)}")
        if done:
            self.message_user(request, f"{verb} {done} agreement(s).", messages.SUCCESS)
        if failed:
            self.message_user(request, "Not changed: " + " | ".join(failed), messages.WARNING)

    @admin.action(description="Pause selected agreements (from today)", permissions=["cancel"])
    def pause(self, request: HttpRequest, queryset: QuerySet[Agreement]) -> None:
        self._each(request, queryset, "Paused", services.agreement_pause)

    @admin.action(description="Resume selected agreements (from today)", permissions=["cancel"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Agreement]) -> None:
        self._each(request, queryset, "Resumed", services.agreement_resume)

    @admin.action(description="Cancel selected agreements now", permissions=["cancel"])
    def cancel_now(self, request: HttpRequest, queryset: QuerySet[Agreement]) -> None:
        self._each(request, queryset, "Cancelled", services.agreement_cancel)

    @admin.action(description="Cancel selected agreements at the end of their period", permissions=["cancel"])
    def cancel_at_period_end(self, request: HttpRequest, queryset: QuerySet[Agreement]) -> None:
        self._each(
            request,
            queryset,
            "Cancelled (at period end)",
            lambda agreement_id: services.agreement_cancel(agreement_id=agreement_id, at_period_end=True),
        )
