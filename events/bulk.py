"""Fast bulk inserts with PostgreSQL COPY (used by the outbox and the daily run).

Django's bulk_create builds a model instance and prepares every value through
the ORM; for tens of thousands of rows that costs more than the database
work. COPY ... FROM STDIN (CSV) inside the caller's transaction is the floor.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import Any

from django.db import connection

NULL = r"\N"


def _csv_field(value: Any) -> str:
    # Every value quoted: COPY reads an *unquoted* \N as NULL, so a customer named \N (csv's
    # minimal quoting leaves it bare) became NULL and failed the daily run on NOT NULL.
    return NULL if value is None else '"' + str(value).replace('"', '""') + '"'


def copy_rows(table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    r"""COPY ``rows`` into ``table`` in the current transaction. None is SQL NULL, and only None:
    any text, ``\N`` and the empty string included, arrives as itself."""
    buf = io.StringIO()
    n = 0
    for row in rows:
        buf.write(",".join(map(_csv_field, row)) + "\n")
        n += 1
    if not n:
        return 0
    buf.seek(0)
    cols = ", ".join(f'"{c}"' for c in columns)
    with connection.cursor() as cur:
        cur.cursor.copy_expert(f"COPY {table} ({cols}) FROM STDIN WITH (FORMAT csv, NULL '{NULL}')", buf)
    return n
