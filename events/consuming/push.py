"""Push mode: a poller thread per consumer inside every Celery worker, like a Lambda trigger.

It long-polls the consumer's queue and hands every message to a bounded thread pool running
the consumer runtime, so a slow handler stalls neither the worker's task consumption nor the
other consumers' pollers.
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
from .runtime import Outcome
from .sqs import handle_one, receive, settle

logger = logging.getLogger(__name__)


class PushConsumer:
    """Long-polls one consumer queue; runs handlers on a bounded thread pool."""

    def __init__(self, cfg: ConsumerConfig) -> None:
        self.cfg = cfg
        self.stopping = threading.Event()
        # Messages held at once (running or queued for a thread): enough for full receive
        # batches of 10, so each ReceiveMessage call brings as much as SQS allows.
        self.slots = threading.Semaphore(max(BATCH_MAX_ENTRIES, 2 * cfg.concurrency))
        # One thread (the poller) makes every SQS call of this consumer: receive, delete,
        # dead-letter. It long-polls only when nothing is in flight, so finished messages
        # are deleted promptly without a second thread racing it.
        self.pool = ThreadPoolExecutor(max_workers=cfg.concurrency, thread_name_prefix=f"consumer-{cfg.name}")
        self.done: list[tuple[dict[str, Any], Outcome]] = []
        self.done_since = 0.0  # when the oldest unsettled outcome arrived
        self.done_lock = threading.Lock()
        self.done_ready = threading.Condition(self.done_lock)
        self.thread = threading.Thread(target=self._run, name=f"poller-{cfg.name}", daemon=True)
        self.handled = 0
        self.capacity = max(BATCH_MAX_ENTRIES, 2 * cfg.concurrency)
        self.in_flight = 0  # received, not yet settled

    def start(self) -> None:
        self.thread.start()
        logger.info(
            "push consumer %s polling %s (%d handler threads)",
            self.cfg.name,
            self.cfg.queue,
            self.cfg.concurrency,
        )

    def stop(self, timeout: float = 30.0) -> None:
        self.stopping.set()
        self.thread.join(timeout)
        self.pool.shutdown(wait=True)
        self._flush()

    def _finished(self, message: dict[str, Any], future: Future[Outcome]) -> None:
        try:
            outcome = future.result()
        except BaseException as exc:  # noqa: BLE001 - process_message never raises; be safe anyway
            outcome = Outcome("failed", reason=repr(exc))
        with self.done_ready:
            if not self.done:
                self.done_since = time.monotonic()
            self.done.append((message, outcome))
            if len(self.done) >= BATCH_MAX_ENTRIES:
                self.done_ready.notify()
        self.slots.release()

    def _flush(self, force: bool = True) -> None:
        """Settle finished messages: in full batches of 10, or whatever waited 0.1 s."""
        with self.done_lock:
            if not force and len(self.done) < BATCH_MAX_ENTRIES and time.monotonic() - self.done_since < 0.1:
                return
            done, self.done = self.done, []
        if done:
            try:
                settle(self.cfg, done)  # undeleted messages come back; idempotency absorbs them
            finally:
                self.handled += len(done)
                self.in_flight -= len(done)

    def _free_slots(self) -> int:
        """Wait briefly for a slot, then take every other free one (up to 10)."""
        if not self.slots.acquire(timeout=0.2):
            return 0
        free = 1
        while free < BATCH_MAX_ENTRIES and self.slots.acquire(blocking=False):
            free += 1
        if free < BATCH_MAX_ENTRIES // 2:
            # Handlers are busy: a moment's wait fills the batch instead of many tiny receives.
            deadline = time.monotonic() + 0.05
            while free < BATCH_MAX_ENTRIES and self.slots.acquire(
                timeout=max(0.0, deadline - time.monotonic())
            ):
                free += 1
        return free

    def _run(self) -> None:
        errors = 0
        logged_at = float("-inf")
        try:
            while not self.stopping.is_set():
                try:
                    self._flush(force=False)
                    free = self._free_slots()
                    if not free:
                        continue
                    busy = self.in_flight > 0
                    try:
                        messages = receive(
                            self.cfg.queue,
                            max_messages=free,
                            wait_seconds=0 if busy else settings.CONSUMER_WAIT_SECONDS,
                        )
                    except BaseException:
                        for _ in range(free):
                            self.slots.release()
                        raise
                    for _ in range(free - len(messages)):
                        self.slots.release()
                    self.in_flight += len(messages)
                    for message in messages:
                        future = self.pool.submit(handle_one, self.cfg, message)
                        future.add_done_callback(lambda f, m=message: self._finished(m, f))
                    if busy and not messages:
                        with self.done_ready:  # nothing new: wait for handlers, not for SQS
                            self.done_ready.wait(timeout=0.1)
                    errors = 0
                except Exception as exc:  # noqa: BLE001 - the poller must survive endpoint outages
                    errors += 1
                    delay = backoff(errors, base=1.0, maximum=30.0)
                    # At most a line a minute: a deleted queue or a revoked permission fails every
                    # poll for as long as it lasts (/readyz and the queues_missing alert say so too).
                    if time.monotonic() - logged_at >= 60:
                        logged_at = time.monotonic()
                        logger.warning(
                            "consumer %s: SQS call failed %d time(s) in a row (%s); retrying with backoff "
                            "up to 30s, logged at most once a minute while it lasts",
                            self.cfg.name,
                            errors,
                            exc,
                        )
                    self.stopping.wait(delay)
        finally:
            connection.close()
