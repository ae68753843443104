"""Part 2 of ``delivery_audit.py``: an audit pass over a big event store with nothing missing,
next to the floor (one indexed SQL anti-join over the same rows), each in a fresh process
(``python _audit_store.py --measure full|incremental|floor``, Django set up from the environment
the parent passes): time, and peak RSS while the operation runs (sampled every 2 ms)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

PY = sys.executable


def measure(what: str) -> None:
    """Child process: one operation on the bench database; prints its time and memory as JSON."""
    import django

    django.setup()
    import psutil
    from django.db import connection

    from events.audit import delivery_audit_run
    from events.audit.subscriptions import plan

    proc = psutil.Process()
    before = proc.memory_info().rss
    peak = [before]
    done = threading.Event()

    def sample() -> None:  # the process's RSS while the operation runs (its own peak, not start-up's)
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    if what == "floor":
        with connection.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM events_outboxevent o WHERE o.published_at IS NOT NULL "
                "AND o.type = ANY(%s) AND NOT EXISTS (SELECT 1 FROM events_processedevent p "
                "WHERE p.consumer = 'invoicing' AND p.event_id = o.id)",
                [list(plan("invoicing").types)],
            )
            result = {"missing": cur.fetchone()[0]}
    else:
        report = delivery_audit_run(consumer="invoicing", full=what == "full")
        result = {"missing": report.totals.missing, "audited": report.totals.published}
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    peak[0] = max(peak[0], proc.memory_info().rss)
    print(json.dumps({"seconds": seconds, "before_mb": before / 2**20, "peak_mb": peak[0] / 2**20, **result}))


def generate(upto: int) -> None:
    """Published agreement.created rows up to ``upto`` in all, every one handled by invoicing."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM events_outboxevent")
        have = cur.fetchone()[0]
        cur.execute(
            """
            INSERT INTO events_outboxevent (id, type, schema_version, occurred_at, producer, aggregate_type,
                aggregate_id, aggregate_version, data, published_at, attempts, last_attempt_at, next_attempt_at,
                last_error, errors, sns_message_id, priority)
            SELECT gen_random_uuid(), 'agreement.created', 1, t, 'agreements', 'agreement', 'bench-' || i, 1,
                   '{}'::jsonb, t + interval '1 second', 1, t + interval '1 second', NULL, '', '[]', '', 1
              FROM generate_series(%s, %s) AS i,
                   LATERAL (SELECT now() - interval '2 hours' + i * interval '1 millisecond') AS x(t)
            """,
            [have + 1, upto],
        )
        cur.execute(
            """
            INSERT INTO events_processedevent (consumer, event_id, event_type, payload_hash, processed_at)
            SELECT 'invoicing', o.id, o.type, repeat('0', 64), o.published_at FROM events_outboxevent o
             WHERE o.aggregate_id LIKE 'bench-%%'
               AND NOT EXISTS (SELECT 1 FROM events_processedevent p WHERE p.consumer = 'invoicing' AND p.event_id = o.id)
            """
        )
        cur.execute("VACUUM ANALYZE events_outboxevent")
        cur.execute("VACUUM ANALYZE events_processedevent")


def child(what: str) -> dict:
    env = {**os.environ, "DELIVERY_AUDIT_GRACE_SECONDS": "900"}
    out = subprocess.run(
        [PY, __file__, "--measure", what],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def scale(sizes: list[int]) -> list[tuple[str, str]]:
    """Part 2 of delivery_audit.py, on an emptied event store (Django set up by the caller)."""
    rows, peaks = [], {}
    for size in sizes:
        t = time.perf_counter()
        generate(size)
        made = time.perf_counter() - t
        floors, audits = [], []
        for _ in range(3):
            floors.append(child("floor"))
            audits.append(child("full"))
        assert all(r["missing"] == 0 for r in floors + audits) and audits[0]["audited"] == size
        incremental = child("incremental")
        f = statistics.median(r["seconds"] for r in floors)
        a = statistics.median(r["seconds"] for r in audits)
        fm, am = max(r["peak_mb"] for r in floors), max(r["peak_mb"] for r in audits)
        peaks[size] = am
        rows.append(
            (
                f"full pass over {size:,} events",
                f"{a:.2f} s vs SQL anti-join floor {f:.2f} s: {a / f:.2f}x the floor; peak RSS {am:.1f} MB vs "
                f"{fm:.1f} MB (+{max(r['peak_mb'] - r['before_mb'] for r in audits):.1f} vs "
                f"+{max(r['peak_mb'] - r['before_mb'] for r in floors):.1f} MB over the process before); "
                f"next incremental pass {incremental['seconds'] * 1000:.0f} ms ({incremental['audited']} events); "
                f"rows made in {made:.0f} s",
            )
        )
    if len(sizes) > 1:
        small, big = sizes[0], sizes[-1]
        rows.append(("peak RSS ratio", f"{peaks[big] / peaks[small]:.2f} ({big:,} vs {small:,} events)"))
    return rows


if __name__ == "__main__" and sys.argv[1:2] == ["--measure"]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    measure(sys.argv[2])
