"""Push mode: poller threads per consumer inside every Celery worker, like a Lambda trigger.

Each poller long-polls the consumer's queue and hands what it receives to a bounded thread pool
running the consumer runtime, so a slow handler stalls neither the worker's task consumption nor
the other consumers' pollers. A consumer whose handlers take batches (``handles_batch``) gets each
receive batch as one unit (one transaction: events/consuming/batch.py); any other gets each message
on a thread of its own. Several pollers (``pollers`` in EVENT_CONSUMERS) overlap their SQS round
trips with the handling of what the others received.

A trickle (``gather_seconds``, off unless set; ``make run`` sets it): a long poll that brings under
half of what it asked for means the queue is shallow, so the poller waits that long before it
receives again (settling meanwhile) and the next receive finds a batch: fewer receives, deletes and
transactions per message. Latency grows by at most that wait; a queue that deepens gives full
receives, and a busy poller's short polls never wait, so throughput is not capped by it. Below
about 10 / (2 x gather) messages a second every long poll is thin, so every message may wait. The
consumer's pollers gather together: a thin long poll by any of them holds them all, so two pollers
take a trickle as one does (test_push_gathering.py's 20 a second with 1 s of gathering: 4.6-5.0
messages a receive, against 4.3-4.6 with each poller gathering on its own; two runs each). With
``CONSUMER_WAIT_SECONDS`` 0 (no long polls) nothing gathers.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.db import connection

from core.backoff import backoff

from ..topology.aws import BATCH_MAX_ENTRIES
from .config import ConsumerConfig
from .registry import takes_batches
from .runtime import FAILED, Outcome
from .sqs import handle_batch, handle_one, receive, settle

logger = logging.getLogger(__name__)


class PushConsumer:
    """Long-polls one consumer queue with ``cfg.pollers`` threads; runs handlers on a bounded pool."""

    def __init__(self, cfg: ConsumerConfig) -> None:
        self.cfg = cfg
        self.stopping = threading.Event()
        self.batched = takes_batches(cfg.name)
        # Messages held at once (running or queued for a thread): full receive batches of 10 for
        # every poller, and for every handler thread when it takes batches, so each ReceiveMessage
        # brings as much as SQS allows and no handler thread waits for work that is on the queue.
        per_thread = BATCH_MAX_ENTRIES if self.batched else 2
        self.capacity = max(BATCH_MAX_ENTRIES * cfg.pollers, per_thread * cfg.concurrency)
        self.slots = threading.Semaphore(self.capacity)
        self.pool = ThreadPoolExecutor(max_workers=cfg.concurrency, thread_name_prefix=f"consumer-{cfg.name}")
        self.gather_until = 0.0  # after a thin long poll: no poller receives before this (monotonic)
        # A failing SQS call is logged at most once a minute for the consumer, not for each poller.
        self.failure_logged_at = float("-inf")
        self.failure_log_lock = threading.Lock()
        self.pollers = [_Poller(self, i) for i in range(cfg.pollers)]

    @property
    def alive(self) -> bool:
        """Every poller thread is running."""
        return all(p.thread.is_alive() for p in self.pollers)

    @property
    def handled(self) -> int:
        """Messages settled (processed, then deleted, dead-lettered or left to come back)."""
        return sum(p.handled for p in self.pollers)

    def start(self) -> None:
        for poller in self.pollers:
            poller.thread.start()
        logger.info(
            "push consumer %s polling %s (%d poller(s), %d handler threads%s)",
            self.cfg.name,
            self.cfg.queue,
            len(self.pollers),
            self.cfg.concurrency,
            ", receive batches in one transaction" if self.batched else "",
        )

    def stop(self, timeout: float = 30.0) -> None:
        self.stopping.set()
        deadline = time.monotonic() + timeout  # the pollers stop together: one timeout for all
        for poller in self.pollers:
            poller.thread.join(max(0.0, deadline - time.monotonic()))
        self.pool.shutdown(wait=True)
        for poller in self.pollers:
            poller.flush()

    def log_failure(self, errors: int, exc: Exception) -> None:
        """At most a line a minute for the consumer, whichever poller failed: a deleted queue or a
        revoked permission fails every poll for as long as it lasts (/readyz and the
        queues_missing alert say so too)."""
        with self.failure_log_lock:
            if time.monotonic() - self.failure_logged_at < 60:
                return
            self.failure_logged_at = time.monotonic()
        logger.warning(
            "consumer %s: SQS call failed %d time(s) in a row (%s); retrying with backoff "
            "up to 30s, logged at most once a minute while it lasts",
            self.cfg.name,
            errors,
            exc,
        )


class _Poller:
    """One thread making every SQS call for what it receives: receive, delete, dead-letter.

    It long-polls only when nothing it received is in flight, so finished messages are deleted
    promptly without a second thread racing it."""

    def __init__(self, consumer: PushConsumer, index: int) -> None:
        self.consumer = consumer
        self.cfg = consumer.cfg
        self.done: list[tuple[dict[str, Any], Outcome]] = []
        self.done_since = 0.0  # when the oldest unsettled outcome arrived
        self.done_lock = threading.Lock()
        self.done_ready = threading.Condition(self.done_lock)
        self.handled = 0
        self.in_flight = 0  # received, not yet settled
        name = f"poller-{self.cfg.name}" + (f"-{index}" if index else "")
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _finished(self, messages: list[dict[str, Any]], future: Future[Any]) -> None:
        try:
            result = future.result()
            outcomes = result if isinstance(result, list) else [result]
        except BaseException as exc:  # noqa: BLE001 - the runtime never raises; be safe anyway
            outcomes = [Outcome(FAILED, reason=repr(exc)) for _ in messages]
        with self.done_ready:
            if not self.done:
                self.done_since = time.monotonic()
            self.done.extend(zip(messages, outcomes, strict=True))
            if len(self.done) >= BATCH_MAX_ENTRIES:
                self.done_ready.notify()
        for _ in messages:
            self.consumer.slots.release()

    def flush(self, force: bool = True) -> None:
        """Settle finished messages: in full batches of 10 (one DeleteMessageBatch each), or
        whatever waited 0.1 s."""
        with self.done_lock:
            waited = time.monotonic() - self.done_since >= 0.1
            if not force and len(self.done) < BATCH_MAX_ENTRIES and not waited:
                return
            cut = len(self.done) if force or waited else len(self.done) - len(self.done) % BATCH_MAX_ENTRIES
            done, self.done = self.done[:cut], self.done[cut:]
            if self.done:
                self.done_since = time.monotonic()
        if done:
            try:
                settle(self.cfg, done)  # undeleted messages come back; idempotency absorbs them
            finally:
                self.handled += len(done)
                self.in_flight -= len(done)

    def _free_slots(self) -> int:
        """Wait briefly for a slot, then take every other free one (up to 10)."""
        slots = self.consumer.slots
        if not slots.acquire(timeout=0.2):
            return 0
        free = 1
        while free < BATCH_MAX_ENTRIES and slots.acquire(blocking=False):
            free += 1
        if free < BATCH_MAX_ENTRIES // 2:
            # Handlers are busy: a moment's wait fills the batch instead of many tiny receives.
            deadline = time.monotonic() + 0.05
            while free < BATCH_MAX_ENTRIES and slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
                free += 1
        return free

    def _submit(self, messages: list[dict[str, Any]]) -> None:
        pool = self.consumer.pool
        if self.consumer.batched:
            future = pool.submit(handle_batch, self.cfg, messages)
            future.add_done_callback(lambda f: self._finished(messages, f))
            return
        for message in messages:
            one = pool.submit(handle_one, self.cfg, message)
            one.add_done_callback(lambda f, m=message: self._finished([m], f))

    def _run(self) -> None:
        errors = 0
        stopping = self.consumer.stopping
        try:
            while not stopping.is_set():
                try:
                    self.flush(force=False)
                    pause = self.consumer.gather_until - time.monotonic()
                    if pause > 0:  # a trickle: let a batch gather, settling what finishes
                        with self.done_ready:
                            self.done_ready.wait(timeout=min(pause, 0.1))
                        continue
                    free = self._free_slots()
                    if not free:
                        continue
                    busy = self.in_flight > 0
                    wait = 0 if busy else settings.CONSUMER_WAIT_SECONDS
                    try:
                        messages = receive(self.cfg.queue, max_messages=free, wait_seconds=wait)
                    except BaseException:
                        for _ in range(free):
                            self.consumer.slots.release()
                        raise
                    for _ in range(free - len(messages)):
                        self.consumer.slots.release()
                    self.in_flight += len(messages)
                    if messages:
                        self._submit(messages)
                        # a long poll asks all of the queue's servers (a short one, on SQS, only some):
                        # one that comes back thin means the queue is shallow, or nearly
                        if self.cfg.gather_seconds and wait and len(messages) * 2 < free:
                            self.consumer.gather_until = time.monotonic() + self.cfg.gather_seconds
                    elif busy:
                        with self.done_ready:  # nothing new: wait for handlers, not for SQS
                            self.done_ready.wait(timeout=0.1)
                    errors = 0
                except Exception as exc:  # noqa: BLE001 - the poller must survive endpoint outages
                    errors += 1
                    delay = backoff(errors, base=1.0, maximum=30.0)
                    self.consumer.log_failure(errors, exc)
                    stopping.wait(delay)
        finally:
            connection.close()
