"""Taking messages off consumer queues: push mode (inside the worker) and pull mode (beat).

Push: ``EventConsumersStep`` is a worker bootstep. For each push-mode consumer
it starts a poller thread that long-polls the consumer's queue and hands every
message to a bounded thread pool running ``process_message``, like a Lambda
trigger. Handlers never run on the worker's event loop, so a slow handler
stalls neither task consumption nor the other queues' pollers.

Pull: ``pull_once(consumer)`` (the ``events.pull_consumer`` task, on a beat
schedule) receives at most the consumer's batch size per run, for consumers
that must not go faster than something downstream allows.

Both talk to SQS with boto3 directly rather than through kombu: these are
not kombu messages (no kombu envelope, raw SNS delivery), so plain
ReceiveMessage/DeleteMessageBatch keeps the semantics exact: success deletes;
a handler failure leaves the message to come back (with a growing visibility
backoff) until SQS's redrive policy moves it to the DLQ; a poison message is
copied to the DLQ with its reason, then deleted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection

from . import aws, topology
from .consumers import FAILED, POISON, Outcome, process_message

logger = logging.getLogger(__name__)

SQS_MAX_BATCH = 10
RESERVED_ATTRIBUTES = ("error", "failed_consumer", "original_message_id")


@dataclass(frozen=True)
class ConsumerConfig:
    name: str
    mode: str  # push | pull
    queue: str  # full queue name
    dlq: str
    batch_size: int  # pull: max messages per run
    interval_seconds: int  # pull: how often the run is scheduled
    concurrency: int  # push: handler threads


def consumer_configs() -> dict[str, ConsumerConfig]:
    """Every event consumer with its mode and pace (settings.EVENT_CONSUMERS overrides defaults)."""
    configs: dict[str, ConsumerConfig] = {}
    for spec in topology.build().queues:
        if spec.kind != "events":
            continue
        options = {**settings.EVENT_CONSUMER_DEFAULTS, **settings.EVENT_CONSUMERS.get(spec.consumer, {})}
        mode = options["mode"]
        if mode not in ("push", "pull"):
            raise ValueError(f"EVENT_CONSUMERS[{spec.consumer!r}]['mode'] must be push or pull, not {mode!r}")
        configs[spec.consumer] = ConsumerConfig(
            name=spec.consumer,
            mode=mode,
            queue=spec.name,
            dlq=spec.dlq_name,
            batch_size=int(options["batch_size"]),
            interval_seconds=int(options["interval_seconds"]),
            concurrency=int(options["concurrency"]),
        )
    return configs


def receive(queue: str, *, max_messages: int, wait_seconds: int) -> list[dict[str, Any]]:
    resp = aws.client("sqs").receive_message(
        QueueUrl=aws.queue_url(queue),
        MaxNumberOfMessages=max(1, min(SQS_MAX_BATCH, max_messages)),
        WaitTimeSeconds=wait_seconds,
        MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
    )
    messages = list(resp.get("Messages", []))
    from .monitoring import observe_receive

    observe_receive(queue, messages)
    return messages


def receive_count(message: dict[str, Any]) -> int:
    return int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))


def delete_batch(queue: str, messages: Iterable[dict[str, Any]]) -> None:
    messages = list(messages)
    sqs = aws.client("sqs")
    for i in range(0, len(messages), SQS_MAX_BATCH):
        chunk = messages[i : i + SQS_MAX_BATCH]
        resp = sqs.delete_message_batch(
            QueueUrl=aws.queue_url(queue),
            Entries=[{"Id": str(j), "ReceiptHandle": m["ReceiptHandle"]} for j, m in enumerate(chunk)],
        )
        for failed in resp.get("Failed", []):
            # The message comes back after its visibility timeout; idempotency absorbs it.
            logger.warning("could not delete message from %s: %s", queue, failed)


def dead_letter(cfg: ConsumerConfig, poisoned: list[tuple[dict[str, Any], str]]) -> None:
    """Copy poison messages to the consumer's DLQ with their reasons, then delete the originals.

    Send before delete: a crash in between leaves a copy in both (never none). Batched
    (SendMessageBatch, then one DeleteMessageBatch): a batch full of poison settles in two
    calls, well inside the visibility timeout. An entry the DLQ refused is not deleted; it
    comes back and, past maxReceiveCount, SQS's own redrive moves it.
    """
    sqs = aws.client("sqs")
    entries = [(message, _dlq_attributes(cfg, message, reason)) for message, reason in poisoned]
    for group in aws.size_batches(entries, _entry_size):
        resp = sqs.send_message_batch(
            QueueUrl=aws.queue_url(cfg.dlq),
            Entries=[
                {"Id": str(i), "MessageBody": m["Body"] or "(empty body)", "MessageAttributes": attrs}
                for i, (m, attrs) in enumerate(group)
            ],
        )
        for failed in resp.get("Failed", []):
            logger.warning("DLQ %s refused a poison message, left for redrive: %s", cfg.dlq, failed)
        delete_batch(cfg.queue, [group[int(ok["Id"])][0] for ok in resp.get("Successful", [])])


def _dlq_attributes(cfg: ConsumerConfig, message: dict[str, Any], reason: str) -> dict[str, Any]:
    attributes = {
        k: v for k, v in message.get("MessageAttributes", {}).items() if k not in RESERVED_ATTRIBUTES
    }
    attributes["error"] = {"DataType": "String", "StringValue": reason[:1000] or "rejected"}
    attributes["failed_consumer"] = {"DataType": "String", "StringValue": cfg.name}
    attributes["original_message_id"] = {"DataType": "String", "StringValue": message["MessageId"]}
    return attributes


def _entry_size(entry: tuple[dict[str, Any], dict[str, Any]]) -> int:
    message, attributes = entry
    size = len((message["Body"] or "").encode("utf-8"))
    for name, value in attributes.items():
        size += len(name) + len(value["DataType"])
        size += len(value.get("StringValue", "").encode("utf-8")) + len(value.get("BinaryValue", b""))
    return size


def retry_later(cfg: ConsumerConfig, message: dict[str, Any]) -> None:
    """Make a failed message visible again after a backoff that grows with its receive count."""
    delay = min(
        settings.CONSUMER_RETRY_MAX_SECONDS,
        settings.CONSUMER_RETRY_BASE_SECONDS * 2 ** (receive_count(message) - 1),
    )
    try:
        aws.client("sqs").change_message_visibility(
            QueueUrl=aws.queue_url(cfg.queue),
            ReceiptHandle=message["ReceiptHandle"],
            VisibilityTimeout=int(delay),
        )
    except Exception as exc:  # noqa: BLE001 - it comes back after the queue's visibility timeout anyway
        logger.warning("could not set the retry delay of %s: %s", message.get("MessageId"), exc)


def handle_one(cfg: ConsumerConfig, message: dict[str, Any]) -> Outcome:
    """Process one received message. Never raises: whatever goes wrong is an outcome, so one
    bad message never costs the others of its batch their settlement."""
    try:
        close_old_connections()
        return process_message(
            cfg.name,
            message.get("Body", ""),
            message_id=message.get("MessageId", ""),
            receive_count=receive_count(message),
            attributes=message.get("MessageAttributes", {}),
        )
    except Exception as exc:  # noqa: BLE001 - process_message never raises; a lost connection might
        logger.exception("consumer %s: message %s could not be processed", cfg.name, message.get("MessageId"))
        return Outcome(FAILED, reason=f"{type(exc).__name__}: {exc}"[:2000])
    finally:
        try:
            close_old_connections()
        except Exception:  # noqa: BLE001 - a broken connection is dropped; the next message opens one
            logger.debug("could not close old connections", exc_info=True)


def settle(cfg: ConsumerConfig, done: list[tuple[dict[str, Any], Outcome]]) -> None:
    """Delete what is done, dead-letter poison, back off failures."""
    delete_batch(cfg.queue, [m for m, o in done if o.delete])
    poisoned = [(m, o.reason) for m, o in done if o.result == POISON]
    if poisoned:
        dead_letter(cfg, poisoned)
    for message, outcome in done:
        if outcome.result != POISON and not outcome.delete:
            retry_later(cfg, message)


# --------------------------------------------------------------------------
# pull mode
# --------------------------------------------------------------------------
@dataclass
class PullResult:
    received: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


def pull_once(consumer: str, *, batch_size: int | None = None) -> PullResult:
    """Receive and handle at most ``batch_size`` messages from ``consumer``'s queue."""
    cfg = consumer_configs()[consumer]
    limit = batch_size or cfg.batch_size
    result = PullResult()
    while result.received < limit:
        messages = receive(cfg.queue, max_messages=limit - result.received, wait_seconds=1)
        if not messages:
            break
        result.received += len(messages)
        done = [(m, handle_one(cfg, m)) for m in messages]
        settle(cfg, done)
        for _, o in done:
            result.outcomes[o.result] = result.outcomes.get(o.result, 0) + 1
    return result


# --------------------------------------------------------------------------
# push mode
# --------------------------------------------------------------------------
class PushConsumer:
    """Long-polls one consumer queue; runs handlers on a bounded thread pool."""

    def __init__(self, cfg: ConsumerConfig) -> None:
        self.cfg = cfg
        self.stopping = threading.Event()
        # Messages held at once (running or queued for a thread): enough for full receive
        # batches of 10, so each ReceiveMessage call brings as much as SQS allows.
        self.slots = threading.Semaphore(max(SQS_MAX_BATCH, 2 * cfg.concurrency))
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
        self.capacity = max(SQS_MAX_BATCH, 2 * cfg.concurrency)
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
            if len(self.done) >= SQS_MAX_BATCH:
                self.done_ready.notify()
        self.slots.release()

    def _flush(self, force: bool = True) -> None:
        """Settle finished messages: in full batches of 10, or whatever waited 0.1 s."""
        with self.done_lock:
            if not force and len(self.done) < SQS_MAX_BATCH and time.monotonic() - self.done_since < 0.1:
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
        while free < SQS_MAX_BATCH and self.slots.acquire(blocking=False):
            free += 1
        if free < SQS_MAX_BATCH // 2:
            # Handlers are busy: a moment's wait fills the batch instead of many tiny receives.
            deadline = time.monotonic() + 0.05
            while free < SQS_MAX_BATCH and self.slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
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
                    delay = min(30.0, 0.5 * 2**errors)
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


def push_consumer_names(option: str | None = None) -> list[str]:
    """Which push consumers this worker runs: the --event-consumers option, else the setting."""
    configs = consumer_configs()
    raw = option if option is not None else settings.EVENT_CONSUMERS_IN_WORKER
    if raw.strip().lower() in ("", "none"):
        return []
    if raw.strip().lower() == "all":
        return [c.name for c in configs.values() if c.mode == "push"]
    names = [n.strip() for n in raw.split(",") if n.strip()]
    unknown = [n for n in names if n not in configs]
    if unknown:
        raise ValueError(f"unknown event consumer(s) {unknown}; known: {sorted(configs)}")
    return names
