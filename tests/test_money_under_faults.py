"""The money stays right when an operator voids mid-collection, events arrive late, text is hostile
or the database drops a connection mid-run. Real PostgreSQL, the SNS/SQS endpoint, a real Celery
worker, the push consumers of invoicing and payments, and the sandbox gateway over HTTP; each test
asserts what exists (invoices, credit notes, their amounts and states) and what the gateway itself
counted (charges and refunds per invoice).
"""

from __future__ import annotations

import json
import urllib.request
from datetime import date, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from agreements.services import AgreementInput, agreement_change_price, agreement_create, agreement_pause
from events.consuming.config import consumer_configs
from events.consuming.push import PushConsumer
from events.models import OutboxEvent, ProcessedEvent
from invoicing.models import BillableAgreement, CreditNote, DailyRun, Invoice
from invoicing.services import billing_today, invoice_void
from invoicing.tasks import issue_due_invoices
from payments.models import Payment
from payments.services import payment_charge, payments_retry_due
from tests.factories import gateway_stats
from tests.helpers import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def stack(settings, celery_worker, sandbox):
    """The pipeline as `make run` wires it: commits kick the relay, consumers push."""
    settings.OUTBOX_KICK_RELAY = True
    consumers = [PushConsumer(consumer_configs()[name]) for name in ("invoicing", "payments")]
    for c in consumers:
        c.start()
    yield sandbox
    for c in consumers:
        c.stop()


def _configure(sandbox: Any, **config: Any) -> None:
    request = urllib.request.Request(
        f"{sandbox.url}/v1/_config", data=json.dumps(config).encode(), method="POST"
    )
    urllib.request.urlopen(request).close()


def _agreement(ref: str, *, customer: str, start: date, interval: str = "day", amount: int = 1000):
    return agreement_create(
        data=AgreementInput(
            external_ref=ref,
            customer_ref=customer,
            customer_name="Ada",
            customer_email="ada@example.com",
            amount_minor=amount,
            currency="EUR",
            interval=interval,
            start_date=start,
        )
    )


def _billed_and_settled(agreement_id: str, invoices: int) -> list[Invoice]:
    """Project, run today's invoices through the broker, and wait for every payment to settle."""
    wait_until(lambda: BillableAgreement.objects.filter(agreement_id=agreement_id, created_seen=True), 60)
    issue_due_invoices.apply_async(kwargs={"run_date": billing_today().isoformat()})
    wait_until(lambda: Invoice.objects.filter(agreement_id=agreement_id).count() == invoices, 90)
    return list(Invoice.objects.filter(agreement_id=agreement_id).order_by("period_start"))


def _charges_and_refunds(sandbox: Any, invoice: Invoice) -> tuple[int, int]:
    """The gateway's own count: successful charges for the invoice's payment, and money refunded."""
    payment = Payment.objects.get(invoice_id=str(invoice.id))
    stats = gateway_stats(sandbox)
    mine = [d for d in stats["charges_detail"].values() if d["key"].startswith(f"pay-{payment.id}#")]
    return len(mine), sum(d["refunded"] for d in mine)


def test_a_voided_invoice_in_dunning_is_never_charged_again(stack, client):
    # given an invoice whose customer soft-declines: its payment waits for a dunning retry
    today = billing_today()
    a = _agreement("VOID-DUN", customer="soft-void", start=today)
    [invoice] = _billed_and_settled(str(a.id), 1)
    payment = wait_until(
        lambda: Payment.objects.filter(invoice_id=str(invoice.id), status="retry_scheduled").first(), 90
    )

    # when an operator voids the invoice
    invoice_void(invoice_id=str(invoice.id), reason="customer disputes it")

    # then payments hears invoice.voided and cancels the collection
    wait_until(lambda: Payment.objects.filter(pk=payment.pk, status="cancelled").exists(), 60)
    # the dunning retry coming due does nothing, nor does a charge message arriving late
    Payment.objects.filter(pk=payment.pk).update(next_attempt_at=timezone.now() - timedelta(days=1))
    assert payments_retry_due() == 0
    assert payment_charge(payment_id=str(payment.pk)) == "skipped"
    # and "Retry now" refuses it with a reason an operator can read
    client.force_login(User.objects.create_superuser("op", password="pw"))
    resp = client.post(
        "/admin/payments/payment/",
        {"action": "retry_now", "_selected_action": [str(payment.pk)]},
        follow=True,
    )
    assert "the invoice is closed" in resp.content.decode() and "nothing to collect" in resp.content.decode()
    invoice.refresh_from_db()
    assert invoice.status == "void" and Payment.objects.get(pk=payment.pk).status == "cancelled"
    assert _charges_and_refunds(stack, invoice) == (0, 0)  # one decline, never a charge
    assert OutboxEvent.objects.filter(type="payment.cancelled", aggregate_id=str(payment.pk)).count() == 1


def test_a_charge_in_flight_when_the_invoice_is_voided_is_refunded_with_an_alert(stack):
    # given a slow gateway: the charge is in flight for seconds
    _configure(stack, latency_ms=4000)
    a = _agreement("VOID-FLIGHT", customer="cus-flight", start=billing_today())
    [invoice] = _billed_and_settled(str(a.id), 1)
    payment = wait_until(
        lambda: Payment.objects.filter(invoice_id=str(invoice.id), status="processing").first(), 90
    )

    # when the invoice is voided while the charge is at the gateway
    invoice_void(invoice_id=str(invoice.id), reason="issued in error")

    # then the charge succeeds anyway, is refunded in full, and the operators are told
    wait_until(lambda: Payment.objects.filter(pk=payment.pk, status="refunded").exists(), 90)
    assert _charges_and_refunds(stack, invoice) == (1, 1000)
    assert OutboxEvent.objects.filter(type="alert.charge_on_closed_invoice").count() == 1
    assert OutboxEvent.objects.filter(type="payment.refunded", aggregate_id=str(payment.pk)).count() == 1
    # and the invoice stays void when payment.succeeded reaches invoicing
    wait_until(lambda: not OutboxEvent.objects.filter(published_at__isnull=True).exists(), 60)
    wait_until(
        lambda: ProcessedEvent.objects.filter(consumer="invoicing", event_type="payment.succeeded").exists(),
        60,
    )
    invoice.refresh_from_db()
    assert invoice.status == "void" and invoice.paid_at is None


def test_a_late_pause_on_paid_periods_credits_them_and_the_money_goes_back(stack):
    # given three daily periods, billed and paid
    today = billing_today()
    a = _agreement("LATE-PAUSE", customer="cus-late", start=today - timedelta(days=2))
    invoices = _billed_and_settled(str(a.id), 3)
    wait_until(lambda: Invoice.objects.filter(agreement_id=str(a.id), status="paid").count() == 3, 120)

    # when a pause from yesterday is recorded now (as if recorded yesterday and delivered late)
    agreement_pause(agreement_id=a.id, from_date=today - timedelta(days=1))

    # then yesterday's and today's periods are credited and refunded; the first stays billed
    wait_until(lambda: CreditNote.objects.filter(agreement_id=str(a.id)).count() == 2, 60)
    for invoice in invoices[1:]:
        wait_until(lambda invoice=invoice: _charges_and_refunds(stack, invoice) == (1, 1000), 90)
    assert _charges_and_refunds(stack, invoices[0]) == (1, 0)
    assert [i.status for i in Invoice.objects.filter(agreement_id=str(a.id)).order_by("period_start")] == [
        "paid"
    ] * 3
    net = _net_billed(str(a.id))
    assert net == {today - timedelta(days=2): 1000}


def test_a_late_price_cut_on_a_paid_period_refunds_the_difference(stack):
    today = billing_today()
    a = _agreement("LATE-PRICE", customer="cus-price", start=today)
    [invoice] = _billed_and_settled(str(a.id), 1)
    wait_until(lambda: Invoice.objects.filter(pk=invoice.pk, status="paid").exists(), 120)
    # the price change is effective from today's period: recorded "yesterday", delivered after the run
    agreement_change_price(agreement_id=a.id, amount_minor=600, today=today - timedelta(days=1))
    wait_until(lambda: _charges_and_refunds(stack, invoice) == (1, 400), 90)
    [note] = CreditNote.objects.filter(invoice=invoice)
    assert note.total_minor == 400
    assert _net_billed(str(a.id)) == {today: 600}


def _net_billed(agreement_id: str) -> dict[date, int]:
    net: dict[date, int] = {}
    for inv in Invoice.objects.filter(agreement_id=agreement_id).exclude(status="void"):
        net[inv.period_start] = net.get(inv.period_start, 0) + inv.total_minor
    credited = (
        CreditNote.objects.filter(agreement_id=agreement_id)
        .values("period_start")
        .annotate(s=Sum("total_minor"))
    )
    for row in credited:
        net[row["period_start"]] -= row["s"]
    return {k: v for k, v in net.items() if v}


# -- the daily run under hostile data and a database that drops connections -------------------
def test_hostile_text_never_stops_a_chunk_and_a_row_that_cannot_be_written_is_isolated(
    settings, celery_worker
):
    settings.INVOICING_CHUNK_SIZE = 100
    today = billing_today()
    names = ["\\N", "tab\there", "back\\slash", 'quote"s', "new\nline", "emoji 🧾", "x" * 200]
    from invoicing.services import projection_apply
    from invoicing.tests.factories import agreement_event

    for i, name in enumerate(names):
        projection_apply(
            event=agreement_event(
                "agreement.created",
                f"H-{i}",
                1,
                start_date=today.isoformat(),
                interval="day",
                description="d\\N\t" + "z" * 480,
                customer={"external_ref": f"ref-{i}", "name": name, "email": "a@example.com"},
            )
        )
    # a projection row that cannot become an invoice (a name longer than the invoice's column)
    projection_apply(event=agreement_event("agreement.created", "H-bad", 1, start_date=today.isoformat()))
    BillableAgreement.objects.filter(agreement_id="H-bad").update(
        customer={"external_ref": "ref-bad", "name": "y" * 300, "email": "a@example.com"}
    )

    issue_due_invoices.apply_async(kwargs={"run_date": today.isoformat()})

    run = wait_until(lambda: DailyRun.objects.filter(run_date=today).exclude(status="running").first(), 90)
    assert run.status == "finished" and run.invoices_issued == len(names) and run.agreements_flagged == 1
    assert sorted(Invoice.objects.values_list("customer_name", flat=True)) == sorted(names)
    bad = BillableAgreement.objects.get(agreement_id="H-bad")
    assert "could not be invoiced" in bad.flagged_reason and "too long" in bad.flagged_reason
    assert bad.next_period_start == today  # not billed, still due: fixed data bills it next run


def _trigger(sql_body: str) -> None:
    with connection.cursor() as cur:
        cur.execute(
            f"""
            CREATE OR REPLACE FUNCTION test_fault() RETURNS trigger AS $$
            BEGIN {sql_body} RETURN NEW; END $$ LANGUAGE plpgsql;
            DROP TRIGGER IF EXISTS test_fault ON invoicing_invoice;
            CREATE TRIGGER test_fault BEFORE INSERT ON invoicing_invoice
              FOR EACH ROW EXECUTE FUNCTION test_fault();
            """
        )


@pytest.fixture
def fault_trigger():
    yield _trigger
    with connection.cursor() as cur:
        cur.execute(
            "DROP TRIGGER IF EXISTS test_fault ON invoicing_invoice; DROP SEQUENCE IF EXISTS test_fault_seq"
        )


def _agreements(n: int, today: date) -> None:
    from invoicing.services import projection_apply
    from invoicing.tests.factories import agreement_event

    for i in range(n):
        projection_apply(
            event=agreement_event(
                "agreement.created", f"F-{i}", 1, start_date=today.isoformat(), interval="day"
            )
        )


def test_a_connection_dropped_mid_copy_is_retried_and_the_run_finishes(
    settings, celery_worker, fault_trigger
):
    # given 6 agreements in 3 chunks, and a database that kills the first COPY's connection
    settings.INVOICING_CHUNK_SIZE = 2
    today = billing_today()
    _agreements(6, today)
    with connection.cursor() as cur:
        cur.execute("CREATE SEQUENCE test_fault_seq")
    fault_trigger(
        "IF nextval('test_fault_seq') = 1 THEN PERFORM pg_terminate_backend(pg_backend_pid()); END IF;"
    )

    # when the run goes through the broker
    issue_due_invoices.apply_async(kwargs={"run_date": today.isoformat()})

    # then the killed chunk was retried, every agreement billed once, and the run finished
    run = wait_until(lambda: DailyRun.objects.filter(run_date=today).exclude(status="running").first(), 90)
    assert (run.status, run.chunks_done, run.chunks_failed, run.invoices_issued) == ("finished", 3, 0, 6)
    assert Invoice.objects.count() == 6
    assert max(run.chunks.values_list("attempts", flat=True)) == 2


def test_a_chunk_that_keeps_failing_fails_the_run_with_an_alert(settings, celery_worker, fault_trigger):
    settings.INVOICING_CHUNK_SIZE = 2
    settings.INVOICING_CHUNK_MAX_RETRIES = 1
    today = billing_today()
    _agreements(4, today)
    fault_trigger(
        "IF NEW.agreement_id = 'F-3' THEN RAISE EXCEPTION 'disk on fire' USING ERRCODE = '40001'; END IF;"
    )

    issue_due_invoices.apply_async(kwargs={"run_date": today.isoformat()})

    run = wait_until(lambda: DailyRun.objects.filter(run_date=today).exclude(status="running").first(), 90)
    assert (run.status, run.chunks_done, run.chunks_failed) == ("failed", 1, 1)
    assert "disk on fire" in run.last_error
    assert sorted(Invoice.objects.values_list("agreement_id", flat=True)) == ["F-0", "F-1"]
    [alert] = OutboxEvent.objects.filter(type="alert.daily_run_failed")
    assert f"invoices_issue --date {today}" in alert.data["summary"]


def test_a_chunk_whose_worker_died_is_resent_by_the_watchdog_without_waiting_for_sqs(settings, celery_worker):
    from invoicing.services import daily_run_start
    from invoicing.services.daily_run import chunk_claim
    from invoicing.tasks import daily_run_watchdog_task

    settings.INVOICING_CHUNK_STALE_SECONDS = 0
    today = billing_today()
    _agreements(2, today)
    # given a run whose only chunk was taken by a worker that was then SIGKILLed: "running",
    # its message invisible in SQS for the whole visibility timeout, its transaction gone
    run, [chunk] = daily_run_start(run_date=today)
    assert chunk_claim(chunk.pk)

    # when the watchdog (beat, every INVOICING_WATCHDOG_SECONDS) looks
    assert daily_run_watchdog_task() == {"resent": 1, "failed": 0, "finished": 0}

    # then the chunk runs again at once and the run finishes
    run = wait_until(lambda: DailyRun.objects.filter(pk=run.pk).exclude(status="running").first(), 60)
    assert run.status == "finished" and Invoice.objects.count() == 2
