"""``agreements_import`` alone: rows/s and peak memory at two file sizes, against the SQL floor.

    cd bench && ../.venv/bin/python import_throughput.py [N ...]     # default 10000 100000

For each N, in the same run: the SQL floor (one INSERT ... SELECT of N agreements and N outbox
rows, rolled back: what PostgreSQL needs to store them, no Python at all), then the real command
in its own process on an N-row file (peak resident memory read from that process and from its
largest preparing process). Prints each
rate, the import's share of the floor (issue 17's target: >= 25%, 100,000 rows in <= 20 s) and
the memory ratio from the smallest to the largest file (target <= 1.2x: the file is streamed).
Nothing else runs: the relay is not kicked (``pipeline.py`` measures the import inside a busy stack).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _env
from django.db import connection

SIZES = [int(a) for a in sys.argv[1:]] or [10_000, 100_000]


def clean() -> None:
    with connection.cursor() as cur:
        cur.execute("TRUNCATE agreements_agreement, events_outboxevent CASCADE")


# Runs manage.py in a fresh interpreter and prints, last, that process's own peak RSS and its
# largest preparing process's (KiB; agreements/import_batch.py; 0 with none).
_RUN = (
    "import resource, runpy, sys; sys.argv = ['manage.py', 'agreements_import', sys.argv[1]]; "
    "runpy.run_path('manage.py', run_name='__main__'); "
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def import_file(path: Path) -> tuple[float, int, int]:
    """Wall seconds and peak RSS (KiB) of ``manage.py agreements_import path`` in its own process,
    and of its largest preparing process."""
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", _RUN, str(path)], cwd=_env.ROOT, check=True, capture_output=True, text=True
    ).stdout
    own, preparer = out.split()[-2:]
    return time.perf_counter() - start, int(own), int(preparer)


def main() -> None:
    rows: list[tuple[str, str]] = []
    peaks: list[int] = []
    preparers: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sorted(SIZES):
            clean()
            floor = _env.sql_floor(n)
            path = Path(tmp) / f"agreements-{n}.csv"
            _env.write_agreements_file(path, n, "IMP")
            seconds, peak, preparer = import_file(path)
            peaks.append(peak)
            preparers.append(preparer)
            rows.append(
                (
                    f"import {n:,} rows",
                    f"{seconds:6.1f} s  {n / seconds:7,.0f} rows/s  vs SQL floor {n / floor:9,.0f} rows/s "
                    f"({floor:.2f} s): {floor / seconds:.0%} (target >= 25%)  peak RSS {peak / 1024:.0f} MiB"
                    + (
                        f", a preparer {preparer / 1024:.0f} MiB (pages shared with it counted)"
                        if preparer
                        else ""
                    ),
                )
            )
    clean()
    if len(peaks) > 1:
        rows.append(
            (
                "memory",
                f"{peaks[-1] / peaks[0]:.2f}x from {min(SIZES):,} to {max(SIZES):,} rows (target <= 1.2x)"
                + (f"; a preparer {preparers[-1] / preparers[0]:.2f}x" if preparers[0] else ""),
            )
        )
    _env.report(rows)


if __name__ == "__main__":
    main()
