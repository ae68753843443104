"""Holding the relay back while the consumers are behind: for a local emulator, off by default.

Neither local emulator is flat at depth: ministack's ReceiveMessage looks at every message of the
queue and its DeleteMessageBatch copies the queue once per entry, so a message costs it about
twice as much at 5,000 deep as at a few hundred, and ten times as much at 40,000 (moto rescans
too). A relay that publishes a daily run's events as fast as it can digs the consumers' queues
in, and the emulator, on the same cores as everything else, then slows every consumer down.
Real SQS is flat: there this is off (``OUTBOX_RELAY_HOLD_DEPTH`` 0, production's default).

With ``OUTBOX_RELAY_HOLD_DEPTH`` set (``make run``, the soak and most benchmarks: settings.dev),
the relay looks, before a pass that follows a full one (a backlog: a trickle of events is never
held), at the queues the bulk topics feed (every event queue but the alerts' own); while one is
deeper than that, it waits, publishing alerts meanwhile, for at most
``OUTBOX_RELAY_HOLD_MAX_SECONDS``. The events wait in the outbox, where a backlog costs an index
scan whatever its size; a queue reaches the depth plus one pass at most (depths are read afresh
after every pass that published, otherwise at most every ``HOLD_LOOK_SECONDS``).

A hold that runs out (the queue did not drain: its consumer is stopped or far behind) publishes one
pass anyway, logs a warning naming the queue, and ends the relay task: the rest waits for the
next kick or the beat sweep, each a pass after a hold. So a stopped consumer slows the relay to
about a pass per sweep, never stops it, and no relay task runs long (a worker stopping with a
backlog is not killed mid-pass). The outbox then lags, and its alert and ``messaging_status``
say that the relay holds and for which queue. A depth that cannot be read holds nothing.
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

UNREADABLE_BACKOFF_SECONDS = 5.0  # depths not read again for this long after they could not be

_seen_lock = threading.Lock()
_seen: tuple[float, str, int] = (float("-inf"), "", 0)  # (when, deepest queue, its depth)
_unreadable_logged = float("-inf")


def bulk_queues() -> list[str]:
    """The event queues that bulk topics feed: every one subscribed to a topic other than alerts."""
    built = topology.build()
    alerts = topology.topic_name(topology.ALERTS)
    return sorted({s.queue for s in built.subscriptions if s.topic != alerts})


def forget() -> None:
    """Read the depths afresh at the next look (a pass just published)."""
    global _seen
    with _seen_lock:
        _seen = (float("-inf"), "", 0)


def deepest() -> tuple[str, int]:
    """The deepest bulk queue and its depth (read at most every HOLD_LOOK_SECONDS). A queue whose
    depth cannot be read is left out (a warning a minute at most); if none can be read, ("", 0)
    for UNREADABLE_BACKOFF_SECONDS."""
    global _seen, _unreadable_logged
    with _seen_lock:
        at, name, depth = _seen
        if time.monotonic() - at < HOLD_LOOK_SECONDS:
            return name, depth
        depths, errors = [], []
        for queue in bulk_queues():
            try:
                depths.append((aws.queue_depth(queue), queue))
            except Exception as exc:  # noqa: BLE001 - a depth unknown is no reason to stop publishing
                errors.append(f"{queue}: {exc}")
        if errors and time.monotonic() - _unreadable_logged >= 60:
            _unreadable_logged = time.monotonic()
            logger.warning(
                "relay hold: could not read queue depths, not holding for them: %s", "; ".join(errors)
            )
        depth, name = max(depths, default=(0, ""))
        at = time.monotonic() + (UNREADABLE_BACKOFF_SECONDS if not depths else 0.0)
        _seen = (at, name, depth)
        return name, depth


def wait_for_room(*, deadline: float, publish_alerts: Callable[[], object]) -> bool:
    """Wait while a bulk queue is deeper than ``OUTBOX_RELAY_HOLD_DEPTH`` (at most
    ``OUTBOX_RELAY_HOLD_MAX_SECONDS``, and not past ``deadline``, a monotonic time), calling
    ``publish_alerts()`` between looks. True when the hold ran out with the queue still deep (the
    caller publishes one pass and stops); False when there is room (or the setting is off)."""
    limit = settings.OUTBOX_RELAY_HOLD_DEPTH
    if limit <= 0:
        return False
    start = time.monotonic()
    until = min(deadline, start + settings.OUTBOX_RELAY_HOLD_MAX_SECONDS)
    while True:
        name, depth = deepest()
        if depth <= limit:
            return False
        if time.monotonic() >= until:
            if time.monotonic() < deadline:  # the hold's own time ran out, not the relay's
                _warn_held(time.monotonic() - start, name, depth, limit)
            return True
        publish_alerts()
        time.sleep(HOLD_STEP_SECONDS)


def _warn_held(seconds: float, name: str, depth: int, limit: int) -> None:
    logger.warning(
        "relay held %.0f s: %s is %d deep (OUTBOX_RELAY_HOLD_DEPTH %d); publishing one pass and "
        "leaving the rest to the next kick or sweep. Its consumer is behind or stopped: "
        "messaging_status shows the queues",
        seconds,
        name,
        depth,
        limit,
    )
