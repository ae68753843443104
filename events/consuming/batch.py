"""A receive batch for one consumer, in the order received, when its handlers take batches.
Never raises.

Each message is first decided on its own, exactly as ``ConsumerRuntime.process`` decides it:
signature, envelope, contract, handler, data (poison to the DLQ with its reason, unhandled types
acknowledged). The batch is then applied in the order received, by runs: each run of admitted
messages whose handlers take batches (``handles_batch``) together, each other message alone, in
its place. A run goes:

- in one transaction, with one statement/lock timeout, and one ``INSERT ... ON CONFLICT DO
  NOTHING RETURNING`` of its processed-event records, which tells the events already processed
  (acknowledged without effects; the same id with other data is poison, as alone);
- the same event twice in the run: the first is applied, the repeat is then a duplicate of it
  (or poison, if its data differs), as if it had arrived just after (in a later run: a duplicate
  there, as alone);
- each batch handler is called with its new events, in receive order: once per stretch of
  consecutive events it handles (a price change received after a payment is applied after it);
- any exception (a handler's, a deadlock, a timeout, a lost connection) rolls the whole run
  back, and each of its messages is then processed one at a time through
  ``ConsumerRuntime.process``: one poison or failing message never costs the others their
  effects, and a failure is recorded against the message that caused it. A handler's ``Poison``
  (an event it can never apply) is an expected refusal: logged as such, without a traceback.

Applying batches first and the rest after made an ``invoice.voided`` received before its
invoice's ``invoice.issued`` apply after it (the batch's commit dispatched a charge the void then
refunded); grouping a run by handler did the same to a payment and a price change received after
it. The order holds only as far as each message succeeds: one that fails (a lock timeout) comes
back later, after the messages received after it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from core.db import drop_broken_connection

from ..envelope import Poison
from ..operations.logs import log_context
from .processed import processed_hashes, record_processed
from .registry import BatchHandler, Event, batch_handler_for
from .runtime import FAILED, Admitted, ConsumerRuntime, Outcome, reused_reason

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Received:
    """One SQS message, as much of it as the runtime reads."""

    body: str | bytes
    message_id: str = ""
    receive_count: int = 1
    attributes: dict[str, Any] | None = None


@dataclass
class _Plan:
    """One run of messages whose handlers take batches (indices into the receive batch)."""

    first: dict[Any, int] = field(default_factory=dict)  # event id -> index of its first message
    batched: list[tuple[int, Admitted]] = field(default_factory=list)  # first occurrences
    repeats: list[tuple[int, Admitted]] = field(default_factory=list)  # same event id again


def process_batch(runtime: ConsumerRuntime, messages: list[Received]) -> list[Outcome]:
    """One outcome per message, in order (see the module doc). Never raises."""
    outcomes: list[Outcome | None] = [None] * len(messages)
    admitted: dict[int, Admitted] = {}
    runs: list[tuple[bool, list[int]]] = []  # (batched?, indices), in receive order
    try:
        _decide(runtime, messages, outcomes, admitted, runs)
    except Exception:  # noqa: BLE001 - whatever went wrong, each message gets its own chance
        logger.warning("consumer %s: deciding a batch failed", runtime.name, exc_info=True)
        runs = [(False, [i for i, o in enumerate(outcomes) if o is None])]
    for batched, indices in runs:
        if batched:
            drop_broken_connection()  # one the message before broke
            _run_batched(runtime, indices, admitted, outcomes)
        for i in indices:
            if outcomes[i] is None:  # alone, or its run failed
                drop_broken_connection()
                outcomes[i] = _alone(runtime, messages[i], admitted.get(i))
    return [o or Outcome(FAILED, reason="not processed") for o in outcomes]


def _alone(runtime: ConsumerRuntime, m: Received, admitted: Admitted | None) -> Outcome:
    if admitted is not None:
        return runtime.process_admitted(admitted, receive_count=m.receive_count)
    return runtime.process(
        m.body, message_id=m.message_id, receive_count=m.receive_count, attributes=m.attributes
    )


def _decide(
    runtime: ConsumerRuntime,
    messages: list[Received],
    outcomes: list[Outcome | None],
    admitted: dict[int, Admitted],
    runs: list[tuple[bool, list[int]]],
) -> None:
    for i, m in enumerate(messages):
        with log_context(consumer=runtime.name, sqs_message_id=m.message_id):
            prepared = runtime.prepare(m.body, message_id=m.message_id, attributes=m.attributes)
        if isinstance(prepared, Outcome):
            outcomes[i] = prepared
            continue
        admitted[i] = prepared
        batched = batch_handler_for(runtime.name, prepared.event.type) is not None
        if runs and runs[-1][0] == batched:
            runs[-1][1].append(i)
        else:
            runs.append((batched, [i]))


def _run_batched(
    runtime: ConsumerRuntime,
    indices: list[int],
    admitted: dict[int, Admitted],
    outcomes: list[Outcome | None],
) -> None:
    """A run's messages together; any failure leaves them to be processed one at a time."""
    plan = _Plan()
    for i in indices:
        a = admitted[i]
        if a.event.id in plan.first:
            plan.repeats.append((i, a))
        else:
            plan.first[a.event.id] = i
            plan.batched.append((i, a))
    try:
        _run_together(runtime, plan, outcomes)
    except Poison as exc:  # a handler refused one of its events: which one, each alone will tell
        logger.info(
            "consumer %s: a batch of %d holds an event its handler refuses (%s); handling its "
            "messages one at a time",
            runtime.name,
            len(indices),
            exc,
        )
    except Exception:  # noqa: BLE001 - whatever went wrong, each message gets its own chance
        logger.warning(
            "consumer %s: a batch of %d failed; handling its messages one at a time",
            runtime.name,
            len(indices),
            exc_info=True,
        )
    else:
        return
    for i in indices:
        outcomes[i] = None


def _run_together(runtime: ConsumerRuntime, plan: _Plan, outcomes: list[Outcome | None]) -> None:
    started = time.perf_counter()
    with log_context(consumer=runtime.name), transaction.atomic():
        new = record_processed(
            runtime.name, [a.record for _, a in plan.batched], timeout_ms=runtime.handler_timeout_ms
        )
        seen = [a.event.id for _, a in plan.batched if a.event.id not in new]
        stored = processed_hashes(runtime.name, seen)
        if len(stored) < len(seen):
            raise RuntimeError("a processed-event record vanished while this batch read it")
        stored.update({a.event.id: a.digest for _, a in plan.batched if a.event.id in new})
        segments: list[tuple[BatchHandler, list[Event]]] = []  # consecutive events of one handler
        for _, a in plan.batched:
            if a.event.id in new:
                handler = batch_handler_for(runtime.name, a.event.type)
                assert handler is not None  # batched
                if not segments or segments[-1][0] is not handler:
                    segments.append((handler, []))
                segments[-1][1].append(a.event)
        for handler, events in segments:
            handler(events)
    share = (time.perf_counter() - started) / max(1, len(new))
    for i, a in [*plan.batched, *plan.repeats]:
        if a.event.id in new and plan.first[a.event.id] == i:
            outcomes[i] = runtime.handled(a, share)
        elif stored.get(a.event.id) == a.digest:
            outcomes[i] = runtime.duplicate(a)
        else:
            reason = reused_reason(stored.get(a.event.id, ""), a.digest)
            outcomes[i] = runtime.poisoned(a.message_id, reason, a.envelope)
