"""Holding the relay back while the consumers are behind: for a local emulator, off by default.

Neither local emulator is flat at depth: ministack's ReceiveMessage looks at every message of the
queue and its DeleteMessageBatch copies the queue once per entry, so a message costs it about
twice as much at 5,000 deep as at a few hundred, and ten times as much at 40,000 (moto rescans
too). A relay that publishes a daily run's events as fast as it can digs the consumers' queues
in, and the emulator, on the same cores as everything else, then slows every consumer down.
Real SQS is flat: there this is off (``OUTBOX_RELAY_HOLD_DEPTH`` 0, production's default).

With ``OUTBOX_RELAY_HOLD_DEPTH`` set (``make run`` and the benchmarks: settings.dev), the relay
looks, before each pass of bulk events, at the queues subscribed to the bulk topics (every event
queue but the alerts' own); while one is deeper than that, it waits, publishing alerts meanwhile,
for at most ``OUTBOX_RELAY_HOLD_MAX_SECONDS`` a pass. The events wait in the outbox, where a
backlog costs an index scan whatever its size. A consumer that stopped therefore slows the relay
to one pass per that many seconds (logged, and the outbox-lag alert says so in time), never
stops it. Depths are read once per ``HOLD_LOOK_SECONDS`` at most.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from django.conf import settings

from .. import topology
from ..topology import aws

logger = logging.getLogger(__name__)

HOLD_LOOK_SECONDS = 0.2  # depths read at most this often
HOLD_STEP_SECONDS = 0.1  # how long a held relay sleeps between looks

_seen_lock = threading.Lock()
_seen: tuple[float, str, int] = (float("-inf"), "", 0)  # (when, deepest queue, its depth)


def bulk_queues() -> list[str]:
    """The event queues that bulk topics feed: every one subscribed to a topic other than alerts."""
    built = topology.build()
    alerts = topology.topic_name(topology.ALERTS)
    return sorted({s.queue for s in built.subscriptions if s.topic != alerts})


def deepest() -> tuple[str, int]:
    """The deepest bulk queue and its depth (read at most every HOLD_LOOK_SECONDS)."""
    global _seen
    with _seen_lock:
        at, name, depth = _seen
        if time.monotonic() - at < HOLD_LOOK_SECONDS:
            return name, depth
        name, depth = max(((q, aws.queue_depth(q)) for q in bulk_queues()), key=lambda qd: qd[1])
        _seen = (time.monotonic(), name, depth)
        return name, depth


def wait_for_room(*, deadline: float, publish_alerts: Callable[[], object]) -> float:
    """Wait while a bulk queue is deeper than ``OUTBOX_RELAY_HOLD_DEPTH`` (at most
    ``OUTBOX_RELAY_HOLD_MAX_SECONDS``, and not past ``deadline``, a monotonic time), calling
    ``publish_alerts()`` between looks. Returns the seconds it waited (0 when off or shallow). A
    queue that cannot be read holds nothing: the relay goes on as if the setting were off."""
    limit = settings.OUTBOX_RELAY_HOLD_DEPTH
    if limit <= 0:
        return 0.0
    start = time.monotonic()
    until = min(deadline, start + settings.OUTBOX_RELAY_HOLD_MAX_SECONDS)
    while True:
        try:
            name, depth = deepest()
        except Exception as exc:  # noqa: BLE001 - a depth unknown is no reason to stop publishing
            logger.debug("relay hold: could not read queue depths (%s): not holding", exc)
            return time.monotonic() - start
        if depth <= limit:
            return time.monotonic() - start
        if time.monotonic() >= until:
            logger.warning(
                "relay held %.0f s: %s is %d deep (OUTBOX_RELAY_HOLD_DEPTH %d); publishing a pass anyway. "
                "Its consumer is behind or stopped: messaging_status shows the queues",
                time.monotonic() - start,
                name,
                depth,
                limit,
            )
            return time.monotonic() - start
        publish_alerts()
        time.sleep(HOLD_STEP_SECONDS)
