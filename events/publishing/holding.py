"""Holding the relay back while the consumers are behind: for a local emulator, off by default.

Neither local emulator is flat at depth: ministack's ReceiveMessage looks at every message of the
queue and its DeleteMessageBatch copies the queue once per entry, so a message costs it about
twice as much at 5,000 deep as at a few hundred, and ten times as much at 40,000 (moto rescans
too). A relay that publishes a daily run's events as fast as it can digs the consumers' queues
in, and the emulator, on the same cores as everything else, then slows every consumer down.
Real SQS is flat: there this is off (``OUTBOX_RELAY_HOLD_DEPTH`` 0, production's default).

With ``OUTBOX_RELAY_HOLD_DEPTH`` set (``make run``, the soak and most benchmarks: settings.dev),
the relay looks, before a pass that follows a full one (a backlog: a trickle of events is never
held), at the queues the bulk topics feed (every event queue but the alerts' own). A topic that
feeds a queue deeper than that is held: the pass leaves its events in the outbox and publishes
the other topics' (alerts are never held; a claim reads each topic's rows by the index, so a
held backlog costs the others nothing). Once only held topics' events are left, the relay waits,
for at most ``OUTBOX_RELAY_HOLD_MAX_SECONDS``, with a pass of the others' (alerts among them)
every ``HOLD_STEP_SECONDS``, looking at the depths every ``HOLD_LOOK_SECONDS`` meanwhile: a held
topic goes on within a look of its queue's falling back to the depth, before the consumer has run
dry (a consumer takes 300 messages in about 0.2 s). A hold past ``HOLD_PATIENCE_SECONDS`` whose
deep queues have not got shallower since (a stopped consumer) looks every
``HOLD_SLOW_LOOK_SECONDS`` instead. A queue reaches the depth plus one pass at most: depths are
read afresh after every pass that published (other topics' events too), otherwise at most every
look; after a read that found no depth at all, not for UNREADABLE_BACKOFF_SECONDS (while the
endpoint is down or refuses the reads nothing is held, so for up to that long after it comes back
a backlog goes out unheld). So a stopped payments consumer holds the invoicing topic that feeds its
queue, and agreements and charges still reach invoicing at full speed.

A hold that runs out (the queue did not drain: its consumer is stopped or far behind) publishes one
pass of the held topics' events anyway and logs a warning naming the queue. If other topics' events
are due the relay goes on with them (holding again); otherwise it ends the relay task, and the rest
waits for the next kick or the beat sweep, each a pass after a hold. So a stopped consumer slows
the topics that feed it to about a pass per hold or sweep, never stops them, and no relay task
waits long for it (a worker stopping with a backlog is not killed mid-pass). The outbox then lags,
and its alert and ``messaging_status`` say that the relay holds, which topics and for which queue.
A depth that cannot be read holds nothing.
"""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings

from .. import topology
from ..topology import aws

logger = logging.getLogger(__name__)

# Depths read at most this often, and looked at this often while a held relay waits (``room``).
# Read every 0.2 s, and not at all during the step's sleep, a held queue of 300 ran dry before the
# relay noticed it had room (figures: README, bench/pipeline.py's row).
HOLD_LOOK_SECONDS = 0.05
# A hold that lasted this long, its deep queues no shallower since, is for a consumer stopped:
# the depths are then looked at every HOLD_SLOW_LOOK_SECONDS. On ministack a look reads every
# message of the queue (6 ms at 40,000 deep), and a stopped consumer's relay, kicked again and
# again, would look all the time.
HOLD_PATIENCE_SECONDS = 1.0
HOLD_SLOW_LOOK_SECONDS = 0.25
HOLD_STEP_SECONDS = 0.1  # how long a held relay waits between passes of the other topics

UNREADABLE_BACKOFF_SECONDS = 5.0  # depths not read again for this long after they could not be

_seen_lock = threading.Lock()
_seen: tuple[float, dict[str, int]] = (float("-inf"), {})  # (when, depth of each bulk queue read)
_unreadable_logged = float("-inf")


def bulk_queues() -> list[str]:
    """The event queues that bulk topics feed: every one subscribed to a topic other than alerts."""
    built = topology.build()
    alerts = topology.topic_name(topology.ALERTS)
    return sorted({s.queue for s in built.subscriptions if s.topic != alerts})


def forget() -> None:
    """Read the depths afresh at the next look (a pass just published), unless none could be read
    last time: then not before UNREADABLE_BACKOFF_SECONDS are up (every pass that publishes would
    otherwise try them all again, each waiting on the endpoint's answer or timeout)."""
    global _seen
    with _seen_lock:
        if _seen[0] <= time.monotonic():
            _seen = (float("-inf"), {})


def reset() -> None:
    """Forget every depth read, and a backoff after unreadable ones (tests)."""
    global _seen
    with _seen_lock:
        _seen = (float("-inf"), {})


def depths(max_age: float | None = None) -> dict[str, int]:
    """The depth of each bulk queue (read at most every ``max_age`` seconds, HOLD_LOOK_SECONDS by
    default). A queue whose depth cannot be read is left out (a warning a minute at most); if none
    can be read, none for UNREADABLE_BACKOFF_SECONDS."""
    global _seen, _unreadable_logged
    with _seen_lock:
        at, seen = _seen
        if time.monotonic() - at < (HOLD_LOOK_SECONDS if max_age is None else max_age):
            return seen
        read, errors = {}, []
        for queue in bulk_queues():
            try:
                read[queue] = aws.queue_depth(queue)
            except Exception as exc:  # noqa: BLE001 - a depth unknown is no reason to stop publishing
                errors.append(f"{queue}: {exc}")
        if errors and time.monotonic() - _unreadable_logged >= 60:
            _unreadable_logged = time.monotonic()
            logger.warning(
                "relay hold: could not read queue depths, not holding for them: %s", "; ".join(errors)
            )
        _seen = (time.monotonic() + (UNREADABLE_BACKOFF_SECONDS if not read else 0.0), read)
        return read


def deepest() -> tuple[str, int]:
    """The deepest bulk queue and its depth (("", 0) if none could be read)."""
    depth, name = max(((d, q) for q, d in depths().items()), default=(0, ""))
    return name, depth


def held_producers(max_age: float | None = None) -> frozenset[str]:
    """The producers whose topic feeds a bulk queue deeper than ``OUTBOX_RELAY_HOLD_DEPTH`` (none
    when the setting is off); never the alerts'. Depths at most ``max_age`` old (``depths``)."""
    limit = settings.OUTBOX_RELAY_HOLD_DEPTH
    if limit <= 0:
        return frozenset()
    deep = [queue for queue, depth in depths(max_age).items() if depth > limit]
    return frozenset(p for queue in deep for p in feeding(queue))


def feeding(queue: str) -> list[str]:
    """The producers (topics) a hold keeps back while ``queue`` is deep: those whose topic feeds
    it, never the alerts'."""
    topics = {s.topic for s in topology.build().subscriptions if s.queue == queue}
    return [p for p in topology.TOPICS if p != topology.ALERTS and topology.topic_name(p) in topics]


class Hold:
    """One relay lane's hold (relay.py's ``_passes``; a relay that may hold runs one lane): from
    the first pass that left held topics' events behind until none are left, or it ran out."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline  # the relay's own (monotonic)
        self.reset()

    def reset(self) -> None:
        self.since: float | None = None
        self._read_at: float | None = None  # when the depths last judged were read
        self._deep: int | None = None  # the deep queues' messages at the first judgement
        self._stuck = False

    def look(self) -> float:
        """How old the depths may be: HOLD_LOOK_SECONDS; HOLD_SLOW_LOOK_SECONDS once the hold has
        lasted HOLD_PATIENCE_SECONDS while its deep queues are no shallower than when it had (their
        consumers are not taking messages)."""
        if self.since is None or time.monotonic() - self.since < HOLD_PATIENCE_SECONDS:
            return HOLD_LOOK_SECONDS
        read_at, seen = _seen
        if read_at != self._read_at:  # depths read since the last judgement
            deep = sum(d for d in seen.values() if d > settings.OUTBOX_RELAY_HOLD_DEPTH)
            self._deep = deep if self._deep is None else self._deep
            self._read_at, self._stuck = read_at, deep >= self._deep
        return HOLD_SLOW_LOOK_SECONDS if self._stuck else HOLD_LOOK_SECONDS

    def ran_out(self, *, wait: bool, held: frozenset[str]) -> bool:
        """Held topics' events wait: False, after a wait of up to ``HOLD_STEP_SECONDS`` if ``wait``
        (only theirs are left; the caller's next pass publishes what the other topics recorded
        meanwhile, alerts among them), cut short once one of the ``held`` producers is held no
        longer (its queue drained: ``room``). True once the hold has lasted
        ``OUTBOX_RELAY_HOLD_MAX_SECONDS`` (warned) or the relay's deadline has come: the caller
        publishes one pass of the held topics' events."""
        now = time.monotonic()
        if self.since is None:
            self.since = now
        until = min(self.deadline, self.since + settings.OUTBOX_RELAY_HOLD_MAX_SECONDS)
        if now < until:
            if wait:
                room(held, min(HOLD_STEP_SECONDS, until - now), look=self.look())
            return False
        if now < self.deadline:  # the hold's own time ran out, not the relay's
            _warn_held(now - self.since, *deepest(), settings.OUTBOX_RELAY_HOLD_DEPTH)
        return True


def room(held: frozenset[str], seconds: float, *, look: float) -> None:
    """Wait up to ``seconds``, looking at the depths each time they are ``look`` old (not during
    UNREADABLE_BACKOFF_SECONDS): back as soon as a producer of ``held`` is held no longer (the
    queue it feeds fell back to the depth)."""
    end = time.monotonic() + seconds
    while (now := time.monotonic()) < end:
        time.sleep(max(0.0, min(end, _seen[0] + look) - now))  # until the next read
        if not held <= held_producers(look):
            return


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
