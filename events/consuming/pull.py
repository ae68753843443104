"""Pull mode: a beat task takes at most a consumer's batch size of messages per run."""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import consumer_configs
from .registry import takes_batches
from .sqs import handle_batch, handle_one, receive, settle


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
        if takes_batches(cfg.name):
            done = list(zip(messages, handle_batch(cfg, messages), strict=True))
        else:
            done = [(m, handle_one(cfg, m)) for m in messages]
        settle(cfg, done)
        for _, o in done:
            result.outcomes[o.result] = result.outcomes.get(o.result, 0) + 1
    return result
