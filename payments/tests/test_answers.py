"""A list's answers recorded together (services/answers.py ``charged_record``; the sandbox gateway
over HTTP): each payment ends as one recorded alone would, whatever happened to it while its charge
was at the gateway, and a list whose answers differ records each kind its own way."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone
from prometheus_client import REGISTRY

from events.models import OutboxEvent
from payments.gateway import ChargeResult, HttpGateway
from payments.models import Payment, PaymentAttempt, Refund
from payments.services import (
    answers,
    charge_lists,
    charging,
    gateway_threads,
    payment_charge,
    payment_close_for_invoice,
    payment_create_for_invoice,
    payment_retry_now,
    payments_create_for_invoices,
    payments_retry_due,
    refund_for_credit_note,
)
from payments.services.charging import _claim_all
from tests.factories import gateway_stats, invoice_data

pytestmark = pytest.mark.django_db(transaction=True)


def _sent(n: int, prefix: str) -> list[tuple[charging.Started, ChargeResult]]:
    """n payments claimed and charged at the gateway, answers not yet recorded."""
    made = payments_create_for_invoices(invoices=[invoice_data(f"cus-{prefix}-{i}") for i in range(n)])
    started = [charging.charge_start(payment_id=str(p.pk)) for p, _created in made]
    return [(s, charging.charge_send(s)) for s in started if s is not None]


def test_answers_recorded_together_end_each_payment_as_one_recorded_alone_would(sandbox, empty_queues):
    # given four charges the gateway took, answers not yet recorded, and meanwhile: the second's
    # invoice voided, a credit note on the third's, the fourth's answer recorded by a copy of its
    # message (SQS delivers at least once)
    sent = _sent(4, "together")
    ids = [s.payment_id for s, _r in sent]
    versions = {p.pk: p.aggregate_version for p in Payment.objects.filter(pk__in=ids)}
    second = Payment.objects.get(pk=ids[1])
    payment_close_for_invoice(invoice_id=second.invoice_id, reason="issued in error")
    third = Payment.objects.get(pk=ids[2])
    refund_for_credit_note(
        data={
            "credit_note_id": str(uuid.uuid4()),
            "invoice_id": third.invoice_id,
            "number": "CN-1",
            "reason": "goodwill",
            "total_minor": 500,
            "currency": "EUR",
        }
    )
    assert answers.charge_finish(*sent[3]) == "succeeded"

    # when the four answers are recorded together
    before = timezone.now()
    outcomes = answers.charged_record(sent)

    # then each payment succeeded once, with its reference, one finished attempt and one
    # payment.succeeded at its new version, as charged (the copy's record is not made twice)
    assert outcomes == ["succeeded"] * 4
    for (_started, result), pid in zip(sent, ids, strict=True):
        p = Payment.objects.get(pk=pid)
        attempt = p.attempts.get()
        assert (p.status, p.gateway_reference, p.next_attempt_at) == ("succeeded", result.reference, None)
        assert (attempt.outcome, attempt.gateway_reference) == ("succeeded", result.reference)
        assert attempt.finished_at is not None
        assert (p.updated_at >= before) is (pid != ids[3])
        [event] = OutboxEvent.objects.filter(type="payment.succeeded", aggregate_id=pid)
        assert event.aggregate_version == p.aggregate_version == versions[p.pk] + 1
        assert event.data == {
            "payment_id": pid,
            "invoice_id": p.invoice_id,
            "amount_minor": p.amount_minor,
            "currency": p.currency,
            "gateway_reference": result.reference,
        }
    # the voided invoice's money is given back in full; the credit note's refund, which waited for
    # the charge, goes now; the others are not refunded
    refunds = {r.invoice_id: r for r in Refund.objects.all()}
    assert set(refunds) == {second.invoice_id, third.invoice_id}
    void_refund = refunds[second.invoice_id]
    assert (void_refund.amount_minor, str(void_refund.payment_id)) == (second.amount_minor, ids[1])
    credit_refund = refunds[third.invoice_id]
    assert str(credit_refund.payment_id) == ids[2] and credit_refund.next_attempt_at is not None
    assert gateway_stats(sandbox)["charges"] == 4


def test_a_list_whose_answers_differ_records_the_charged_together_and_each_other_alone(
    sandbox, empty_queues, monkeypatch
):
    # given a list of four charges, the gateway declining the third for good
    made = payments_create_for_invoices(invoices=[invoice_data(f"cus-mixed-{i}") for i in range(4)])
    ids = [str(p.pk) for p, _created in made]
    real_send, together = gateway_threads.charge_send, []

    def declining_the_third(started: charging.Started) -> ChargeResult:
        if started.payment_id == ids[2]:
            return ChargeResult(False, error_class="hard_decline", message="card stolen", http_status=402)
        return real_send(started)

    def recorded_together(answers_: Any) -> list[str]:
        outcomes = real_record(answers_)  # committed: the lot was not recorded one at a time
        together.append(sorted(s.payment_id for s, _r in answers_))
        return outcomes

    real_record = charge_lists.charged_record
    monkeypatch.setattr(gateway_threads, "charge_send", declining_the_third)
    monkeypatch.setattr(charge_lists, "charged_record", recorded_together)

    run = charge_lists.charges_run([(p, 0) for p in ids], seconds=60)

    # then the three charged are recorded together and the decline alone, as a final failure
    assert run.outcomes == {"succeeded": 3, "failed_final": 1} and not run.crashed
    assert together == [sorted(ids[:2] + ids[3:])]
    statuses = dict(Payment.objects.filter(pk__in=ids).values_list("pk", "status"))
    assert [statuses[uuid.UUID(p)] for p in ids] == ["succeeded", "succeeded", "failed", "succeeded"]
    assert OutboxEvent.objects.filter(type="payment.failed", aggregate_id=ids[2]).count() == 1


def test_an_answer_is_recorded_before_the_list_waits_long_for_its_next_token(sandbox, settings):
    # given a list of two charges and a gateway allowing one charge every two seconds: the second
    # waits for its token about two seconds after the first is answered
    settings.PAYMENT_RATE_LIMIT_PER_SECOND = 0.5
    made = payments_create_for_invoices(invoices=[invoice_data(f"cus-wait-{i}") for i in range(2)])
    ids = [str(p.pk) for p, _created in made]

    run = charge_lists.charges_run([(p, 0) for p in ids], seconds=60)

    # then the first answer was recorded before that wait, not kept in memory until the list ends
    # (a worker dying meanwhile would leave it for the sweep)
    assert run.outcomes == {"succeeded": 2}
    first, second = (Payment.objects.get(pk=p).attempts.get() for p in ids)
    assert first.finished_at < second.started_at


def _stalled_decline_then_next_step_in_flight(prefix: str) -> tuple[Any, Any, Any, Any]:
    """A worker (A) whose try of step 0 the gateway soft-declined stalls before recording it; the
    sweep takes the payment over, its re-ask with the same key replays the decline (step 1); an
    operator's "retry now" sends step 1's try (C), which the gateway charges. Neither A's nor C's
    answer is recorded yet."""
    payment, _ = payment_create_for_invoice(data=invoice_data(f"soft1-{prefix}"))
    pid = str(payment.pk)
    a = charging.charge_start(payment_id=pid, step=0)
    a_result = charging.charge_send(a)
    assert a_result.error_class == "soft_decline"
    stale = timezone.now() - timedelta(seconds=settings.PAYMENT_PROCESSING_STALE_SECONDS + 1)
    Payment.objects.filter(pk=pid).update(updated_at=stale)
    assert payments_retry_due() == 1
    assert payment_charge(payment_id=pid, step=0) == "soft_declined"
    assert payment_retry_now(payment_id=pid)
    c = charging.charge_start(payment_id=pid, step=1)
    assert c is not None and c.idempotency_key.endswith("#2")
    c_result = charging.charge_send(c)
    assert c_result.ok
    return a, a_result, c, c_result


@pytest.mark.parametrize("together", [False, True], ids=["alone", "with-others"])
def test_a_late_answer_of_an_earlier_step_does_not_move_the_payment_and_it_is_charged_once(
    sandbox, empty_queues, together
):
    a, a_result, c, c_result = _stalled_decline_then_next_step_in_flight("late" + str(together))

    assert answers.charge_finish(a, a_result) == "processing"  # A's late decline: its attempt only
    if together:
        others = _sent(2, "late-others")
        outcomes = answers.charged_record([(c, c_result), *others])
    else:
        outcomes = [answers.charge_finish(c, c_result)]

    assert outcomes[0] == "succeeded"
    p = Payment.objects.get(pk=c.payment_id)
    assert (p.status, p.dunning_step) == ("succeeded", 1)
    charged = [
        k for k, n in gateway_stats(sandbox)["charges_by_key"].items() if k.startswith(f"pay-{p.pk}#") and n
    ]
    assert charged == [c.idempotency_key]
    assert p.attempts.get(idempotency_key=a.idempotency_key, pk=a.attempt_id).outcome == "soft_decline"
    assert payments_retry_due() == 0  # nothing left to charge again


@pytest.mark.parametrize("now", ["processing", "succeeded"])
def test_a_success_on_an_earlier_key_is_alerted_once_whatever_the_payment_became(sandbox, empty_queues, now):
    # given a payment moved on to its twelfth key (operators' retries), which is in flight or has
    # succeeded, and a late answer that its eleventh key charged: a gateway that did not replay
    payment, _ = payment_create_for_invoice(data=invoice_data(f"cus-early-{now}"))
    Payment.objects.filter(pk=payment.pk).update(status=now, dunning_step=11)
    first_key = f"pay-{payment.pk}#11"
    attempt = PaymentAttempt.objects.create(payment=payment, idempotency_key=first_key)
    taken = ChargeResult(True, reference="ch_early", http_status=200)

    # when it is recorded, twice (a reply to the first commit lost)
    for _ in range(2):
        assert answers._record(str(payment.pk), attempt.pk, taken, key=first_key) == now

    # then the payment is left as it was, the attempt says what happened, and one alert tells
    p = Payment.objects.get(pk=payment.pk)
    assert (p.status, p.dunning_step) == (now, 11)
    assert PaymentAttempt.objects.get(pk=attempt.pk).outcome == "succeeded"
    (alert,) = OutboxEvent.objects.filter(type="alert.charge_on_earlier_key")
    assert alert.data["severity"] == "critical" and f"key {first_key} charged" in alert.data["summary"]
    assert alert.data["details"]["current_key"] == f"pay-{payment.pk}#12"


def test_a_decline_whose_message_holds_a_nul_is_recorded_and_the_payment_goes_on_to_its_next_step(
    sandbox, empty_queues
):
    payment, _ = payment_create_for_invoice(data=invoice_data("cus-nul"))
    claimed = _claim_all([(str(payment.pk), None)])[str(payment.pk)]
    attempt = claimed[1]
    declined = HttpGateway._classify(402, b'{"error": {"decline": "soft", "message": "no\\u0000funds"}}', {})

    outcome = answers._record(str(payment.pk), attempt.pk, declined, key=attempt.idempotency_key)

    p = Payment.objects.get(pk=payment.pk)
    assert outcome == "soft_declined" and (p.status, p.dunning_step) == ("retry_scheduled", 1)
    assert p.last_error_message == "no\\u0000funds"
    assert PaymentAttempt.objects.get(pk=attempt.pk).error_message == "no\\u0000funds"


def test_a_charge_the_limiter_holds_back_reads_not_sent_not_a_gateway_error(
    sandbox, empty_queues, monkeypatch
):
    # given a payment whose charge the local rate limiter holds back (no token in time), twice
    def counted(outcome: str) -> float:
        return REGISTRY.get_sample_value("billing_payments_total", {"outcome": outcome}) or 0.0

    payment, _ = payment_create_for_invoice(data=invoice_data("cus-queued"))
    before = {o: counted(o) for o in ("not_sent", "transient")}
    monkeypatch.setattr(charging.ratelimit, "acquire", lambda *args, **kwargs: False)
    tried_at = timezone.now()
    outcomes = [payment_charge(payment_id=str(payment.pk)) for _ in range(2)]
    monkeypatch.undo()

    # then each try reads "not sent" to the operator and the metrics, not a transient gateway
    # error, and the payment is due again after a backoff, as after one
    p = Payment.objects.get(pk=payment.pk)
    assert outcomes == ["not_sent", "not_sent"]
    assert (p.status, p.last_error_class, p.transient_failures) == ("pending", "not_sent", 2)
    assert p.last_error_message == "local rate limit: no token in time"
    assert counted("not_sent") - before["not_sent"] == 2
    assert counted("transient") == before["transient"]
    # (due after the lease and the second backoff step: base x 2, jittered down to half of it)
    second_step = min(
        2 * settings.PAYMENT_TRANSIENT_BACKOFF_SECONDS, settings.PAYMENT_TRANSIENT_BACKOFF_MAX_SECONDS
    )
    due_after = settings.PAYMENT_CHARGE_LEASE_SECONDS + second_step / 2
    assert p.next_attempt_at >= tried_at + timedelta(seconds=due_after)
    assert gateway_stats(sandbox)["charges"] == 0
    # and once a token comes, it is charged
    assert payment_charge(payment_id=str(payment.pk)) == "succeeded"
    assert gateway_stats(sandbox)["charges"] == 1
