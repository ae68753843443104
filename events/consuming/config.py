"""Every event consumer's configuration: push or pull, its queues, its pace (settings.EVENT_CONSUMERS)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings

from .. import topology

logger = logging.getLogger(__name__)

MAX_GATHER_SECONDS = 5.0  # a trickle waits at most this long for company


@dataclass(frozen=True)
class ConsumerConfig:
    name: str
    mode: str  # push | pull
    queue: str  # full queue name
    dlq: str
    batch_size: int  # pull: max messages per run
    interval_seconds: int  # pull: how often the run is scheduled
    concurrency: int  # push: handler threads
    pollers: int = 1  # push: threads receiving from the queue (and settling what they received)
    gather_seconds: float = 0.0  # push: after a thin long poll (under half it asked), wait this long


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
        raw = options.get("gather_seconds", 0.0)
        try:  # JSON's true is not a number of seconds, though float() takes it as 1
            gather = float("nan") if isinstance(raw, bool) else float(raw)
        except (TypeError, ValueError):
            gather = float("nan")  # refused below, with the setting named
        if not 0 <= gather <= MAX_GATHER_SECONDS:  # NaN and infinity too: a poller that never receives
            raise ValueError(
                f"EVENT_CONSUMERS[{spec.consumer!r}]['gather_seconds'] must be 0 to "
                f"{MAX_GATHER_SECONDS:g} seconds, not {raw!r}"
            )
        configs[spec.consumer] = ConsumerConfig(
            name=spec.consumer,
            mode=mode,
            queue=spec.name,
            dlq=spec.dlq_name,
            batch_size=int(options["batch_size"]),
            interval_seconds=int(options["interval_seconds"]),
            concurrency=int(options["concurrency"]),
            pollers=max(1, int(options.get("pollers", 1))),
            gather_seconds=gather,
        )
    return configs


def push_consumer_names(option: str | None = None) -> list[str]:
    """Which push consumers this worker runs: the --event-consumers option, else the setting; a
    consumer named there but switched to pull is left to beat (its one reader)."""
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
    pulled = [n for n in names if configs[n].mode != "push"]
    if pulled:
        logger.info("event consumer(s) %s in pull mode: beat's events.pull_consumer reads them", pulled)
    return [n for n in names if n not in pulled]
