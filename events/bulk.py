"""Fast bulk inserts with PostgreSQL COPY (used by the outbox and the daily run).

Django's bulk_create builds a model instance and prepares every value through
the ORM; for tens of thousands of rows that costs more than the database
work. COPY ... FROM STDIN (CSV) inside the caller's transaction is the floor.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

from django.db import connection

NULL = r"\N"


def copy_rows(table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """COPY ``rows`` into ``table`` in the current transaction. None is SQL NULL."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    n = 0
    for row in rows:
        writer.writerow([NULL if v is None else v for v in row])
        n += 1
    if not n:
        return 0
    buf.seek(0)
    cols = ", ".join(f'"{c}"' for c in columns)
    with connection.cursor() as cur:
        cur.cursor.copy_expert(f"COPY {table} ({cols}) FROM STDIN WITH (FORMAT csv, NULL '{NULL}')", buf)
    return n
