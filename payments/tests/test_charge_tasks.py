"""Charges several to a task message (``payments.charge_payments``): a real worker, real SQS, the
sandbox gateway over HTTP. A list has several charges at the gateway at once, within the global
rate limit; a message past its time sends the rest on; a connection the server drops retries only
the charges claimed with it; a rest that cannot be sent on is due again at once."""

from __future__ import annotations

import dataclasses
import signal
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import task_postrun
from django.conf import settings as django_settings
from django.db import OperationalError, connection, connections

from core.task_options import SOFT_LIMIT_SIGNAL
from devsupport.sandbox_gateway import SandboxConfig, start_in_thread
from events.models import OutboxEvent
from payments import tasks
from payments.dispatch import charge_kicker
from payments.gateway import reset_gateway
from payments.models import Payment, RateLimitBucket
from payments.services import (
    answers,
    charge_lists,
    charging,
    dispatching,
    gateway_threads,
    payment_close_for_invoice,
    payments_create_for_invoices,
)
from payments.services.charging import lease_end
from payments.services.dispatching import charges_due
from tests.factories import gateway_stats as stats
from tests.factories import invoice_data
from tests.helpers import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def ran(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, Any]]]:
    """What each ``charge_payments`` task the worker ran ended with: (state, return value)."""
    monkeypatch.setattr(charge_kicker, "enabled", lambda: False)  # the tests send the charges
    seen: list[tuple[str, Any]] = []

    def record(task: Any = None, state: str | None = None, retval: Any = None, **_: Any) -> None:
        if task.name == "payments.charge_payments":
            seen.append((state, retval))

    task_postrun.connect(record, weak=False)
    yield seen
    task_postrun.disconnect(record)


def opened(prefix: str, n: int) -> list[str]:
    made = payments_create_for_invoices(invoices=[invoice_data(f"cus-{prefix}-{i}") for i in range(n)])
    return [str(p.pk) for p, _created in made]


@pytest.fixture
def slow_gateway(settings: Any) -> Iterator[Any]:
    """A sandbox answering in 300 ms and refusing (429) more than 10 charges a second (burst 10)."""
    server = start_in_thread(SandboxConfig(seed=1, latency_ms=300, rate_limit=10))
    settings.PAYMENT_GATEWAY_URL = server.url
    reset_gateway()
    yield server
    server.shutdown()
    reset_gateway()


def test_a_list_of_charges_has_several_at_the_gateway_at_once_within_the_rate_limit(
    celery_worker, slow_gateway, settings, ran
):
    # given workers paced to the gateway's 10 charges a second, and twenty charges in one message
    settings.PAYMENT_RATE_LIMIT_PER_SECOND = 10
    settings.PAYMENT_CHARGES_TASK_SECONDS = 60  # a loaded machine must not send the rest on
    ids = opened("wide", 20)
    tasks.charge_payments.apply_async(kwargs={"charges": [[p, 0] for p in ids]})

    # then the one task charged all twenty, once each, with several at the gateway at the same time
    # (one at a time, the gateway would never have had two), and none refused for going faster
    # than the gateway allows (twenty sent at once, ten would have been)
    wait_until(lambda: len(ran) == 1, timeout=60)
    assert ran == [("SUCCESS", {"succeeded": 20})]
    gateway = stats(slow_gateway)
    assert gateway["charges"] == 20 and gateway["rate_limited"] == 0
    assert gateway["most_at_once"] >= 2
    assert all(Payment.objects.get(pk=p).attempts.count() == 1 for p in ids)


def test_the_same_list_delivered_twice_at_once_charges_each_payment_once(celery_worker, sandbox, ran):
    # given a list of five charges whose message SQS delivers twice (at least once), the two copies
    # run side by side by the worker's two threads
    ids = opened("twice", 5)
    for _ in range(2):
        tasks.charge_payments.apply_async(kwargs={"charges": [[p, 0] for p in ids]})

    # then each payment is charged once, with one attempt: whichever copy claims a payment second
    # finds it taken or done and skips it
    wait_until(lambda: len(ran) == 2, timeout=60)
    assert [state for state, _r in ran] == ["SUCCESS", "SUCCESS"]
    totals = Counter()
    for _state, r in ran:
        totals.update(r)
    assert totals == {"succeeded": 5, "skipped": 5}
    assert stats(sandbox)["charges"] == 5
    assert all(Payment.objects.get(pk=p).attempts.count() == 1 for p in ids)


def test_a_message_of_charges_past_its_time_sends_the_rest_on_and_each_is_charged_once(
    celery_worker, sandbox, settings, ran
):
    # given a message of four charges, no time for more than one claim per task, and a gateway
    # slow enough (2 a second) that its charges are claimed one at a time
    settings.PAYMENT_CHARGES_TASK_SECONDS = 0
    settings.PAYMENT_RATE_LIMIT_PER_SECOND = 2
    ids = opened("late", 4)
    tasks.charge_payments.apply_async(kwargs={"charges": [[p, 0] for p in ids]})

    # then each is charged once: each message charged one and sent the rest on, in one message
    wait_until(lambda: Payment.objects.filter(pk__in=ids, status="succeeded").count() == 4, timeout=60)
    wait_until(lambda: len(ran) == 4, timeout=30)
    assert stats(sandbox)["charges"] == 4
    sent_on = sorted((r.get("sent_on", 0) for _state, r in ran), reverse=True)
    assert sent_on == [3, 2, 1, 0] and all(r["succeeded"] == 1 for _state, r in ran)
    assert all(Payment.objects.get(pk=p).attempts.count() == 1 for p in ids)


def test_a_dropped_database_connection_retries_only_its_charge_and_the_others_go_on_at_once(
    celery_worker, sandbox, settings, monkeypatch, ran
):
    # given a message of three charges claimed one at a time (a gateway allowing 2 a second), and
    # the worker's database connection terminated by the server after the first (a failover, an
    # idle timeout, an operator's pg_terminate_backend)
    settings.PAYMENT_RATE_LIMIT_PER_SECOND = 2
    ids = opened("dberr", 3)
    real, dropped = charge_lists.charges_start, []

    def dropped_before_the_second(wave: list[Any], **kwargs: Any) -> Any:
        if ids[1] in [p for p, _step in wave] and not dropped:
            dropped.append(_drop_this_session())
        return real(wave, **kwargs)

    monkeypatch.setattr(charge_lists, "charges_start", dropped_before_the_second)
    tasks.charge_payments.apply_async(kwargs={"charges": [[p, 0] for p in ids]})

    # then all three are charged once: the third sent on at once, the second by its retry, alone,
    # after its backoff, on a new connection
    wait_until(lambda: Payment.objects.filter(pk__in=ids, status="succeeded").count() == 3, timeout=60)
    wait_until(lambda: len(ran) == 3, timeout=30)
    assert dropped and stats(sandbox)["charges"] == 3
    assert ran[0][0] == "RETRY"
    assert [(state, r) for state, r in ran[1:]] == [("SUCCESS", {"succeeded": 1})] * 2
    finished = {p: Payment.objects.get(pk=p).attempts.get().finished_at for p in ids}
    assert finished[ids[1]] > max(finished[ids[0]], finished[ids[2]])


def test_a_payment_whose_claim_keeps_failing_never_holds_back_the_others_claimed_with_it(
    celery_worker, sandbox, monkeypatch, ran
):
    # given a message of three charges claimed together, and the second's claim failing every time
    # (a database error that row alone hits)
    ids = opened("poison", 3)
    real, real_all, claims = charging._claimable, charging._claim_all, []

    def claims_seen(charges: Any) -> Any:
        claims.append(sorted(p for p, _step in charges))
        return real_all(charges)

    monkeypatch.setattr(charging, "_claim_all", claims_seen)

    def failing_for_the_second(payment: Payment, step: Any) -> bool:
        if str(payment.pk) == ids[1]:
            raise OperationalError("could not read block 42 of relation payments_payment")
        return real(payment, step)

    monkeypatch.setattr(charging, "_claimable", failing_for_the_second)
    tasks.charge_payments.apply_async(kwargs={"charges": [[p, 0] for p in ids]})

    # then the claim of the three is retried one at a time: the other two are charged, once each,
    # and the second waits for its own retries, never charged
    wait_until(lambda: Payment.objects.filter(pk__in=ids, status="succeeded").count() == 2, timeout=60)
    assert claims[0] == sorted(ids) and all(len(c) == 1 for c in claims[1:])  # together, then one by one
    assert [state for state, _r in ran[:2]] == ["RETRY", "RETRY"]
    assert Payment.objects.get(pk=ids[1]).status == "pending"
    assert stats(sandbox)["charges"] == 2
    assert all(Payment.objects.get(pk=p).attempts.count() == 1 for p in (ids[0], ids[2]))


def test_answers_whose_record_together_loses_the_connection_are_each_recorded_on_a_new_one(
    celery_worker, sandbox, monkeypatch, ran
):
    # given a message of three charges whose answers come back together, and the worker's database
    # session terminated by the server as they are recorded together
    ids = opened("recerr", 3)
    real, dropped = charge_lists.charged_record, []

    def dropped_while_recording(answers_: Any) -> list[str]:
        if not dropped:
            dropped.append(_drop_this_session())
        return real(answers_)

    monkeypatch.setattr(charge_lists, "charged_record", dropped_while_recording)
    tasks.charge_payments.apply_async(kwargs={"charges": [[p, 0] for p in ids]})

    # then each answer is recorded at once, alone, on a new connection: all three succeeded in the
    # one task, none left "processing" for the sweep, one charge, one attempt and one event each
    wait_until(lambda: len(ran) == 1, timeout=60)
    assert dropped and ran == [("SUCCESS", {"succeeded": 3})]
    assert set(Payment.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"succeeded"}
    assert stats(sandbox)["charges"] == 3
    assert all(Payment.objects.get(pk=p).attempts.count() == 1 for p in ids)
    succeeded = OutboxEvent.objects.filter(type="payment.succeeded", aggregate_id__in=ids)
    assert sorted(succeeded.values_list("aggregate_id", flat=True)) == sorted(ids)


def test_an_answer_whose_record_loses_the_connection_is_recorded_on_a_new_one(
    celery_worker, sandbox, monkeypatch
):
    # given one charge (a backoff, a dunning step, an operator's "retry now"), and the worker's
    # database session terminated by the server after the gateway answered, before the record
    [payment_id] = opened("recerr1", 1)
    real, dropped = answers._record, []

    def dropped_before_recording(*args: Any, **kwargs: Any) -> str:
        if not dropped:
            dropped.append(_drop_this_session())
        return real(*args, **kwargs)

    monkeypatch.setattr(answers, "_record", dropped_before_recording)
    tasks.charge_payment.apply_async(kwargs={"payment_id": payment_id, "step": 0})

    # then the answer is recorded at once on a new connection, not left "processing" for the sweep
    wait_until(lambda: Payment.objects.get(pk=payment_id).status == "succeeded", timeout=60)
    assert dropped and stats(sandbox)["charges"] == 1
    assert Payment.objects.get(pk=payment_id).attempts.get().outcome == "succeeded"


def test_an_invoice_voided_while_the_charges_of_a_list_wait_for_their_tokens_is_not_charged(
    celery_worker, sandbox, settings, monkeypatch, ran
):
    # given a message of three charges, a gateway allowing 4 a second (claimed two by two), its
    # bucket empty, and the second's invoice voided while the first two wait for their tokens
    settings.PAYMENT_RATE_LIMIT_PER_SECOND = 4
    ids = opened("voidwait", 3)
    invoice = Payment.objects.get(pk=ids[1]).invoice_id
    real, voided = charging.ratelimit.acquire, []

    def voided_during_the_wait(*args: Any, while_waiting: Any = None, **kwargs: Any) -> bool:
        if not voided:
            real("gateway", 4, n=2)  # the bucket emptied just before: the first wave waits 0.5 s

        def wait(seconds: float) -> None:
            if not voided:
                payment_close_for_invoice(invoice_id=invoice, reason="issued in error")
                voided.append(invoice)
            if while_waiting is not None:
                while_waiting(seconds)

        return real(*args, while_waiting=wait, **kwargs)

    monkeypatch.setattr(charging.ratelimit, "acquire", voided_during_the_wait)
    tasks.charge_payments.apply_async(kwargs={"charges": [[p, 0] for p in ids]})

    # then it is cancelled and never reaches the gateway (no charge then refund), the others charged
    wait_until(lambda: len(ran) == 1, timeout=60)
    assert voided == [invoice]
    assert ran == [("SUCCESS", {"succeeded": 2, "skipped": 1})]
    second = Payment.objects.get(pk=ids[1])
    assert second.status == "cancelled" and not second.attempts.exists()
    gateway = stats(sandbox)
    assert gateway["charges"] == 2 and second.idempotency_key not in gateway["charges_by_key"]
    assert gateway["refunds"] == 0


def test_a_list_frees_every_gateway_thread_whatever_becomes_of_its_charges(
    transactional_db, empty_queues, sandbox, settings, monkeypatch
):
    # given lists run as a task runs them: one with a charge already cancelled (skipped), one that
    # a bug stops as it starts its charges, then one a database error stops there
    ids = opened("slots", 7)
    Payment.objects.filter(pk=ids[0]).update(status="cancelled", next_attempt_at=None)
    real = charge_lists.charges_start

    def failing(wave: list[Any], **kwargs: Any) -> Any:
        named = [p for p, _step in wave]
        if ids[3] in named:
            raise RuntimeError("a bug")
        if ids[5] in named:
            raise OperationalError("the server closed the connection")
        return real(wave, **kwargs)

    monkeypatch.setattr(charge_lists, "charges_start", failing)
    first = charge_lists.charges_run([(p, 0) for p in ids[:3]], seconds=60)
    second = charge_lists.charges_run([(p, 0) for p in ids[3:5]], seconds=60)
    third = charge_lists.charges_run([(p, 0) for p in ids[5:]], seconds=60)

    # then the skip and the charges go as they should; the bug stops its list there, its charges
    # going on with the rest (not left to wait for their lease); the database error's are the
    # task's to retry; and every gateway thread is free
    assert first.outcomes == {"skipped": 1, "succeeded": 2} and first.crashed is None
    assert isinstance(second.crashed, RuntimeError) and second.not_started == [(ids[3], 0), (ids[4], 0)]
    assert third.failed == [(ids[5], 0), (ids[6], 0)] and not third.not_started
    assert gateway_threads_free() == settings.PAYMENT_CHARGE_CONCURRENCY


def gateway_threads_free() -> int:
    """How many of this process's gateway-thread slots are free (one more than there are: none)."""
    _pool, slots = gateway_threads.pool()
    size = django_settings.PAYMENT_CHARGE_CONCURRENCY
    free = [slots.acquire(blocking=False) for _ in range(size + 1)]
    for taken in free:
        if taken:
            slots.release()
    return sum(free)


def _drop_this_session() -> int:
    """Terminate this thread's database session from another one, as a failover, an idle timeout
    or an operator's pg_terminate_backend would: its next statement fails. Returns its pid."""
    pid = connection.connection.get_backend_pid()
    other = connections.create_connection("default")
    try:
        with other.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])
    finally:
        other.close()
    return pid


def test_a_list_whose_rest_cannot_be_sent_on_leaves_those_charges_due_again(
    celery_worker, sandbox, settings, monkeypatch, ran
):
    # given a message of three queued charges (leased: not due again for PAYMENT_CHARGE_LEASE_SECONDS),
    # no time for more than one, and the broker refusing the send of the other two
    settings.PAYMENT_CHARGES_TASK_SECONDS = 0
    settings.PAYMENT_RATE_LIMIT_PER_SECOND = 2  # claimed one at a time
    ids = opened("nosend", 3)
    Payment.objects.filter(pk__in=ids).update(next_attempt_at=lease_end())

    def broker_down(charges):
        raise ConnectionError("the broker did not answer")

    monkeypatch.setattr(dispatching, "enqueue_charges", broker_down)
    tasks.charge_payments.apply_async(kwargs={"charges": [[p, 0] for p in ids]})

    # then the first is charged, the task fails, and the two others are due at once: the next
    # dispatch pass or sweep sends them, not one 15 minutes on when their lease runs out
    wait_until(lambda: len(ran) == 1, timeout=60)
    assert ran[0][0] == "FAILURE"
    assert Payment.objects.get(pk=ids[0]).status == "succeeded"
    assert stats(sandbox)["charges"] == 1
    assert set(charges_due().values_list("pk", flat=True)) == {uuid.UUID(p) for p in ids[1:]}


def test_a_payment_named_twice_in_a_list_is_charged_once_for_the_step_it_is_at(
    transactional_db, empty_queues, sandbox
):
    # given a list naming one payment twice, for its first dunning step (decided: a copy) and for
    # the step it is at, claimed together
    [payment_id] = opened("twice-in-one", 1)
    Payment.objects.filter(pk=payment_id).update(dunning_step=1)

    run = charge_lists.charges_run([(payment_id, 0), (payment_id, 1)], seconds=60)

    # then it is charged once, for step 1, and the other naming is skipped
    assert run.outcomes == {"succeeded": 1, "skipped": 1}
    assert stats(sandbox)["charges"] == 1
    assert Payment.objects.get(pk=payment_id).attempts.get().outcome == "succeeded"


def test_the_tokens_of_charges_not_claimed_are_given_back(transactional_db, empty_queues, sandbox, settings):
    # given a gateway allowing 4 charges a second (a bucket of 2) and a list of two charges claimed
    # together, the first already cancelled
    settings.PAYMENT_RATE_LIMIT_PER_SECOND = 4
    ids = opened("giveback", 2)
    Payment.objects.filter(pk=ids[0]).update(status="cancelled", next_attempt_at=None)

    run = charge_lists.charges_run([(p, 0) for p in ids], seconds=60)

    # then its token went back to the bucket: the next charge need not wait for it (kept, the
    # bucket would hold what 50 ms refill, not a token and more)
    assert run.outcomes == {"skipped": 1, "succeeded": 1}
    tokens = RateLimitBucket.objects.get(name="gateway").tokens
    assert tokens >= 0.9, tokens


def test_a_charge_skipped_in_a_wave_leaves_the_next_wave_its_size(
    transactional_db, empty_queues, sandbox, settings
):
    # given a gateway allowing 2 charges a second (waves of one) and a list whose first charge is
    # already cancelled
    settings.PAYMENT_RATE_LIMIT_PER_SECOND = 2
    ids = opened("skipwave", 3)
    Payment.objects.filter(pk=ids[0]).update(status="cancelled", next_attempt_at=None)

    run = charge_lists.charges_run([(p, 0) for p in ids], seconds=60)

    # then the two others are charged one wave each: the skipped charge's gateway thread is not
    # carried into the next wave, which would claim two at once where the bucket holds one
    assert run.outcomes == {"skipped": 1, "succeeded": 2} and run.crashed is None
    assert stats(sandbox)["charges"] == 2


class _ShutDownPool:
    """A gateway thread pool that no longer takes work (a worker shutting down, say)."""

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("cannot schedule new futures after shutdown")


def test_charges_claimed_but_never_sent_are_recorded_so_and_a_void_then_charges_nothing(
    transactional_db, empty_queues, sandbox, monkeypatch
):
    # given a list whose charges are claimed together (their tries open) and whose sends cannot be
    # submitted: the pool refuses the first (a soft time limit cannot strike inside a submit: it is
    # deferred until the wave is sent)
    ids = opened("unsent", 3)
    _pool, slots = gateway_threads.pool()
    monkeypatch.setattr(gateway_threads, "pool", lambda: (_ShutDownPool(), slots))
    run = charge_lists.charges_run([(p, 0) for p in ids], seconds=60)
    monkeypatch.undo()

    # then none reached the pool: every try reads "not sent", not sent-and-unanswered (which the
    # stale sweep would ask the gateway about, a first charge for it), and the payments are due again
    assert isinstance(run.crashed, RuntimeError) and run.outcomes == {"not_sent": 3}
    payments = {str(p.pk): p for p in Payment.objects.filter(pk__in=ids)}
    rest = [payments[i] for i in ids]
    for p in rest:
        tries = [(a.outcome, a.finished_at is not None) for a in p.attempts.all()]
        assert p.status == "pending" and tries == [("not_sent", True)]
    # and when the second's invoice is voided, it is cancelled: the gateway never saw a charge to ask about
    payment_close_for_invoice(invoice_id=rest[0].invoice_id, reason="issued in error")
    rest[0].refresh_from_db()
    assert rest[0].status == "cancelled"
    assert stats(sandbox)["charges"] == 0 and stats(sandbox)["refunds"] == 0


def test_a_soft_time_limit_between_the_sends_of_a_wave_lets_the_wave_go_whole(
    transactional_db, empty_queues, sandbox, settings, monkeypatch, soft_limit
):
    # given a wave of three charges claimed together, whose soft time limit (the signal) strikes
    # as the list goes from the first send to the second
    settings.PAYMENT_RATE_LIMIT_PER_SECOND = 100  # a burst of 50: the wave is as many as are free
    ids = opened("between", 3)
    charges_start = charge_lists.charges_start

    struck: list[int] = []

    class StruckAfterTheFirst(list):  # type: ignore[type-arg]
        def __iter__(self) -> Any:
            for n, item in enumerate(list.__iter__(self)):
                if n == 1 and not struck:  # (the limit strikes once)
                    struck.append(1)
                    signal.raise_signal(SOFT_LIMIT_SIGNAL)
                yield item

    def claimed(*args: Any, **kwargs: Any) -> Any:
        made = charges_start(*args, **kwargs)
        return dataclasses.replace(made, started=StruckAfterTheFirst(made.started))

    monkeypatch.setattr(charge_lists, "charges_start", claimed)
    run = charge_lists.charges_run([(p, 0) for p in ids], seconds=60)

    # then the limit is raised once the wave is sent: all three are charged and recorded, none
    # left "processing" with its try open (which the stale sweep would take for a charge that
    # may have gone, and ask about, even for an invoice voided since)
    assert isinstance(run.crashed, SoftTimeLimitExceeded)
    assert sorted(Payment.objects.filter(pk__in=ids).values_list("status", flat=True)) == ["succeeded"] * 3
    assert stats(sandbox)["charges"] == 3
    assert gateway_threads_free() == settings.PAYMENT_CHARGE_CONCURRENCY


def test_a_soft_time_limit_as_a_send_is_handed_over_still_records_the_waves_answers(
    transactional_db, empty_queues, sandbox, settings, monkeypatch, soft_limit
):
    # given a wave of two whose soft time limit (the signal) strikes as its first send is handed
    # over to the gateway threads
    settings.PAYMENT_RATE_LIMIT_PER_SECOND = 100  # a burst of 50: the wave is as many as are free
    ids = opened("struck", 2)
    hand_over = gateway_threads.Slots.hand_over

    def struck(self: Any) -> None:
        signal.raise_signal(SOFT_LIMIT_SIGNAL)
        hand_over(self)

    monkeypatch.setattr(gateway_threads.Slots, "hand_over", struck)
    run = charge_lists.charges_run([(p, 0) for p in ids], seconds=60)

    # then the limit is raised once the wave is in flight: each answer is recorded (none left
    # "processing" for the sweep to ask about), and every gateway thread is free
    assert isinstance(run.crashed, SoftTimeLimitExceeded)
    statuses = Payment.objects.filter(pk__in=ids).values_list("status", flat=True)
    assert sorted(statuses) == ["succeeded", "succeeded"] and stats(sandbox)["charges"] == 2
    assert gateway_threads_free() == settings.PAYMENT_CHARGE_CONCURRENCY


def test_a_soft_time_limit_as_a_wave_is_claimed_records_its_tries_not_sent(
    transactional_db, empty_queues, sandbox, settings, monkeypatch, soft_limit
):
    # given a wave of two whose soft time limit (the signal) strikes as their claim commits
    settings.PAYMENT_RATE_LIMIT_PER_SECOND = 100
    ids = opened("claiming", 2)
    claim_all = charging._claim_all

    def struck(*args: Any, **kwargs: Any) -> Any:
        claimed = claim_all(*args, **kwargs)
        signal.raise_signal(SOFT_LIMIT_SIGNAL)
        return claimed

    monkeypatch.setattr(charging, "_claim_all", struck)
    run = charge_lists.charges_run([(p, 0) for p in ids], seconds=60)

    # then the tries it claimed are recorded as not sent (due again), not left open for the stale
    # sweep to take for charges that may have gone; nothing reached the gateway
    assert isinstance(run.crashed, SoftTimeLimitExceeded)
    for p in Payment.objects.filter(pk__in=ids):
        tries = [(a.outcome, a.finished_at is not None) for a in p.attempts.all()]
        assert p.status == "pending" and tries == [("not_sent", True)]
    assert stats(sandbox)["charges"] == 0
    assert gateway_threads_free() == settings.PAYMENT_CHARGE_CONCURRENCY
