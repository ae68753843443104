"""How one consumer accounts for one event, in one place: the states, their SQL, the report.

An event its subscriptions deliver is, for that consumer, in exactly one state, decided in this
order:

- ``handled``: a processed-event row (written in the handler's own transaction);
- ``dead_lettered``: a consumer-failure row (poison sent to the DLQ, or a handler that failed and
  retries until the DLQ takes it): the DLQ's tools and alerts own it from there;
- ``in_flight``: published less than the grace period ago (it may still be queued);
- ``resent``: re-sent by the audit less than the grace period ago (in flight again);
- ``missing``: none of these. Lost: re-sent by a repairing pass.

Events not published yet are not audited at all: they are the relay's to send.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..models import ConsumerFailure, DeliveryResend, ProcessedEvent


class AuditError(RuntimeError):
    """An audit that cannot be carried out, with what to do about it (unknown consumer, a
    producer's events API refusing the token or unreachable, the consumer's queue missing)."""


HANDLED, DEAD_LETTERED, IN_FLIGHT, RESENT, MISSING = (
    "handled",
    "dead_lettered",
    "in_flight",
    "resent",
    "missing",
)
STATES = (HANDLED, DEAD_LETTERED, IN_FLIGHT, RESENT, MISSING)
UNACCOUNTED = (IN_FLIGHT, RESENT, MISSING)

# For a relation ``e`` of events (``e.id``, ``e.published_at``); parameters %(consumer)s and
# %(horizon)s (events published, or re-sent, before the horizon are past the grace period).
PROCESSED_JOIN = (
    f"LEFT JOIN {ProcessedEvent._meta.db_table} p ON p.consumer = %(consumer)s AND p.event_id = e.id"
)
NOT_HANDLED = (
    f"NOT EXISTS (SELECT 1 FROM {ProcessedEvent._meta.db_table} p "
    "WHERE p.consumer = %(consumer)s AND p.event_id = e.id)"
)
RESEND_JOIN = (
    f"LEFT JOIN {DeliveryResend._meta.db_table} r ON r.consumer = %(consumer)s AND r.event_id = e.id"
)


def unhandled_state_sql(fresh: str) -> str:
    """The state of an event ``e`` its consumer has not handled, as a SQL expression (joined with
    ``RESEND_JOIN``); ``fresh`` says it was published within the grace period. The failure rows
    (few) are read once per statement, as a hashed subplan."""
    failures = ConsumerFailure._meta.db_table
    return (
        f"CASE WHEN e.id::text IN (SELECT f.event_id FROM {failures} f WHERE f.consumer = %(consumer)s) "
        f"THEN '{DEAD_LETTERED}' "
        f"WHEN {fresh} THEN '{IN_FLIGHT}' "
        f"WHEN r.resent_at >= %(horizon)s THEN '{RESENT}' "
        f"ELSE '{MISSING}' END"
    )


def state_sql(fresh: str) -> str:
    """The state of any event ``e`` (joined with ``PROCESSED_JOIN`` and ``RESEND_JOIN``)."""
    return f"CASE WHEN p.event_id IS NOT NULL THEN '{HANDLED}' ELSE {unhandled_state_sql(fresh)} END"


@dataclass
class Counts:
    """One event type's events in the audited range, by state."""

    handled: int = 0
    dead_lettered: int = 0
    in_flight: int = 0
    resent: int = 0
    missing: int = 0

    @property
    def published(self) -> int:
        return self.handled + self.dead_lettered + self.in_flight + self.resent + self.missing

    def add(self, state: str, n: int) -> None:
        setattr(self, state, getattr(self, state) + n)

    def as_dict(self) -> dict[str, int]:
        return {"published": self.published, **{s: getattr(self, s) for s in STATES}}


@dataclass
class Finding:
    """What one source said about a consumer's events: counts per type, the oldest events not
    accounted for, and the missing ones to re-send (up to the pass's budget, oldest first)."""

    counts: dict[str, Counts] = field(default_factory=dict)
    oldest_missing: datetime | None = None  # occurred_at
    oldest_unaccounted: datetime | None = None  # published_at (or an earlier time: never later)
    # oldest first: event ids (in this database) or unsaved OutboxEvent rows (from another's API)
    to_resend: list[Any] = field(default_factory=list)

    def add(self, event_type: str, state: str, n: int) -> None:
        self.counts.setdefault(event_type, Counts()).add(state, n)

    def note_unaccounted(
        self, state: str, published_at: datetime | None, occurred_at: datetime | None
    ) -> None:
        if state == MISSING and occurred_at is not None:
            self.oldest_missing = _earliest(self.oldest_missing, occurred_at)
        if state in UNACCOUNTED and published_at is not None:
            self.oldest_unaccounted = _earliest(self.oldest_unaccounted, published_at)

    def merge(self, other: Finding) -> None:
        for event_type, counts in other.counts.items():
            for state in STATES:
                self.add(event_type, state, getattr(counts, state))
        self.oldest_missing = _earliest(self.oldest_missing, other.oldest_missing)
        self.oldest_unaccounted = _earliest(self.oldest_unaccounted, other.oldest_unaccounted)
        self.to_resend += other.to_resend


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


@dataclass
class AuditReport:
    """One pass over one consumer: what it found, what it re-sent, where its watermark went."""

    consumer: str
    dry_run: bool = False
    repair: bool = False
    horizon: datetime | None = None  # published before this: past the grace period
    audited_from: datetime | None = None  # published_at lower bound; None: the whole event store
    since: datetime | None = None  # occurred_at lower bound (--since)
    sources: list[str] = field(default_factory=list)
    finding: Finding = field(default_factory=Finding)
    not_audited: tuple[str, ...] = ()
    resent: int = 0
    resend_failed: int = 0
    resend_errors: list[str] = field(default_factory=list)
    watermark_before: datetime | None = None
    watermark_after: datetime | None = None
    alert: str | None = None
    skipped: str = ""  # why this pass did nothing
    seconds: float = 0.0

    @property
    def counts(self) -> dict[str, Counts]:
        return dict(sorted(self.finding.counts.items()))

    @property
    def totals(self) -> Counts:
        total = Counts()
        for counts in self.finding.counts.values():
            for state in STATES:
                total.add(state, getattr(counts, state))
        return total

    @property
    def missing_types(self) -> list[str]:
        return sorted(t for t, c in self.finding.counts.items() if c.missing)

    @property
    def gap(self) -> bool:
        """Events lost, or re-sent and not handled yet: the gap is open."""
        totals = self.totals
        return bool(totals.missing or totals.resent)
