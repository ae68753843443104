"""A receive batch for one consumer in one transaction, when its handlers take batches. Never raises.

Each message is first decided on its own, exactly as ``ConsumerRuntime.process`` decides it:
signature, envelope, contract, handler, data (poison to the DLQ with its reason, unhandled types
acknowledged). The messages whose handler takes batches (``handles_batch``) then run together:

- one transaction, one statement/lock timeout, and one ``INSERT ... ON CONFLICT DO NOTHING
  RETURNING`` of their processed-event records, which tells the events already processed
  (acknowledged without effects; the same id with other data is poison, as alone);
- the same event twice in the batch: the first is applied, the repeat is then a duplicate of it
  (or poison, if its data differs), as if it had arrived just after;
- each batch handler is called once with its new events, in receive order;
- any exception (a handler's, a deadlock, a timeout, a lost connection) rolls the whole batch
  back, and every one of its messages is then processed one at a time through
  ``ConsumerRuntime.process``: one poison or failing message never costs the others their
  effects, and a failure is recorded against the message that caused it. A handler's ``Poison``
  (an event it can never apply) is an expected refusal: logged as such, without a traceback.

Messages whose handler takes one event at a time are processed one at a time, as before.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
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
    outcomes: list[Outcome | None]
    first: dict[Any, int] = field(default_factory=dict)  # event id -> index of its first message
    batched: list[tuple[int, Admitted]] = field(default_factory=list)  # first occurrences
    repeats: list[tuple[int, Admitted]] = field(default_factory=list)  # same event id again
    admitted: dict[int, Admitted] = field(default_factory=dict)
    alone: list[int] = field(default_factory=list)  # handled one at a time


def process_batch(runtime: ConsumerRuntime, messages: list[Received]) -> list[Outcome]:
    """One outcome per message, in order (see the module doc). Never raises."""
    plan = _Plan(outcomes=[None] * len(messages))
    try:
        _decide(runtime, messages, plan)
        if plan.batched:
            _run_together(runtime, plan)
    except Poison as exc:  # a handler refused one of its events: which one, each alone will tell
        logger.info(
            "consumer %s: a batch of %d holds an event its handler refuses (%s); handling its "
            "messages one at a time",
            runtime.name,
            len(messages),
            exc,
        )
        plan.alone = [i for i, o in enumerate(plan.outcomes) if o is None]
    except Exception:  # noqa: BLE001 - whatever went wrong, each message gets its own chance
        logger.warning(
            "consumer %s: a batch of %d failed; handling its messages one at a time",
            runtime.name,
            len(messages),
            exc_info=True,
        )
        plan.alone = [i for i, o in enumerate(plan.outcomes) if o is None]
    for i in plan.alone:
        drop_broken_connection()
        m, admitted = messages[i], plan.admitted.get(i)
        if admitted is not None:
            plan.outcomes[i] = runtime.process_admitted(admitted, receive_count=m.receive_count)
        else:
            plan.outcomes[i] = runtime.process(
                m.body, message_id=m.message_id, receive_count=m.receive_count, attributes=m.attributes
            )
    return [o or Outcome(FAILED, reason="not processed") for o in plan.outcomes]


def _decide(runtime: ConsumerRuntime, messages: list[Received], plan: _Plan) -> None:
    for i, m in enumerate(messages):
        with log_context(consumer=runtime.name, sqs_message_id=m.message_id):
            prepared = runtime.prepare(m.body, message_id=m.message_id, attributes=m.attributes)
        if isinstance(prepared, Outcome):
            plan.outcomes[i] = prepared
            continue
        plan.admitted[i] = prepared
        if batch_handler_for(runtime.name, prepared.event.type) is None:
            plan.alone.append(i)
        elif prepared.event.id in plan.first:
            plan.repeats.append((i, prepared))
        else:
            plan.first[prepared.event.id] = i
            plan.batched.append((i, prepared))


def _run_together(runtime: ConsumerRuntime, plan: _Plan) -> None:
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
        groups: dict[BatchHandler, list[Event]] = defaultdict(list)
        for _, a in plan.batched:
            if a.event.id in new:
                handler = batch_handler_for(runtime.name, a.event.type)
                assert handler is not None  # batched
                groups[handler].append(a.event)
        for handler, events in groups.items():
            handler(events)
    share = (time.perf_counter() - started) / max(1, len(new))
    for i, a in [*plan.batched, *plan.repeats]:
        if a.event.id in new and plan.first[a.event.id] == i:
            plan.outcomes[i] = runtime.handled(a, share)
        elif stored.get(a.event.id) == a.digest:
            plan.outcomes[i] = runtime.duplicate(a)
        else:
            reason = reused_reason(stored.get(a.event.id, ""), a.digest)
            plan.outcomes[i] = runtime.poisoned(a.message_id, reason, a.envelope)
