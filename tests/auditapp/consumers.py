"""The "audit" test consumer. Behaviour is chosen by the aggregate id:

- ``fail-always-*``: the handler always raises;
- ``flaky-N-*``: raises the first N times in this process, then succeeds;
- ``slow-MS-*``: sleeps MS milliseconds before writing;
- ``dbsleep-S-*``: makes the database sleep S seconds (a handler stuck on a statement or a lock);
- anything else: writes one AuditEntry.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

from django.db import connection

from events.consuming import Event, handles

from .models import AuditEntry

attempts: Counter[str] = Counter()
FIXED: set[str] = set()  # keys whose failure a test has "fixed"
_lock = threading.Lock()


@handles("agreement.created", consumer="audit")
@handles("agreement.cancelled", consumer="audit")
def audit_record(event: Event) -> None:
    """Append an audit row. Order-insensitive (rows are independent); idempotency is the backbone's."""
    key = event.aggregate_id
    with _lock:
        attempts[key] += 1
        n = attempts[key]
    if key.startswith("fail-always") and key not in FIXED:
        raise RuntimeError(f"audit handler always fails for {key}")
    if key.startswith("flaky-"):
        failures = int(key.split("-")[1])
        if n <= failures:
            raise RuntimeError(f"flaky failure {n} of {failures} for {key}")
    if key.startswith("slow-"):
        time.sleep(int(key.split("-")[1]) / 1000)
    if key.startswith("dbsleep-"):
        with connection.cursor() as cur:
            cur.execute("SELECT pg_sleep(%s)", [int(key.split("-")[1])])
    AuditEntry.objects.create(
        event_id=event.id,
        event_type=event.type,
        aggregate_id=event.aggregate_id,
        aggregate_version=event.aggregate_version,
        replayed=event.replayed,
    )
