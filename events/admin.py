"""Operators' view of the event store: read-only history, replay behind a permission."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from core.admin_tools import GuardedActionsMixin, ReadOnlyMixin, admin_link, events_link, warning

from . import envelope
from .models import AlertState, ApiToken, ConsumerFailure, Heartbeat, OutboxEvent, ProcessedEvent
from .operations.replay_ui import ReplayTargetForm, confirm_page
from .publishing.replay import ReplayError, replay


class PublishedFilter(admin.SimpleListFilter):
    title = "published"
    parameter_name = "published"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Published"), ("no", "Not yet (pending or failing)"), ("failing", "Failing")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[OutboxEvent]) -> QuerySet[OutboxEvent]:
        if self.value() == "yes":
            return queryset.filter(published_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(published_at__isnull=True)
        if self.value() == "failing":
            return queryset.filter(published_at__isnull=True, attempts__gt=0)
        return queryset


class ReadOnlyAdmin(ReadOnlyMixin, admin.ModelAdmin):
    """The event store and consumer bookkeeping: facts to read, never to edit."""


@admin.register(OutboxEvent)
class OutboxEventAdmin(GuardedActionsMixin, ReadOnlyAdmin):
    list_display = (
        "occurred_at",
        "type",
        "aggregate_type",
        "aggregate_id",
        "aggregate_version",
        "published_at",
        "attempts",
        "short_error",
    )
    list_filter = (PublishedFilter, "type", "producer", "aggregate_type")
    search_fields = ("=id", "=aggregate_id")
    search_help_text = "Exact event id or aggregate id."
    date_hierarchy = "occurred_at"
    ordering = ("-occurred_at",)
    list_per_page = 50
    show_full_result_count = False  # COUNT(*) over millions of rows is slow
    actions = ["replay_selected"]
    fields = (
        *("pretty_data" if name == "data" else name for name in envelope.NAMES),  # the envelope, as sent
        "published_at",
        "sns_message_id",
        "attempts",
        "last_attempt_at",
        "next_attempt_at",
        "last_error",
        "pretty_errors",
    )
    readonly_fields = fields

    def has_replay_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("events.replay_event")

    @admin.display(description="data")
    def pretty_data(self, obj: OutboxEvent) -> str:
        return format_html(
            "<pre>{}</pre>", json.dumps(obj.data, indent=2, ensure_ascii=False, sort_keys=True)
        )

    @admin.display(description="errors")
    def pretty_errors(self, obj: OutboxEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.errors, indent=2))

    @admin.display(description="last error")
    def short_error(self, obj: OutboxEvent) -> str:
        return obj.last_error[:80]

    @admin.action(description="Replay selected events…", permissions=["replay"])
    def replay_selected(self, request: HttpRequest, queryset: QuerySet[OutboxEvent]) -> HttpResponse | None:
        events = queryset.order_by("occurred_at", "id")
        form = ReplayTargetForm(request.POST if "confirm" in request.POST else None)
        if "confirm" in request.POST and form.is_valid():
            try:
                report = replay(events, to_queue=form.to_queue())
            except ReplayError as exc:
                self.message_user(request, str(exc), messages.ERROR)
                return None
            level = messages.SUCCESS if not report.failed else messages.WARNING
            self.message_user(
                request, f"Replayed {report.sent} event(s) to {report.target}; {report.failed} failed.", level
            )
            return None
        selected = request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME)
        return confirm_page(
            request,
            report=replay(events, dry_run=True, sample_size=20),
            hidden=[
                ("action", "replay_selected"),
                *((admin.helpers.ACTION_CHECKBOX_NAME, s) for s in selected),
            ],
            submit_name="confirm",
            cancel_url="",
            form=form,
        )


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "active", "created_at", "last_used_at")
    fields = ("name", "active", "created_at", "last_used_at")
    readonly_fields = ("name", "created_at", "last_used_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # created with `manage.py api_token_create NAME`, which shows the key once


@admin.register(Heartbeat)
class HeartbeatAdmin(admin.ModelAdmin):
    list_display = ("name", "beat_at", "detail")
    readonly_fields = ("name", "beat_at", "detail")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(ProcessedEvent)
class ProcessedEventAdmin(ReadOnlyAdmin):
    list_display = ("processed_at", "consumer", "event_type", "event_id", "payload_hash")
    list_filter = ("consumer", "event_type")
    search_fields = ("=event_id",)
    date_hierarchy = "processed_at"
    show_full_result_count = False


@admin.register(ConsumerFailure)
class ConsumerFailureAdmin(ReadOnlyAdmin):
    list_display = (
        "last_seen_at",
        "consumer",
        "event_type",
        "aggregate_id",
        "failures",
        "kind",
        "first_error",
    )
    list_filter = ("consumer", "poisoned", "event_type")
    search_fields = ("=message_id", "=event_id", "=aggregate_id")
    date_hierarchy = "last_seen_at"
    fields = (
        "consumer",
        "kind",
        "message_id",
        "event",
        "event_type",
        "aggregate",
        "failures",
        "first_error",
        "last_error",
        "first_seen_at",
        "last_seen_at",
    )
    readonly_fields = fields

    @admin.display(description="kind", ordering="poisoned")
    def kind(self, obj: ConsumerFailure) -> SafeString | str:
        # Poisoned: refused as malformed and already in the DLQ; an operator must look at it.
        return warning("poisoned") if obj.poisoned else "handler error"

    @admin.display(description="event")
    def event(self, obj: ConsumerFailure) -> SafeString:
        return admin_link("events", "outboxevent", obj.event_id)

    @admin.display(description="aggregate")
    def aggregate(self, obj: ConsumerFailure) -> SafeString | str:
        return events_link(obj.aggregate_id, obj.aggregate_id) if obj.aggregate_id else "-"


@admin.register(AlertState)
class AlertStateAdmin(ReadOnlyAdmin):
    list_display = ("name", "breached", "since", "summary", "checked_at")
