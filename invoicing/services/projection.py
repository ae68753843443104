"""invoicing's projection of agreements, built only from agreement events (order-insensitive).

Each event's contribution is stored under its aggregate_version, so any order and any number
of deliveries give the same row. When a contribution changes what a period the daily run has
already passed owes (a pause, resume, cancel or price change delivered late), the agreement is
reconciled in the same transaction (services/corrections.py).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from django.db import transaction

from core.bulk import insert_rows, update_rows
from events import contracts
from events.consuming import Event

from ..models import BillableAgreement
from .corrections import agreement_reconcile


def _with_entry(entries: list[list[Any]], entry: list[Any], key_index: int, sort: Any) -> list[list[Any]]:
    """Add ``entry`` unless one with the same version (at ``key_index``) is there; keep canonical order."""
    if any(e[key_index] == entry[key_index] for e in entries):
        return entries
    return sorted([*entries, entry], key=sort)


def _price_order(e: list[Any]) -> tuple[str, int]:
    return (e[0], e[2])


def _by_version(e: list[Any]) -> Any:
    return e[0]


# What folding events changes on a row (the daily run's cursor only when ``agreement.created``
# first arrives); the rest of the row is the daily run's and operators'.
FOLDED_FIELDS = (
    "external_ref",
    "created_seen",
    "customer",
    "description",
    "currency",
    "interval",
    "interval_count",
    "start_date",
    "end_date",
    "next_period_index",
    "next_period_start",
    "prices",
    "toggles",
    "cancellations",
    "last_version",
    "updated_at",
)


@transaction.atomic(savepoint=False)
def projection_apply(*, event: Event) -> BillableAgreement:
    """Fold one agreement event into the projection, and correct passed periods it changes.

    Order-insensitive and idempotent: each event's contribution is stored under its
    aggregate_version, so any order and any duplicates give the same row. A cancel (or price
    change, pause...) arriving before ``agreement.created`` is kept and applies once the
    agreement is known.
    """
    [row] = projection_apply_batch(events=[event])
    return row


@transaction.atomic(savepoint=False)
def projection_apply_batch(*, events: list[Event]) -> list[BillableAgreement]:
    """``projection_apply`` for each event in turn, in one transaction and a few statements.

    Agreements without a row yet (``agreement.created`` first seen, or any event before it) get
    theirs inserted already folded: one ``INSERT ... ON CONFLICT DO NOTHING`` for all of them (no
    period of theirs is billed, so nothing to correct). The others, and any another transaction
    inserted meanwhile, are locked together in primary-key order (the daily run's order),
    folded in memory in the events' order (a correction runs right after the event that calls
    for it, as it would alone), then written in one UPDATE of the fields events change (the
    daily run's and operators' fields are left as they are). Returns the rows, by agreement id.
    """
    ids = sorted({e.data["agreement_id"] for e in events})
    fresh = {a: BillableAgreement(agreement_id=a) for a in ids}
    for event in events:
        _fold(fresh[event.data["agreement_id"]], event)
    inserted = insert_rows(list(fresh.values()), ignore_conflicts=True, returning=("id", "agreement_id"))
    rows: dict[str, BillableAgreement] = {}
    for pk, agreement_id in inserted:
        rows[agreement_id] = fresh[agreement_id]
        rows[agreement_id].pk = pk
    existing = [a for a in ids if a not in rows]
    if existing:
        locked = {
            r.agreement_id: r
            for r in BillableAgreement.objects.select_for_update()
            .filter(agreement_id__in=existing)
            .order_by("pk")
        }
        for event in events:
            row = locked.get(event.data["agreement_id"])
            if row is None:
                continue  # inserted above
            affected = _fold(row, event)
            if affected is not None and _needs_correction(row, affected):
                row.save(update_fields=FOLDED_FIELDS)  # what the correction reads
                agreement_reconcile(row=row, from_date=affected)
        update_rows(list(locked.values()), FOLDED_FIELDS)
        rows.update(locked)
    return [rows[a] for a in ids]


def _fold(row: BillableAgreement, event: Event) -> date | None:
    """Add ``event``'s contribution to ``row`` (in memory); the first date whose periods may now
    owe something else, if any."""
    data = event.data
    v = event.aggregate_version
    affected: date | None = None  # periods starting from here may owe something else now
    if event.type == contracts.AGREEMENT_CREATED:
        # Only v2 names the agreement (v1 events: the store's, their replays). The ref never
        # changes, so whichever event brings it first fills it, in any order: a v2 delivered after
        # a v1 (a re-announcement) completes a row the v1 made.
        if not row.external_ref and data.get("external_ref"):
            row.external_ref = data["external_ref"]
        if not row.created_seen:
            row.created_seen = True
            row.customer = data["customer"]
            row.description = data["description"]
            row.currency = data["currency"]
            row.interval = data["interval"]
            row.interval_count = data["interval_count"]
            row.start_date = date.fromisoformat(data["start_date"])
            row.end_date = date.fromisoformat(data["end_date"]) if data["end_date"] else None
            row.next_period_index = 0
            row.next_period_start = row.start_date
        row.prices = _with_entry(row.prices, [data["start_date"], data["amount_minor"], v], 2, _price_order)
    elif event.type == contracts.AGREEMENT_PRICE_CHANGED:
        entries = row.prices
        row.prices = _with_entry(entries, [data["effective_from"], data["amount_minor"], v], 2, _price_order)
        affected = date.fromisoformat(data["effective_from"]) if row.prices is not entries else None
    elif event.type in (contracts.AGREEMENT_PAUSED, contracts.AGREEMENT_RESUMED):
        kind, when = (
            ("pause", data["paused_from"]) if "paused_from" in data else ("resume", data["resumed_from"])
        )
        entries = row.toggles
        row.toggles = _with_entry(entries, [v, kind, when], 0, _by_version)
        affected = date.fromisoformat(when) if row.toggles is not entries else None
    elif event.type == contracts.AGREEMENT_CANCELLED:
        entries = row.cancellations
        row.cancellations = _with_entry(entries, [v, data["effective_date"]], 0, _by_version)
        if row.cancellations is not entries:
            dates = [data["effective_date"], *([entries[-1][1]] if entries else [])]
            affected = date.fromisoformat(min(dates))
    else:
        raise ValueError(f"not an agreement event: {event.type}")
    row.last_version = max(row.last_version, v)
    return affected


def _needs_correction(row: BillableAgreement, affected: date | None) -> bool:
    if affected is None or not row.created_seen or row.next_period_index == 0:
        return False
    return row.next_period_start is None or affected < row.next_period_start
