"""Bills do not depend on when events arrive: late pauses, resumes, cancels and price changes
correct the periods the daily run has already passed (void and reissue, credit notes)."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import date, timedelta

import pytest
from django.db.models import Sum
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.models import OutboxEvent
from invoicing.models import BillableAgreement, CreditNote, Invoice
from invoicing.services import (
    correction_approve,
    invoice_mark_paid,
    invoice_void,
    invoices_run_inline,
    projection_apply,
)
from tests.factories import event_from_row

from .factories import agreement_event

pytestmark = pytest.mark.django_db


def make(**created: object) -> None:
    projection_apply(event=agreement_event("agreement.created", "A", 1, start_date="2026-01-01", **created))


def run(day: str) -> None:
    invoices_run_inline(run_date=date.fromisoformat(day))


def deliver(type: str, version: int, **data: object) -> None:
    projection_apply(event=agreement_event(type, "A", version, **data))


def documents(period: str) -> list[tuple[str, int, int]]:
    """(status, total, revision) of the period's invoices, in issue order."""
    return list(
        Invoice.objects.filter(agreement_id="A", period_start=date.fromisoformat(period))
        .order_by("revision")
        .values_list("status", "total_minor", "revision")
    )


def net_billed(period: str) -> int:
    start = date.fromisoformat(period)
    live = Invoice.objects.filter(agreement_id="A", period_start=start).exclude(status="void")
    credited = CreditNote.objects.filter(agreement_id="A", period_start=start)
    billed = live.aggregate(s=Sum("total_minor"))["s"] or 0
    return billed - (credited.aggregate(s=Sum("total_minor"))["s"] or 0)


def pay(period: str) -> None:
    inv = Invoice.objects.get(agreement_id="A", period_start=date.fromisoformat(period), status="open")
    invoice_mark_paid(invoice_id=str(inv.id), payment_id=f"pay-{inv.id}")


@pytest.fixture(autouse=True)
def _today(monkeypatch, settings):
    """ "Today" is 2026-06-01 and corrections up to a year old apply on their own."""
    monkeypatch.setattr("invoicing.services.corrections.billing_today", lambda: date(2026, 6, 1))
    settings.INVOICING_MAX_CORRECTION_DAYS = 365


def test_a_resume_delivered_after_the_run_bills_the_period_it_resumes():
    # given a pause from March 1, delivered in time, and the March run bills nothing
    make()
    deliver("agreement.paused", 2, paused_from="2026-03-01")
    run("2026-03-01")
    # when a resume from April 1, recorded before April 1's run, is delivered after it
    run("2026-04-01")
    assert documents("2026-04-01") == []
    deliver("agreement.resumed", 3, resumed_from="2026-04-01")
    # then April is billed at once, and March stays unbilled
    assert documents("2026-04-01") == [("open", 1000, 0)]
    assert documents("2026-03-01") == []


def test_a_pause_delivered_after_the_run_voids_an_open_invoice_and_credits_a_paid_one():
    make()
    run("2026-03-01")
    pay("2026-02-01")  # February was paid; March is still open
    # when a pause from February 1 arrives late (after March 1's run)
    deliver("agreement.paused", 2, paused_from="2026-02-01")
    # then March's open invoice is void, February's paid one is credited in full
    assert documents("2026-03-01") == [("void", 1000, 0)]
    assert documents("2026-02-01") == [("paid", 1000, 0)]
    [note] = CreditNote.objects.filter(period_start=date(2026, 2, 1))
    assert note.total_minor == 1000 and note.number.startswith("CN-2026-") and note.lines.count() == 1
    assert net_billed("2026-02-01") == net_billed("2026-03-01") == 0 and net_billed("2026-01-01") == 1000
    assert OutboxEvent.objects.filter(type="credit_note.issued").count() == 1
    assert OutboxEvent.objects.filter(type="invoice.voided").count() == 1


def test_a_cancel_at_period_end_delivered_after_the_next_run_voids_the_period_it_ends():
    make()
    run("2026-03-31")
    # recorded March 31 (effective April 1), delivered after April 1's run
    run("2026-04-01")
    assert documents("2026-04-01") == [("open", 1000, 0)]
    deliver("agreement.cancelled", 2, effective_date="2026-04-01", at_period_end=True)
    assert documents("2026-04-01") == [("void", 1000, 0)]
    run("2026-05-01")
    assert documents("2026-05-01") == []
    assert BillableAgreement.objects.get().next_period_start is None  # nothing more, ever


@pytest.mark.parametrize("paid", [False, True])
def test_a_price_change_delivered_after_the_run_rebills_the_period_at_the_new_price(paid):
    make()
    run("2026-04-01")
    if paid:
        pay("2026-04-01")
    deliver("agreement.price_changed", 2, amount_minor=1500, currency="EUR", effective_from="2026-04-01")
    if paid:  # paid 1000: a second invoice for the 500 still owed
        assert documents("2026-04-01") == [("paid", 1000, 0), ("open", 500, 1)]
    else:  # open 1000: void it, issue 1500
        assert documents("2026-04-01") == [("void", 1000, 0), ("open", 1500, 1)]
    assert net_billed("2026-04-01") == 1500 and net_billed("2026-03-01") == 1000
    # a price decrease on a paid period is a credit note for the difference
    pay("2026-04-01")
    deliver("agreement.price_changed", 3, amount_minor=700, currency="EUR", effective_from="2026-04-01")
    assert net_billed("2026-04-01") == 700
    # 800 back: the latest paid invoice first (all of a 500 one, then 300 of the 1000 one)
    expected = [300, 500] if paid else [800]
    assert sorted(CreditNote.objects.values_list("total_minor", flat=True)) == expected


def test_a_period_an_operator_voided_is_waived_and_never_rebilled_by_a_correction():
    make()
    run("2026-04-01")
    april = Invoice.objects.get(period_start=date(2026, 4, 1))
    invoice_void(invoice_id=str(april.id), reason="goodwill")
    # a late price change for April on: April stays waived, nothing else to correct before it
    deliver("agreement.price_changed", 2, amount_minor=1500, currency="EUR", effective_from="2026-04-01")
    assert documents("2026-04-01") == [("void", 1000, 0)]
    run("2026-05-01")
    assert documents("2026-05-01") == [("open", 1500, 0)]


def test_the_same_late_event_twice_corrects_once():
    make()
    run("2026-04-01")
    deliver("agreement.price_changed", 2, amount_minor=1500, currency="EUR", effective_from="2026-04-01")
    deliver("agreement.price_changed", 2, amount_minor=1500, currency="EUR", effective_from="2026-04-01")
    assert documents("2026-04-01") == [("void", 1000, 0), ("open", 1500, 1)]
    run("2026-04-01")  # and a later run issues nothing more for the period
    assert len(documents("2026-04-01")) == 2


def test_a_correction_older_than_the_limit_is_flagged_and_applied_when_approved(settings):
    settings.INVOICING_MAX_CORRECTION_DAYS = 60  # "today" is 2026-06-01: before April 2 is old
    make()
    run("2026-05-01")
    deliver("agreement.paused", 2, paused_from="2026-03-01")
    # recent periods (May) are corrected at once; March and April wait for an operator
    assert documents("2026-05-01") == [("void", 1000, 0)]
    assert documents("2026-03-01") == [("open", 1000, 0)] and documents("2026-04-01") == [("open", 1000, 0)]
    row = BillableAgreement.objects.get()
    assert "2 period(s) from 2026-03-01" in row.correction_flag and "approve" in row.correction_flag
    correction_approve(agreement_id="A")
    assert documents("2026-03-01") == [("void", 1000, 0)] and documents("2026-04-01") == [("void", 1000, 0)]
    assert BillableAgreement.objects.get().correction_flag == ""


# -- the property: whatever the delays and the order, the bill is what the history says ---------
START = date(2026, 1, 1)
DAYS = 70
OPS = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=DAYS - 1),  # the day it happens upstream
        st.sampled_from(["price", "pause", "resume", "cancel_now", "cancel_end"]),
        st.integers(min_value=1, max_value=3000),  # a new price
        st.integers(min_value=0, max_value=12),  # days its event is late
    ),
    max_size=6,
)


@pytest.mark.django_db(transaction=True)
@override_settings(INVOICING_MAX_CORRECTION_DAYS=100_000)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    interval=st.sampled_from([("day", 3), ("week", 1), ("month", 1)]),
    ops=OPS,
    seed=st.integers(min_value=0, max_value=2**32),
    pay_ratio=st.floats(min_value=0, max_value=1),
)
def test_net_billed_per_period_equals_the_full_history_whatever_the_delivery(interval, ops, seed, pay_ratio):
    from agreements.models import Agreement
    from agreements.services import (
        AgreementInput,
        agreement_cancel,
        agreement_change_price,
        agreement_create,
        agreement_pause,
        agreement_resume,
    )
    from scripts.scenario import Plan, expected_periods

    rng = random.Random(seed)
    for model in (CreditNote, Invoice, BillableAgreement, OutboxEvent, Agreement):
        model.objects.all().delete()
    # the upstream history, as it happened (the agreements service records each event)
    a = agreement_create(
        data=AgreementInput(
            external_ref="H-1",
            customer_name="Ada",
            customer_email="ada@example.com",
            amount_minor=1000,
            currency="EUR",
            interval=interval[0],
            interval_count=interval[1],
            start_date=START,
        )
    )
    plan = Plan(START, interval[0], interval[1], None, prices=[(START, 1000)])
    recorded_on = {1: START}
    delay = {1: 0}
    from core.calendar import next_period_start

    for day_no, op, amount, late in sorted(ops, key=lambda o: o[0]):
        day = START + timedelta(days=day_no)
        a.refresh_from_db()
        try:
            if op == "price" and a.status in ("active", "paused"):
                a = agreement_change_price(agreement_id=a.id, amount_minor=amount, today=day)
                plan.prices.append((next_period_start(START, interval[0], interval[1], day), amount))
            elif op == "pause" and a.status == "active":
                a = agreement_pause(agreement_id=a.id, from_date=day + timedelta(days=1))
                plan.pauses.append([day + timedelta(days=1), None])
            elif op == "resume" and a.status == "paused" and day + timedelta(days=1) >= a.paused_from:
                a = agreement_resume(agreement_id=a.id, from_date=day + timedelta(days=1))
                plan.pauses[-1][1] = day + timedelta(days=1)
            elif op in ("cancel_now", "cancel_end") and a.status in ("active", "paused"):
                a = agreement_cancel(agreement_id=a.id, at_period_end=op == "cancel_end", today=day)
                plan.cancel = a.cancel_effective_date
            else:
                continue
        except Exception:  # noqa: BLE001 - an operation the service refuses is simply not part of history
            continue
        recorded_on[a.aggregate_version] = day
        delay[a.aggregate_version] = late
    events = list(OutboxEvent.objects.filter(aggregate_id=str(a.id)).order_by("aggregate_version"))
    arrivals: dict[date, list[OutboxEvent]] = defaultdict(list)
    for e in events:
        arrivals[recorded_on[e.aggregate_version] + timedelta(days=delay[e.aggregate_version])].append(e)
    # delivery: each day, that day's (late) events in any order, before or after the day's run
    last = START + timedelta(days=DAYS + 12)
    day = START
    while day <= last:
        todays = arrivals.get(day, [])
        rng.shuffle(todays)
        split = rng.randint(0, len(todays))
        for e in todays[:split]:
            projection_apply(event=event_from_row(e))
        invoices_run_inline(run_date=day)
        for e in todays[split:]:
            projection_apply(event=event_from_row(e))
        for inv in Invoice.objects.filter(status="open"):
            if rng.random() < pay_ratio:
                invoice_mark_paid(invoice_id=str(inv.id), payment_id="p")
        day += timedelta(days=1)
    # then, for every period, the invoices net of credit notes are what the whole history owes
    expected = dict(expected_periods(plan, last))
    billed: dict[date, int] = defaultdict(int)
    for inv in Invoice.objects.exclude(status="void"):
        billed[inv.period_start] += inv.total_minor
    for note in CreditNote.objects.all():
        billed[note.period_start] -= note.total_minor
    assert {k: v for k, v in billed.items() if v} == expected
