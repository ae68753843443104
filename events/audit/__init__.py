"""The delivery audit: every consumer proves it has every event, and gets back what it lost.

For each consumer and each event type its subscriptions deliver (``subscriptions``: the declared
topology, filter policies included), the events its producers published (``local``: the event
store in this database; ``remote``: another service's ``GET /api/events/`` with a token) are
compared with what the consumer accounted for (``accounting``): handled (a processed-event row),
dead-lettered (a consumer-failure row), or in flight (published, or re-sent by the audit, less
than ``DELIVERY_AUDIT_GRACE_SECONDS`` ago). Everything else is missing: ``backfill`` re-sends it
to that consumer's queue only, signed, at most ``DELIVERY_AUDIT_MAX_RESEND`` per pass, and
``passes`` raises one ``alert.delivery_gap`` per gap and ``alert.resolved`` once it is closed.
A watermark per consumer (``DeliveryAudit``) keeps each pass to new history. The audit never
applies an effect itself: the consumer's handlers do, and they are idempotent.

Entry points: ``delivery_audit_run`` (service), the ``events.delivery_audit`` beat task, the
``events_audit`` command, ``audit_summaries`` (the Messaging page).
"""

from .accounting import AuditReport, Counts
from .passes import AuditError, audited_consumers, delivery_audit_all, delivery_audit_run
from .selectors import AuditSummary, audit_summaries

__all__ = [
    "AuditError",
    "AuditReport",
    "AuditSummary",
    "Counts",
    "audit_summaries",
    "audited_consumers",
    "delivery_audit_all",
    "delivery_audit_run",
]
