"""The operators' "Messaging" admin page: the health model's checks, queues and DLQs, the outbox,
the last daily run (its heartbeat), panels that apps add (payments: charges waiting at the gateway's
pace), a 30-day chart, and redrive/replay behind their permissions with a dry-run confirmation
first. It reads only the backbone: apps add what the page shows with ``register_panel`` (as they add
checks with ``health.register_check``), so no app is imported.

What needs an operator is highlighted where it shows (a DLQ holding messages, a breached check, an
outbox backlog, a stale daily run), each with what repairs it next to it (``health.Repair``).

Nothing here counts a big table per view: the outbox figures are bounded (counts.py), and the
chart's daily counts are computed off the request path (chart.py) and read back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from events.consuming.dlq import DlqError, Selection, depth, redrive, resolve
from events.models import Heartbeat
from events.operations.chart import DAYS, chart_data
from events.operations.counts import outbox_stats
from events.operations.health import dlq_repair, evaluate
from events.operations.observations import format_age
from events.operations.replay_ui import ReplayForm, confirm_page
from events.publishing.replay import ReplayError, replay, select_events

logger = logging.getLogger(__name__)

PanelRead = Callable[[], dict[str, Any]]


@dataclass(frozen=True)
class Panel:
    title: str
    template: str  # rendered with ``panel``: what ``read`` returned
    read: PanelRead


PANELS: list[Panel] = []


def register_panel(*, title: str, template: str) -> Callable[[PanelRead], PanelRead]:
    """Add a section to the Messaging page: ``template`` rendered with what the decorated function
    returns. It runs on every view, so it must be read-only and cheap (bounded counts, indexes)."""

    def add(read: PanelRead) -> PanelRead:
        if all(p.read is not read for p in PANELS):
            PANELS.append(Panel(title, template, read))
        return read

    return add


def _panels() -> list[dict[str, Any]]:
    """Each registered panel with what it read; one that fails says why instead of failing the page."""
    shown = []
    for panel in PANELS:
        entry: dict[str, Any] = {"title": panel.title, "template": panel.template, "error": ""}
        try:
            entry["context"] = panel.read()
        except Exception as exc:  # noqa: BLE001 - one panel must not take the page down
            logger.exception("the Messaging page's panel %r could not be read", panel.title)
            entry["error"] = f"{type(exc).__name__}: {exc}"
        shown.append(entry)
    return shown


def messaging_view(request: HttpRequest) -> HttpResponse:
    can_redrive = request.user.has_perm("events.redrive_dlq")
    can_replay = request.user.has_perm("events.replay_event")
    if request.method == "POST":
        return _post(request, can_redrive, can_replay)
    context: dict[str, Any] = {**admin.site.each_context(request), "title": "Messaging"}
    try:
        health = evaluate()
        dlq_breach = health.breach("dlq_not_empty")
        full_dlqs = dlq_breach.details["dlqs"] if dlq_breach else {}
        context["queues"] = [
            {
                "stat": q,
                "age": format_age(q.oldest_age),
                "repair": dlq_repair(q) if q.name in full_dlqs else None,
            }
            for q in health.queues
        ]
        context.update(
            checks=health.checks,
            outbox_breach=health.breach("outbox_lagging"),
            daily_run_breach=health.breach("daily_run_missed"),
        )
        outbox = health.outbox
    except (BotoCoreError, ClientError) as exc:
        context["sqs_error"] = str(exc)
        outbox = outbox_stats()
    beat = Heartbeat.objects.filter(name="daily_run").first()
    chart, counted_at = chart_data()
    context.update(
        outbox=outbox,
        outbox_age=format_age(outbox.oldest_unpublished_age),
        last_run={"at": beat.beat_at, **beat.detail} if beat else None,
        panels=_panels(),
        chart=chart,
        chart_counted_at=counted_at,
        chart_days=DAYS,
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
        moved = f"Moved {report.moved} message(s) from {dlq} back to {source}."
        if report.failed or report.copied_not_deleted:
            messages.warning(request, moved)
        else:
            messages.success(request, moved)
        if report.stopped:
            messages.error(
                request,
                f"The redrive stopped: {report.stopped}. Nothing is lost; fix that and redrive again.",
            )
        elif report.failed:
            messages.error(
                request,
                f"{report.failed} message(s) could not be sent back and stay in {dlq}: "
                f"{'; '.join(report.errors[:3])}. Redrive again once {source} answers.",
            )
        if report.copied_not_deleted:
            messages.warning(
                request,
                f"{report.copied_not_deleted} message(s) were copied to {source} but not deleted from "
                f"{dlq} ({'; '.join(report.delete_errors[:3])}): they are in both. A later redrive sends "
                "them again; consumers skip an event they have already handled.",
            )
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
