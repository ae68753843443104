"""One audit pass over one consumer: compare, re-send, move the watermark, raise or clear the gap.

The watermark is a ``published_at``: every event the consumer subscribes to and that was
published before it is accounted for. ``published_at`` is stamped by the relay after the event's
own transaction committed, so an event committed late (a long import transaction whose
``occurred_at`` is older than events committed before it) is published, and audited, after the
watermark; and the watermark never passes the grace horizon (now minus the grace period) nor the
oldest event still unaccounted for. A pass reads from the watermark on; ``full`` reads the whole
event store (and may move the watermark back to a gap it finds); ``since`` reads events that
occurred since then, and only ever moves the watermark back.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import F
from django.utils import timezone

from .. import contracts
from ..models import DeliveryAudit
from ..operations import metrics
from ..operations.alerts import alert_transition
from ..operations.health import CheckResult
from . import backfill, subscriptions
from .accounting import AuditError, AuditReport
from .local import LocalSource
from .remote import remote_source

logger = logging.getLogger(__name__)

__all__ = ["AuditError", "audited_consumers", "delivery_audit_all", "delivery_audit_run"]


def audited_consumers() -> list[str]:
    """The consumers beat audits here (``DELIVERY_AUDIT_CONSUMERS``: "all" or a list)."""
    chosen = settings.DELIVERY_AUDIT_CONSUMERS.strip()
    names = subscriptions.consumer_names()
    if chosen in ("", "all"):
        return names
    wanted = [c.strip() for c in chosen.split(",") if c.strip()]
    return [c for c in wanted if c in names]


def delivery_audit_all(*, repair: bool) -> list[AuditReport]:
    """One pass over every audited consumer, from its watermark; a consumer whose audit cannot be
    carried out (its producer's API unreachable...) is logged and the others still run."""
    reports = []
    for consumer in audited_consumers():
        try:
            reports.append(delivery_audit_run(consumer=consumer, repair=repair))
        except AuditError as exc:
            logger.error("delivery audit of %s failed: %s", consumer, exc)
    return reports


def delivery_audit_run(
    *,
    consumer: str,
    full: bool = False,
    since: datetime | None = None,
    repair: bool = False,
    dry_run: bool = False,
    max_resend: int | None = None,
) -> AuditReport:
    """Audit ``consumer`` once (see the module doc). ``repair``: re-send what is missing (at most
    ``max_resend``, default DELIVERY_AUDIT_MAX_RESEND); ``dry_run``: change nothing (no watermark,
    no alert, nothing sent), only report. One pass per consumer at a time (a second one returns
    ``skipped``). Idempotent: a pass never applies an effect, only re-sends events."""
    try:
        plan = subscriptions.plan(consumer)
    except subscriptions.UnknownConsumer as exc:
        raise AuditError(str(exc)) from None
    report = AuditReport(consumer, dry_run=dry_run, repair=repair, since=since, not_audited=plan.not_audited)
    started = time.perf_counter()
    with _exclusive(consumer) as mine:
        if not mine:
            report.skipped = f"another audit of {consumer} is running"
            return report
        _run(report, plan, full=full, max_resend=max_resend)
        report.seconds = time.perf_counter() - started
        if not dry_run:
            _record(report)
    return report


def _run(report: AuditReport, plan: subscriptions.Plan, *, full: bool, max_resend: int | None) -> None:
    audit = DeliveryAudit.objects.filter(consumer=report.consumer).first()
    report.watermark_before = report.watermark_after = audit.watermark if audit else None
    report.horizon = timezone.now() - timedelta(seconds=settings.DELIVERY_AUDIT_GRACE_SECONDS)
    covering = report.since is None  # reads everything from the watermark on (or everything)
    report.audited_from = report.since if not covering else None if full else report.watermark_before
    budget = settings.DELIVERY_AUDIT_MAX_RESEND if max_resend is None else max_resend
    for producer, types in plan.by_producer.items():
        source = remote_source(producer) or LocalSource(producer)
        report.sources.append(source.describe())
        found = source.audit(
            consumer=report.consumer,
            types=types,
            horizon=report.horizon,
            published_from=report.audited_from,
            since=report.since,
            budget=max(0, budget - len(report.finding.to_resend)),
        )
        report.finding.merge(found)
    if report.dry_run:
        return
    if report.repair and report.finding.to_resend:
        try:
            sent = backfill.resend(report.consumer, report.finding.to_resend)
            report.resent, report.resend_failed, report.resend_errors = sent.sent, sent.failed, sent.errors
        except AuditError as exc:  # its queue is missing: the gap is still alerted, with why
            report.resend_failed, report.resend_errors = len(report.finding.to_resend), [str(exc)]
    backfill.forget_accounted(report.consumer)
    oldest = report.finding.oldest_unaccounted
    if covering:
        report.watermark_after = min(report.horizon, oldest) if oldest else report.horizon
    elif oldest and report.watermark_before and oldest < report.watermark_before:
        report.watermark_after = oldest  # a gap behind the watermark: the next passes read it again


def _record(report: AuditReport) -> None:
    """Keep the pass (watermark, counts) and move the gap's alert state. Only ``covering`` passes
    (not ``since``) move the alert, since only they see every event not yet accounted for."""
    totals = report.totals
    DeliveryAudit.objects.get_or_create(consumer=report.consumer)
    DeliveryAudit.objects.filter(consumer=report.consumer).update(
        watermark=report.watermark_after,
        last_pass_at=timezone.now(),
        last_pass_seconds=round(report.seconds, 3),
        missing=totals.missing,
        resent=report.resent,
        resent_total=F("resent_total") + report.resent,
        counts={t: c.as_dict() for t, c in report.counts.items()},
    )
    metrics.AUDIT_MISSING.labels(report.consumer).set(totals.missing)
    if report.since is None:
        report.alert = alert_transition(
            _gap_check(report),
            name=f"delivery_gap:{report.consumer}",
            resolved_details={"check": "delivery_gap", "consumer": report.consumer},
        )
    if report.alert or totals.missing:
        logger.warning(
            "delivery audit of %s: %d missing (%s), %d re-sent; %s",
            report.consumer,
            totals.missing,
            ", ".join(report.missing_types) or "-",
            report.resent,
            report.alert or "no alert change",
        )


def _gap_check(report: AuditReport) -> CheckResult:
    totals = report.totals
    oldest = report.finding.oldest_missing
    return CheckResult(
        check=contracts.ALERT_DELIVERY_GAP.removeprefix("alert."),
        breached=report.gap,
        severity="critical",
        summary=(
            f"{report.consumer} is missing {totals.missing} event(s) "
            f"({', '.join(report.missing_types) or 'none left: re-sent, not handled yet'})"
            + (f", the oldest from {oldest:%Y-%m-%d %H:%M:%S} UTC" if oldest else "")
            + _repair_note(report)
        ),
        details={
            "consumer": report.consumer,
            "count": totals.missing,
            "oldest_missing": oldest.isoformat() if oldest else None,
            "event_types": report.missing_types,
            "resent": report.resent,
        },
    )


def _repair_note(report: AuditReport) -> str:
    if not report.repair:
        return "; not re-sent (repair is off: events_audit --repair)"
    note = f"; {report.resent} re-sent to its queue" if report.resent else ""
    if report.resend_failed:
        note += f"; {report.resend_failed} could not be re-sent: {report.resend_errors[0][:300]}"
    return note


@contextlib.contextmanager
def _exclusive(consumer: str) -> Iterator[bool]:
    """A session advisory lock per consumer: one pass at a time (beat and an operator's command)."""
    key = f"events.delivery_audit:{consumer}"
    with connection.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", [key])
        mine = bool(cur.fetchone()[0])
    try:
        yield mine
    finally:
        if mine:
            with connection.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [key])
