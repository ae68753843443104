"""The one health model: every check, evaluated over one reading of the queues and the outbox.

``evaluate()`` is what ``messaging_status`` prints and exits on, what the Messaging page shows,
what monitoring alerts on (operations/alerts.py) and what ``/readyz`` reads its queue state from
(``readiness()``). Checks that belong to a domain app (invoicing's "daily run stuck") are
registered by that app with ``register_check``, so the backbone never imports it.

One rule each: a DLQ is "not empty" when its depth (visible + in flight + delayed) exceeds
MONITOR_DLQ_MAX_DEPTH; an unknown age never counts as a breach; a missing queue is a breach.
Each breach names what repairs it (``Repair``), shown next to it on the Messaging page and by
``messaging_status``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from core.calendar import billing_today

from .. import contracts
from ..models import Heartbeat, OutboxEvent
from ..publishing import claiming
from ..publishing.holding import bulk_queues, feeding
from ..topology import aws, resources
from .counts import OutboxStat, outbox_stats
from .observations import QueueStat, missing_queues, queue_stats


def operator_command(args: str) -> str:
    """A manage.py command (``args``) as an operator types it beside the stack (OPERATOR_COMMAND)."""
    return settings.OPERATOR_COMMAND.format(args=args)


@dataclass(frozen=True)
class Repair:
    """What repairs a breach: in words, manage.py commands (arguments only), an admin page."""

    text: str
    commands: tuple[str, ...] = ()  # e.g. "dlq_redrive payments --dry-run"
    url: str = ""  # an admin page that repairs it or shows why

    @property
    def command_lines(self) -> list[str]:
        return [operator_command(c) for c in self.commands]


@dataclass
class CheckResult:
    check: str  # the alert type is alert.<check>
    breached: bool
    summary: str = ""
    severity: str = "warning"
    details: dict[str, Any] = field(default_factory=dict)
    repairs: list[Repair] = field(default_factory=list)  # what to do about a breach


def dlq_repair(queue: QueueStat) -> Repair:
    """What empties a DLQ: see why its messages failed, fix that, move them back (dry run first)."""
    return Repair(
        f"{queue.name}: read the first error of each message, fix its cause, then move them back "
        "(dry run first)",
        (f"dlq_inspect {queue.consumer}", f"dlq_redrive {queue.consumer} --dry-run"),
    )


# Checks that belong to a domain app (e.g. invoicing's "daily run stuck"), registered by the app
# itself so the backbone never imports it.
EXTRA_CHECKS: list[Callable[[], CheckResult]] = []


def register_check(fn: Callable[[], CheckResult]) -> Callable[[], CheckResult]:
    """Add ``fn`` to the automated checks (``monitor_run`` alerts on its breaches like the others)."""
    if fn not in EXTRA_CHECKS:
        EXTRA_CHECKS.append(fn)
    return fn


def _checks(queues: list[QueueStat], outbox: OutboxStat) -> list[CheckResult]:
    """Every check, over one reading of the queues and the outbox."""
    results = []
    full = [q for q in queues if q.is_dlq and q.depth > settings.MONITOR_DLQ_MAX_DEPTH]  # one rule
    dlqs = {q.name: q.depth for q in full}
    results.append(
        CheckResult(
            "dlq_not_empty",
            bool(dlqs),
            f"{sum(dlqs.values())} message(s) in {sorted(dlqs)}",
            "critical",
            {"dlqs": dlqs},
            [dlq_repair(q) for q in full],
        )
    )
    # A deleted or never-provisioned queue: workers and pollers back off on it and nothing flows.
    missing = sorted(q.name for q in queues if q.missing)
    results.append(
        CheckResult(
            "queues_missing",
            bool(missing),
            f"{len(missing)} queue(s) do not exist: {', '.join(missing)}; run messaging_provision",
            "critical",
            {"queues": missing},
            [Repair("create the missing queues and their DLQs", ("messaging_provision",))],
        )
    )
    limit = settings.MONITOR_QUEUE_MAX_AGE_SECONDS
    old = {q.name: round(q.oldest_age or 0) for q in queues if not q.is_dlq and (q.oldest_age or 0) > limit}
    results.append(
        CheckResult(
            "queue_message_too_old",
            bool(old),
            f"oldest message over {limit}s in {sorted(old)}",
            "warning",
            {"queues": old},
            [Repair("their consumers are behind or stopped: are the workers that read them running?")],
        )
    )
    lag = outbox.oldest_unpublished_age or 0
    hold = settings.OUTBOX_RELAY_HOLD_DEPTH
    bulk = set(bulk_queues()) if hold > 0 else set()
    holding = [q for q in queues if q.name in bulk and q.depth > hold]  # a DLQ's name is not in it
    held = [
        Repair(
            f"the relay holds the events of {_topics(feeding(q.name))} while {q.name} is past "
            f"{hold} messages ({q.depth} now; OUTBOX_RELAY_HOLD_DEPTH, for a local emulator): its "
            "consumer is behind or stopped, so they wait here for it"
        )
        for q in holding
    ]
    results.append(
        CheckResult(
            "outbox_lagging",
            lag > settings.MONITOR_OUTBOX_MAX_AGE_SECONDS,
            f"{outbox.unpublished_text} unpublished event(s), oldest {lag:.0f}s",
            "critical",
            {
                "unpublished": outbox.unpublished,
                "unpublished_more": outbox.unpublished_more,
                "oldest_age_seconds": round(lag),
            },
            [
                *held,
                *(_unclaimed() if lag > settings.MONITOR_OUTBOX_MAX_AGE_SECONDS else []),
                Repair(
                    "the relay is not keeping up: failing rows show their last error; the relay runs on "
                    "the events task queue (a worker must consume it) and needs SNS",
                    url=reverse("admin:events_outboxevent_changelist") + "?published=failing",
                ),
            ],
        )
    )
    beat = Heartbeat.objects.filter(name="daily_run").first()
    max_age = timedelta(hours=settings.MONITOR_DAILY_RUN_MAX_AGE_HOURS)
    missed = beat is not None and timezone.now() - beat.beat_at > max_age
    results.append(
        CheckResult(
            "daily_run_missed",
            missed,
            f"no daily run finished since {beat.beat_at:%Y-%m-%d %H:%M} UTC" if beat else "",
            "critical",
            {"last_run": beat.beat_at.isoformat() if beat else None},
            [
                Repair(
                    "issue what is due now, in this process (idempotent; catches up every missed day)",
                    (f"invoices_issue --date {billing_today().isoformat()}",),
                )
            ],
        )
    )
    since = timezone.now() - timedelta(hours=1)
    recent = OutboxEvent.objects.filter(occurred_at__gte=since)
    ok = recent.filter(type=contracts.PAYMENT_SUCCEEDED).count()
    failed = recent.filter(type=contracts.PAYMENT_FAILED, data__final=True).count()
    total = ok + failed
    rate = failed / total if total else 0.0
    results.append(
        CheckResult(
            "payment_failure_rate",
            total >= settings.MONITOR_PAYMENT_MIN_OUTCOMES and rate > settings.MONITOR_PAYMENT_FAILURE_RATE,
            f"{rate:.0%} of {total} payments failed for good in the last hour",
            "warning",
            {"failed": failed, "succeeded": ok},
            [Repair("read the error classes of the failed payments: Admin -> Payments, status failed")],
        )
    )
    results.extend(check() for check in EXTRA_CHECKS)
    return results


@dataclass
class Health:
    """One evaluation: the readings and every check's verdict."""

    queues: list[QueueStat]
    outbox: OutboxStat
    checks: list[CheckResult]

    @property
    def breached(self) -> list[CheckResult]:
        return [c for c in self.checks if c.breached]

    def breach(self, check: str) -> CheckResult | None:
        """The named check's result if it is breached."""
        return next((c for c in self.breached if c.check == check), None)


def evaluate(*, with_age: bool = True) -> Health:
    """Read the queues and the outbox once, and run every check over that reading."""
    queues = queue_stats(with_age=with_age)
    outbox = outbox_stats()
    return Health(queues, outbox, _checks(queues, outbox))


def readiness() -> dict[str, str]:
    """What ``/readyz`` answers: the database, every queue of the topology (read now, not from a
    cache), SNS. "ok" or what is wrong, per part."""
    parts: dict[str, str] = {}
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT 1")
        parts["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - report, do not crash the probe
        parts["database"] = f"error: {type(exc).__name__}"
    try:
        missing = missing_queues()
        parts["sqs"] = f"missing: {', '.join(missing)}" if missing else "ok"
    except Exception as exc:  # noqa: BLE001
        parts["sqs"] = f"error: {type(exc).__name__}"
    try:
        topic = aws.topic_arn(resources.topic_name(resources.ALERTS))
        aws.client("sns").get_topic_attributes(TopicArn=topic)
        parts["sns"] = "ok"
    except Exception as exc:  # noqa: BLE001
        parts["sns"] = f"error: {type(exc).__name__}"
    return parts


def heartbeat_record(*, name: str, detail: dict[str, Any] | None = None) -> Heartbeat:
    """Record that ``name`` is alive now. Idempotent: one row per name, last write wins."""
    beat, _ = Heartbeat.objects.update_or_create(
        name=name, defaults={"beat_at": timezone.now(), "detail": detail or {}}
    )
    return beat


def _topics(names: list[str]) -> str:
    return f"the {' and '.join(names)} topic{'s' if len(names) > 1 else ''}"


def _unclaimed() -> list[Repair]:
    """Unpublished events no relay claim takes (claiming.never_claimed): they wait for ever, and
    nothing else says why. Read only once the outbox lags."""
    found = claiming.never_claimed().values_list("producer", "priority")[:1]
    if not found:
        return []
    [(producer, priority)] = found
    pairs = claiming.ranges()
    producers = ", ".join(dict.fromkeys(p for _, p in pairs))
    priorities = ", ".join(str(p) for p in dict.fromkeys(priority for priority, _ in pairs))
    return [
        Repair(
            f"unpublished events of producer {producer!r} (priority {priority}) are taken by no relay: "
            f"it publishes only the producers {producers} at priorities {priorities}; correct or delete them",
            url=reverse("admin:events_outboxevent_changelist") + f"?producer__exact={quote(producer)}",
        )
    ]
