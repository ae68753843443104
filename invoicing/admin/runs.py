"""Daily runs with their chunks (read-only)."""

from __future__ import annotations

from django.contrib import admin

from core.admin_tools import HistoryInline, ReadOnlyMixin

from ..models import DailyRun, DailyRunChunk


class DailyRunChunkInline(HistoryInline):
    model = DailyRunChunk
    fields = ("pk_from", "pk_to", "status", "attempts", "issued", "started_at", "finished_at", "error")
    readonly_fields = fields


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
