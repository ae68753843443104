"""The operators' "Messaging" admin page: the health model's checks, queues and DLQs, the outbox,
the last daily run (its heartbeat), a 30-day chart, and redrive/replay behind their permissions
with a dry-run confirmation first. It reads only the backbone: no app is imported.

Nothing here counts a big table per view: the outbox figures are bounded (observations), and the
chart's daily counts (30 days of the event store) are computed off the request path by
``chart_refresh`` (beat, every MESSAGING_CHART_SECONDS, on the monitoring queue) and read back.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.db.models.functions import TruncDate
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from events import contracts
from events.consuming.dlq import DlqError, Selection, depth, redrive, resolve
from events.models import Heartbeat, OutboxEvent, ProcessedEvent
from events.operations.counts import outbox_stats
from events.operations.health import evaluate, heartbeat_record
from events.operations.observations import format_age
from events.operations.replay_ui import ReplayForm, confirm_page
from events.publishing.replay import ReplayError, replay, select_events

DAYS = 30
CHART_HEARTBEAT = "messaging_chart"  # its detail holds the chart's daily counts


def _daily_counts() -> dict[str, dict[Any, int]]:
    start = timezone.now() - timedelta(days=DAYS)

    def per_day(qs: Any, field: str) -> dict[Any, int]:
        rows = qs.filter(**{f"{field}__gte": start}).annotate(day=TruncDate(field)).values("day")
        return {r["day"]: r["n"] for r in rows.annotate(n=Count("pk")).order_by()}

    return {
        "published": per_day(OutboxEvent.objects.exclude(published_at=None), "published_at"),
        "handled": per_day(ProcessedEvent.objects.all(), "processed_at"),
        "invoices": per_day(OutboxEvent.objects.filter(type=contracts.INVOICE_ISSUED), "occurred_at"),
    }


def chart_refresh() -> None:
    """Count the chart's three daily series now and keep them for the page. Idempotent."""
    counts = _daily_counts()
    heartbeat_record(
        name=CHART_HEARTBEAT,
        detail={name: {day.isoformat(): n for day, n in series.items()} for name, series in counts.items()},
    )


def _stored_counts() -> tuple[dict[str, dict[Any, int]], datetime | None]:
    """The counts ``chart_refresh`` kept, and when; empty series before its first run."""
    beat = Heartbeat.objects.filter(name=CHART_HEARTBEAT).first()
    names = ("published", "handled", "invoices")
    if beat is None:
        return {name: {} for name in names}, None
    counts = {
        name: {date.fromisoformat(day): n for day, n in beat.detail.get(name, {}).items()} for name in names
    }
    return counts, beat.beat_at


def _chart(counts: dict[str, dict[Any, int]]) -> SafeString:
    """An inline SVG of three daily series over the last 30 days (no JavaScript)."""
    today = timezone.now().date()
    days = [today - timedelta(days=DAYS - 1 - i) for i in range(DAYS)]
    top = max([1, *(v for series in counts.values() for v in series.values())])
    width, height, pad = 720, 180, 20
    colors = {"published": "#417690", "handled": "#79aec8", "invoices": "#e0a030"}
    parts = [f'<svg role="img" aria-label="events per day" width="{width}" height="{height + 40}">']
    for name, series in counts.items():
        xs = [pad + i * (width - 2 * pad) / (DAYS - 1) for i in range(DAYS)]
        ys = [pad + (height - 2 * pad) * (1 - series.get(d, 0) / top) for d in days]
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
        parts.append(f'<polyline fill="none" stroke="{colors[name]}" stroke-width="2" points="{points}"/>')
    for i, name in enumerate(counts):
        parts.append(f'<text x="{pad + i * 160}" y="{height + 25}" fill="{colors[name]}">{name}</text>')
    parts.append(f'<text x="{width - 150}" y="14">max {top}/day</text></svg>')
    return format_html("{}", SafeString("".join(parts)))


def messaging_view(request: HttpRequest) -> HttpResponse:
    can_redrive = request.user.has_perm("events.redrive_dlq")
    can_replay = request.user.has_perm("events.replay_event")
    if request.method == "POST":
        return _post(request, can_redrive, can_replay)
    context: dict[str, Any] = {**admin.site.each_context(request), "title": "Messaging"}
    try:
        health = evaluate()
        context["queues"] = [
            {"stat": q, "age": format_age(q.oldest_age), "consumer": q.name.removesuffix("-dlq")}
            for q in health.queues
        ]
        context["checks"] = health.checks
        outbox = health.outbox
    except (BotoCoreError, ClientError) as exc:
        context["sqs_error"] = str(exc)
        outbox = outbox_stats()
    beat = Heartbeat.objects.filter(name="daily_run").first()
    counts, counted_at = _stored_counts()
    context.update(
        outbox=outbox,
        outbox_age=format_age(outbox.oldest_unpublished_age),
        last_run={"at": beat.beat_at, **beat.detail} if beat else None,
        chart=_chart(counts),
        chart_counted_at=counted_at,
        can_redrive=can_redrive,
        can_replay=can_replay,
        replay_form=ReplayForm(),
    )
    redrive_queue = request.GET.get("redrive")
    if redrive_queue and can_redrive:
        try:
            dlq, source = resolve(redrive_queue)
            context["redrive_preview"] = {
                "dlq": dlq,
                "source": source,
                # a preview of "move everything" is the DLQ's depth: no need to receive (and
                # hide, and count a receive of) every message just to count them
                "count": depth(dlq),
            }
        except DlqError as exc:
            messages.error(request, str(exc))
    return TemplateResponse(request, "admin/messaging.html", context)


def _post(request: HttpRequest, can_redrive: bool, can_replay: bool) -> HttpResponse:
    here = reverse("admin-messaging")
    if "redrive" in request.POST:
        if not can_redrive:
            raise PermissionDenied("You may not redrive dead-letter queues.")
        try:
            dlq, source = resolve(request.POST["redrive"])
        except DlqError as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(here)
        report = redrive(dlq, source, selection=Selection())
        messages.success(request, f"Moved {report.moved} message(s) from {dlq} back to {source}.")
        return HttpResponseRedirect(here)
    if "replay" in request.POST or "replay_preview" in request.POST:
        if not can_replay:
            raise PermissionDenied("You may not replay events.")
        form = ReplayForm(request.POST)
        if not form.is_valid():
            messages.error(request, f"Replay: {form.errors.as_text()}")
            return HttpResponseRedirect(here)
        d = form.cleaned_data
        since = timezone.make_aware(timezone.datetime(d["since"].year, d["since"].month, d["since"].day))
        events = select_events(type=d["type"], since=since)
        target = None if d["target"] == "topic" else d["target"]
        try:
            report = replay(events, to_queue=target, dry_run="replay_preview" in request.POST)
        except ReplayError as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(here)
        if report.dry_run:
            hidden = [(name, str(form.data.get(name, ""))) for name in form.fields]
            return confirm_page(request, report=report, hidden=hidden, submit_name="replay", cancel_url=here)
        messages.success(
            request, f"Replayed {report.sent} event(s) to {report.target}; {report.failed} failed."
        )
    return HttpResponseRedirect(here)
