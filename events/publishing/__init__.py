"""Publishing: a domain change and its event commit together (the transactional outbox, written
in the service's transaction through the ``domain_event`` signal); the relay publishes committed
rows to their producer's SNS topic, signed; the kicker asks for a relay run after each commit;
rows are kept as the event store (``store``), re-sent on demand (``replay``) and answered through
the events API (``api``).

Services record events with ``record_event``, ``record_events``, ``record_change`` and ``record_changes``;
one that gives an event its own time reads it with ``recording_now``.
"""

from .outbox import (
    NewEvent,
    OutboxError,
    record_change,
    record_changes,
    record_event,
    record_events,
    recording_now,
)

__all__ = [
    "NewEvent",
    "OutboxError",
    "record_change",
    "record_changes",
    "record_event",
    "record_events",
    "recording_now",
]
