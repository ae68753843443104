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


@transaction.atomic
def projection_apply(*, event: Event) -> BillableAgreement:
    """Fold one agreement event into the projection, and correct passed periods it changes.

    Order-insensitive and idempotent: each event's contribution is stored under its
    aggregate_version, so any order and any duplicates give the same row. A cancel (or price
    change, pause...) arriving before ``agreement.created`` is kept and applies once the
    agreement is known.
    """
    data = event.data
    row, _ = BillableAgreement.objects.select_for_update().get_or_create(agreement_id=data["agreement_id"])
    v = event.aggregate_version
    affected: date | None = None  # periods starting from here may owe something else now
    if event.type == contracts.AGREEMENT_CREATED:
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
    row.save()
    if affected is not None and row.created_seen and row.next_period_index > 0:
        if row.next_period_start is None or affected < row.next_period_start:
            agreement_reconcile(row=row, from_date=affected)
    return row
