"""A closed invoice keeps no money: charges whose outcome was never heard are asked again and refunded."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from events.models import OutboxEvent
from payments.gateway import ChargeResult, HttpGateway, gateway
from payments.models import Payment, PaymentAttempt, Refund
from payments.services import (
    answers,
    charge_lists,
    charging,
    payment_charge,
    payment_close_for_invoice,
    payment_create_for_invoice,
    payment_refund,
    payments_retry_due,
)
from payments.services.charging import _claim_all
from tests.factories import gateway_stats, invoice_data

pytestmark = pytest.mark.django_db


def _claimed_and_charged(customer: str) -> tuple[Payment, PaymentAttempt]:
    """A payment claimed by a worker, whose charge the gateway took, with no answer recorded."""
    payment, _ = payment_create_for_invoice(data=invoice_data(customer))
    claimed = _claim_all([(str(payment.pk), None)]).get(str(payment.pk))
    assert claimed is not None
    p, attempt = claimed
    taken = gateway().charge(
        idempotency_key=p.idempotency_key, amount_minor=p.amount_minor, currency=p.currency, customer=customer
    )
    assert taken.ok
    return p, attempt


def test_a_charge_whose_worker_died_after_the_gateway_took_the_money_is_refunded_once_its_invoice_is_void(
    sandbox, empty_queues
):
    # given a charge in flight: the worker claimed the payment and the gateway took the money,
    # then the worker died before recording the answer (the attempt has no outcome)
    p, _attempt = _claimed_and_charged("cus-died")
    # and the invoice is voided while the payment is still "processing"
    payment_close_for_invoice(invoice_id=p.invoice_id, reason="issued in error")

    # when the retry sweep rescues the stale "processing" payment and its charge task runs
    stale = timezone.now() - timedelta(seconds=settings.PAYMENT_PROCESSING_STALE_SECONDS + 1)
    Payment.objects.filter(pk=p.pk).update(updated_at=stale)
    assert payments_retry_due() == 1
    payment_charge(payment_id=str(p.pk))
    for refund in Refund.objects.filter(payment_id=p.pk):
        payment_refund(refund_id=str(refund.pk))

    # then the money taken for the void invoice is given back (the gateway is asked again with
    # the same key: its answer is the original charge), not kept behind a "cancelled" payment
    stats = gateway_stats(sandbox)
    [charge] = [c for c in stats["charges_detail"].values() if c["key"].startswith(f"pay-{p.pk}#")]
    assert charge["refunded"] == charge["amount"] == p.amount_minor, (
        f"payment is {Payment.objects.get(pk=p.pk).status}; "
        f"the gateway kept {charge['amount'] - charge['refunded']}"
    )
    assert Payment.objects.get(pk=p.pk).status == Payment.Status.REFUNDED


def test_a_success_recorded_after_the_sweep_took_its_payment_over_is_refunded_once_its_invoice_is_void(
    sandbox, empty_queues
):
    # given a charge the gateway took whose worker stalled past the stale threshold: the sweep
    # took the payment over ("pending" again, a new charge queued) before the answer was recorded,
    # so the late record finds the payment not "processing" and only its attempt says "succeeded"
    p, attempt = _claimed_and_charged("cus-late")
    stale = timezone.now() - timedelta(seconds=settings.PAYMENT_PROCESSING_STALE_SECONDS + 1)
    Payment.objects.filter(pk=p.pk).update(updated_at=stale)
    assert payments_retry_due() == 1
    started = charging._started(p, attempt, sent=True)  # as the worker held it
    assert answers.charge_finish(started, charging.charge_send(started)) == "pending"

    # when the invoice is voided before the queued charge runs, then that charge runs
    payment_close_for_invoice(invoice_id=p.invoice_id, reason="issued in error")
    assert Payment.objects.get(pk=p.pk).status == Payment.Status.PENDING  # not cancelled: money taken
    payment_charge(payment_id=str(p.pk))
    for refund in Refund.objects.filter(payment_id=p.pk):
        payment_refund(refund_id=str(refund.pk))

    # then the money is given back, not kept behind a "cancelled" payment
    stats = gateway_stats(sandbox)
    [charge] = [c for c in stats["charges_detail"].values() if c["key"].startswith(f"pay-{p.pk}#")]
    assert charge["refunded"] == charge["amount"] == p.amount_minor
    assert Payment.objects.get(pk=p.pk).status == Payment.Status.REFUNDED


@pytest.mark.django_db
def test_an_operator_retry_of_a_refused_refund_gets_a_key_of_its_own(django_capture_on_commit_callbacks):
    # a gateway replays a refused result for a key it has seen: retrying with it could never succeed
    from payments.services import refund_retry_now

    payment, _ = payment_create_for_invoice(data=invoice_data("cus-rk"))
    Payment.objects.filter(pk=payment.pk).update(status="succeeded", gateway_reference="ch_x")
    refund = Refund.objects.create(
        id=uuid.uuid4(), key="credit_note:x", invoice_id=payment.invoice_id, payment=payment,
        amount_minor=100, currency="EUR", reason="r", status="failed",
    )  # fmt: skip
    first_key = refund.idempotency_key
    with django_capture_on_commit_callbacks(execute=False) as sent:
        assert refund_retry_now(refund_id=str(refund.pk))
    refund.refresh_from_db()
    assert refund.status == "pending" and refund.idempotency_key != first_key and len(sent) == 1
    # automatic tries of the same attempt keep their key (a lost answer is replayed)
    assert refund.idempotency_key == Refund.objects.get(pk=refund.pk).idempotency_key


def test_a_late_refusal_of_a_refunds_earlier_key_leaves_the_operators_retry_to_decide():
    # a worker stalled with the refund's first try (key refund-<id>); meanwhile that key was
    # refused, the operator retried (key #1) and the retry's try is in flight
    from payments.services.refunds import _record

    payment, _ = payment_create_for_invoice(data=invoice_data("cus-rl"))
    Payment.objects.filter(pk=payment.pk).update(status="succeeded", gateway_reference="ch_x")
    refund = Refund.objects.create(
        id=uuid.uuid4(), key="credit_note:y", invoice_id=payment.invoice_id, payment=payment,
        amount_minor=100, currency="EUR", reason="r", status="processing", operator_retries=1,
    )  # fmt: skip
    first_key, retry_key = f"refund-{refund.pk}", refund.idempotency_key
    assert retry_key == first_key + "#1"

    refused = ChargeResult(False, error_class="hard_decline", http_status=402, message="refused")
    assert _record(str(refund.pk), refused, key=first_key) == "processing"  # the late answer
    assert _record(str(refund.pk), ChargeResult(True, reference="re_1"), key=retry_key) == "succeeded"

    refund.refresh_from_db()
    assert (refund.status, refund.gateway_reference) == ("succeeded", "re_1")
    assert not OutboxEvent.objects.filter(type="alert.refund_failed").exists()


@pytest.mark.django_db(transaction=True)
def test_invoice_issued_and_voided_handled_at_the_same_moment_never_leave_a_live_payment(monkeypatch):
    """Found by the soak: two consumer threads, one creating the payment, one recording the void;
    each missed the other's uncommitted row and the voided invoice went into dunning."""
    import threading

    from django.db import connection

    from payments.services import charging

    data = invoice_data("cus-race")
    checked = threading.Event()

    def on_commit_slowly(fn, robust=False):  # the create has looked for a void; not yet committed
        checked.set()
        time.sleep(0.5)

    monkeypatch.setattr(charging.transaction, "on_commit", on_commit_slowly)

    def issue() -> None:
        try:
            payment_create_for_invoice(data=data)
        finally:
            connection.close()

    t = threading.Thread(target=issue)
    t.start()
    checked.wait(5)
    payment_close_for_invoice(invoice_id=data["invoice_id"], reason="voided by a correction")
    t.join()
    assert Payment.objects.get(invoice_id=data["invoice_id"]).status == "cancelled"


def test_a_charge_the_rate_limiter_held_back_is_not_sent_once_its_invoice_is_void(
    sandbox, empty_queues, monkeypatch
):
    # given a charge the local rate limiter held back (no token in time): it never reached the gateway
    payment, _ = payment_create_for_invoice(data=invoice_data("cus-held"))
    monkeypatch.setattr(charging.ratelimit, "acquire", lambda *args, **kwargs: False)
    assert payment_charge(payment_id=str(payment.pk)) == "not_sent"
    monkeypatch.undo()
    # when its invoice is voided before the retry
    payment_close_for_invoice(invoice_id=payment.invoice_id, reason="issued in error")
    # then it is cancelled, not "asked again" (a first charge, then a refund, on a void invoice)
    p = Payment.objects.get(pk=payment.pk)
    assert p.status == "cancelled"
    assert list(p.attempts.values_list("outcome", flat=True)) == ["not_sent"]
    assert gateway_stats(sandbox)["charges"] == 0


def test_a_409_on_a_voided_invoice_is_asked_again_and_refunded_not_cancelled(sandbox, empty_queues):
    # given a charge whose first request hangs at the gateway (which takes the money), and the
    # invoice voided meanwhile
    p, attempt = _claimed_and_charged("cus-busy")
    payment_close_for_invoice(invoice_id=p.invoice_id, reason="issued in error")
    # when a second request with the key meets the first still in progress: 409
    busy = HttpGateway._classify(409, b'{"error": {"type": "idempotency_error"}}', {})
    assert answers._record(str(p.pk), attempt.pk, busy, key=attempt.idempotency_key) == "transient"

    # then the payment is not cancelled as if nothing were taken: it is asked again with the same
    # key, which answers the original charge, and the money is refunded
    _asked_again_and_refunded(sandbox, p)


def test_a_refused_request_after_a_lost_answer_does_not_fail_the_payment_and_it_is_charged_once(
    sandbox, empty_queues, monkeypatch
):
    # given a first try the gateway charged but whose answer was lost (the connection dropped)
    payment, _ = payment_create_for_invoice(data=invoice_data("lost-r"))
    pid = str(payment.pk)
    assert payment_charge(payment_id=pid) == "transient"
    # when the next try with the key is refused as a request (an API key rotated meanwhile)
    refused = ChargeResult(False, error_class="hard_decline", http_status=401, message="HTTP 401: bad key")
    monkeypatch.setattr(charge_lists, "charge_send", lambda started: refused)
    Payment.objects.filter(pk=pid).update(next_attempt_at=timezone.now())
    outcome = payment_charge(payment_id=pid)
    monkeypatch.undo()

    # then the payment is not failed for good (an operator's retry would charge with a new key):
    # it is asked again with the same key, which answers the first charge
    assert outcome == "transient"
    p = Payment.objects.get(pk=pid)
    assert (p.status, p.dunning_step, p.last_error_class) == ("pending", 0, "transient")
    assert p.last_error_message == "HTTP 401: bad key"
    Payment.objects.filter(pk=pid).update(next_attempt_at=timezone.now())
    assert payment_charge(payment_id=pid) == "succeeded"
    charges = gateway_stats(sandbox)["charges_by_key"]
    assert [k for k, n in charges.items() if k.startswith(f"pay-{pid}#") and n] == [p.idempotency_key]


def test_a_voided_invoice_whose_first_try_went_unanswered_keeps_no_money_after_a_later_429(
    sandbox, empty_queues
):
    # given a first try the gateway charged but whose answer was lost (the connection dropped), and a
    # second try, while the invoice was open, refused with 429 before the gateway looked at the key
    payment, _ = payment_create_for_invoice(data=invoice_data("lost-1"))
    assert payment_charge(payment_id=str(payment.pk)) == "transient"
    Payment.objects.filter(pk=payment.pk).update(next_attempt_at=timezone.now())
    claimed = _claim_all([(str(payment.pk), None)]).get(str(payment.pk))
    assert claimed is not None
    limited = HttpGateway._classify(429, b'{"error": {"type": "rate_limited"}}', {})
    attempt = claimed[1]
    assert answers._record(str(payment.pk), attempt.pk, limited, key=attempt.idempotency_key) == "transient"
    # when the invoice is voided
    payment_close_for_invoice(invoice_id=payment.invoice_id, reason="issued in error")

    # then the 429 does not count as "nothing taken": the payment is asked again with its key, finds
    # the first try's charge, and the money is refunded
    _asked_again_and_refunded(sandbox, payment)


def _asked_again_and_refunded(sandbox: Any, payment: Payment) -> None:
    """The voided invoice's payment is not cancelled: asked again with its key, it finds the charge
    taken, and the whole amount is refunded; one charge at the gateway."""
    p = Payment.objects.get(pk=payment.pk)
    assert p.status != "cancelled"
    Payment.objects.filter(pk=p.pk).update(next_attempt_at=timezone.now())
    assert payment_charge(payment_id=str(p.pk)) == "succeeded"
    for refund in Refund.objects.filter(payment_id=p.pk):
        payment_refund(refund_id=str(refund.pk))
    stats = gateway_stats(sandbox)
    [charge] = stats["charges_detail"].values()
    assert stats["charges"] == 1 and charge["refunded"] == charge["amount"] == p.amount_minor


@pytest.mark.parametrize(
    ("attempts", "earlier", "warned"),
    [
        (2, "transient: HTTP 0: connection dropped", True),  # the earlier try's answer was lost
        (2, "", True),  # its worker died before recording anything
        (1, "", False),  # no earlier try
        (2, "hard_decline: HTTP 402: refused", False),  # the refusal of the key before an operator's retry
    ],
)
def test_a_refused_refund_whose_earlier_try_settled_nothing_warns_before_a_retry_with_a_new_key(
    attempts, earlier, warned
):
    from payments.services.refunds import _record

    payment, _ = payment_create_for_invoice(data=invoice_data(f"cus-rw{attempts}{len(earlier)}"))
    Payment.objects.filter(pk=payment.pk).update(status="succeeded", gateway_reference="ch_x")
    refund = Refund.objects.create(
        id=uuid.uuid4(), key=f"credit_note:w{attempts}{len(earlier)}", invoice_id=payment.invoice_id,
        payment=payment, amount_minor=100, currency="EUR", reason="r", status="processing",
        attempts=attempts, last_error=earlier,
    )  # fmt: skip
    refused = ChargeResult(False, error_class="hard_decline", http_status=401, message="HTTP 401: bad key")

    assert _record(str(refund.pk), refused, key=refund.idempotency_key) == "failed"

    alert = OutboxEvent.objects.get(type="alert.refund_failed", aggregate_id__endswith=str(refund.pk))
    summary = alert.data["summary"]
    said = f"An earlier try with key {refund.idempotency_key} got no definite answer" in summary
    assert said == warned and ("check at the gateway first" in summary) == warned
