"""The scenario's oracle: what the harness did, what it therefore expects, and the invariants.

Independent of the billing code: the periods an agreement owes are computed here from the
harness's own log of what it asked the agreements service to do (``Plan``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date
from typing import Any


@dataclass
class Plan:
    """What the harness did to one agreement (the oracle's input)."""

    start: date
    interval: str
    count: int
    end: date | None
    prices: list[tuple[date, int]] = field(default_factory=list)  # (effective_from, amount)
    pauses: list[list[date | None]] = field(default_factory=list)  # [paused_from, resumed_from]
    cancel: date | None = None


def expected_periods(plan: Plan, last_run: date) -> list[tuple[date, int]]:
    """Which period starts are billable by ``last_run``, and at what price."""
    from core.calendar import period_start

    out = []
    k = 0
    while True:
        start = period_start(plan.start, plan.interval, plan.count, k)
        k += 1
        if start > last_run or (plan.end and start >= plan.end) or (plan.cancel and start >= plan.cancel):
            return out
        paused = any(p[0] <= start and (p[1] is None or start < p[1]) for p in plan.pauses)
        if paused:
            continue
        # stable sort by date: among changes effective the same day, the later one wins
        amount = [a for eff, a in sorted(plan.prices, key=lambda p: p[0]) if eff <= start][-1]
        out.append((start, amount))


@dataclass
class Expectations:
    """Everything the invariants compare the system's state with."""

    plans: dict[str, Plan]
    last_run: date
    domain_changes: Counter[str]
    waived: set[tuple[str, date]]  # (agreement, period start) whose invoice an operator voided
    dead_letters: int  # messages the harness poisoned on purpose


def check(expect: Expectations, gateway: dict[str, Any]) -> list[str]:
    """Every invariant; returns the violations (empty when the system did what it must)."""
    from django.db.models import Count

    from events.models import OutboxEvent
    from invoicing.models import CreditNote, DailyRun, Invoice
    from payments.gateway import HARD, SOFT
    from payments.models import Payment, PaymentAttempt, Refund

    v: list[str] = []
    invoices = list(Invoice.objects.all())
    # 1. for every agreement and period: billed net of credit notes = what the full history owes
    net: dict[str, Counter[date]] = defaultdict(Counter)
    for inv in invoices:
        if inv.status != Invoice.Status.VOID:
            net[inv.agreement_id][inv.period_start] += inv.total_minor
    for note in CreditNote.objects.all():
        net[note.agreement_id][note.period_start] -= note.total_minor
    for agreement_id, plan in expect.plans.items():
        owed = {
            s: a for s, a in expected_periods(plan, expect.last_run) if (agreement_id, s) not in expect.waived
        }
        billed = {s: a for s, a in net[agreement_id].items() if a and (agreement_id, s) not in expect.waived}
        if billed != owed:
            diff = sorted(set(owed.items()) ^ set(billed.items()))[:4]
            v.append(f"agreement {agreement_id}: owes {len(owed)} periods, billed {len(billed)}: {diff}")
    # 2. the gateway: one charge per idempotency key and per payment; a void invoice keeps no money
    charges = gateway["charges_detail"].values()
    if doubles := [k for k, n in gateway["charges_by_key"].items() if n > 1]:
        v.append(f"{len(doubles)} idempotency keys charged more than once")
    per_payment: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for c in charges:
        per_payment[c["key"].split("#")[0]].append(c)
    payments = {p.invoice_id: p for p in Payment.objects.all()}
    expected_status = {
        "succeeded": "paid",
        "failed": "uncollectible",
        "refunded": "void",
        "cancelled": "void",
    }
    for inv in invoices:
        p = payments.get(str(inv.id))
        if p is None:
            v.append(f"invoice {inv.number} has no payment")
            continue
        taken = per_payment.get(f"pay-{p.id}", [])
        if len(taken) > 1:
            v.append(f"invoice {inv.number} charged {len(taken)} times")
        kept = sum(c["amount"] - c["refunded"] for c in taken)
        if inv.status == Invoice.Status.VOID:
            if kept:
                v.append(f"void invoice {inv.number} keeps {kept} charged at the gateway (not refunded)")
            if p.status not in ("cancelled", "refunded", "failed"):
                v.append(f"void invoice {inv.number} still collected: its payment is {p.status}")
        elif expected_status.get(p.status, "open") != inv.status:
            v.append(f"invoice {inv.number} is {inv.status} but its payment is {p.status}")
    # 3. one event per committed change, every one published
    refunded = Refund.objects.filter(status="succeeded").count()
    committed = {
        **expect.domain_changes,
        "invoice.issued": len(invoices),
        "invoice.voided": sum(i.status == Invoice.Status.VOID for i in invoices),
        "credit_note.issued": CreditNote.objects.count(),
        "payment.succeeded": sum(p.status in ("succeeded", "refunded") for p in payments.values()),
        "payment.cancelled": sum(p.status == "cancelled" for p in payments.values()),
        "payment.refunded": refunded,
        # one per declined attempt: a soft decline (dunning goes on) and the final one
        "payment.failed": PaymentAttempt.objects.filter(outcome__in=[SOFT, HARD]).count(),
    }
    stored = dict(OutboxEvent.objects.values_list("type").annotate(n=Count("id")))
    for event_type, n in committed.items():
        if stored.get(event_type, 0) != n:
            v.append(f"{event_type}: {n} committed changes, {stored.get(event_type, 0)} events in the store")
    if OutboxEvent.objects.filter(published_at__isnull=True).exists():
        v.append("unpublished events left in the outbox")
    # 4. every daily run ended
    if running := list(DailyRun.objects.filter(status="running").values_list("run_date", flat=True)):
        v.append(f"daily runs left running: {running}")
    # 5. refunds all went through
    if stuck := Refund.objects.exclude(status="succeeded").count():
        v.append(f"{stuck} refund(s) not made")
    return v


def depths() -> dict[str, int]:
    from events.operations.observations import queue_stats

    return {s.name: s.visible + s.in_flight + s.delayed for s in queue_stats(with_age=False)}


def check_queues(dead_letters: int) -> list[str]:
    """No message left in any queue; the DLQs hold exactly the messages poisoned on purpose."""
    v = []
    found = depths()
    if left := {q: d for q, d in found.items() if not q.endswith("-dlq") and d}:
        v.append(f"messages left in queues: {left}")
    dead = sum(d for q, d in found.items() if q.endswith("-dlq"))
    if dead != dead_letters:
        v.append(f"DLQs hold {dead} messages, expected only the {dead_letters} poisoned ones: {found}")
    return v


def unaccounted(*, full: bool) -> dict[str, str]:
    """Consumers with events not handled nor dead-lettered (lost, re-sent, or still queued), as the
    delivery audit counts them in a dry run (from its watermark, or ``full``: the whole store)."""
    from events.audit import audited_consumers, delivery_audit_run

    out = {}
    for consumer in audited_consumers():
        report = delivery_audit_run(consumer=consumer, full=full, dry_run=True)
        t = report.totals
        if report.skipped:
            out[consumer] = report.skipped  # beat's pass is at it: look again later
        elif t.missing or t.resent or t.in_flight:
            types = sorted(ty for ty, c in report.counts.items() if c.missing or c.resent or c.in_flight)
            out[consumer] = (
                f"{t.missing} missing, {t.resent + t.in_flight} unhandled in flight ({', '.join(types)})"
            )
    return out


def check_delivery() -> list[str]:
    """Every consumer has every event its subscriptions deliver: handled or dead-lettered."""
    return [f"consumer {c}: {why}" for c, why in unaccounted(full=True).items()]


def resent_by_audit() -> int:
    from django.db.models import Sum

    from events.models import DeliveryAudit

    return int(DeliveryAudit.objects.aggregate(n=Sum("resent_total"))["n"] or 0)
