"""How much does recording an event add to a domain transaction? (target: <= 1 ms median)

Same transaction (one domain row insert) with and without ``record_event``,
interleaved in one run on PostgreSQL so machine noise hits both alike.
"""

from __future__ import annotations

import uuid

import _env  # noqa: F401  (sets up PostgreSQL and moto)
from django.db import transaction
from django.utils import timezone

from events import contracts
from events.models import Heartbeat, OutboxEvent
from events.publishing import record_event

N = 2000
DATA = _env.AGREEMENT_DATA


def without_event() -> None:
    with transaction.atomic():
        Heartbeat.objects.create(name=uuid.uuid4().hex, beat_at=timezone.now())


def with_event() -> None:
    with transaction.atomic():
        hb = Heartbeat.objects.create(name=uuid.uuid4().hex, beat_at=timezone.now())
        record_event(
            sender=Heartbeat,
            type=contracts.AGREEMENT_CREATED,
            aggregate_id=hb.name,
            aggregate_version=1,
            data={**DATA, "agreement_id": hb.name},
        )


def main() -> None:
    for _ in range(200):  # warm up connections, caches, compiled validators
        without_event()
        with_event()
    base, withe = [], []
    for _ in range(N):
        base.append(_env.timed(without_event))
        withe.append(_env.timed(with_event))
    b, w = _env.median_ms(base), _env.median_ms(withe)
    _env.report(
        [
            ("transactions each", str(N)),
            ("median without event", f"{b:.3f} ms"),
            ("median with event", f"{w:.3f} ms"),
            ("added by the event", f"{w - b:.3f} ms (target <= 1 ms)"),
            ("ratio with/without", f"{w / b:.2f}x"),
        ]
    )
    Heartbeat.objects.all().delete()
    OutboxEvent.objects.all().delete()


if __name__ == "__main__":
    main()
