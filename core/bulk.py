"""Fast bulk inserts with PostgreSQL COPY (used by the outbox and the daily run).

Django's bulk_create builds a model instance and prepares every value through
the ORM; for tens of thousands of rows that costs more than the database
work. COPY ... FROM STDIN inside the caller's transaction is the floor.

Rows are written in COPY's text format with every value escaped as PostgreSQL
documents it (backslash, tab, newline and carriage return; ``\\N`` only for
None), so no text can be mistaken for a NULL marker or a column break: a name
that is literally backslash-N is stored as those two characters. Text that
PostgreSQL cannot store at all (NUL) is refused at the service boundary, before
it gets here; if it gets here anyway, the error names the table.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

from django.db import DataError, connection

NULL = r"\N"
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_SPECIAL = re.compile(r"[\\\t\n\r\x00]")  # what needs escaping (or refusing)


def copy_value(value: Any) -> str:
    """One value in COPY text format."""
    if type(value) is str:  # the common case first: most values are plain text
        text = value
    elif value is None:
        return NULL
    elif isinstance(value, bool):
        return "t" if value else "f"
    elif type(value) is int:
        return str(value)
    elif isinstance(value, (datetime, date)):
        return value.isoformat()
    else:
        text = str(value)
    if _SPECIAL.search(text) is None:
        return text
    if "\x00" in text:
        raise DataError("a value contains NUL (U+0000), which PostgreSQL cannot store")
    return text.translate(_ESCAPES)


def copy_rows(table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """COPY ``rows`` into ``table`` in the current transaction. None is SQL NULL.

    Database errors come back as Django's (IntegrityError, DataError, OperationalError...),
    like every other query's, so callers and task retry policies see one family of errors.
    """
    buf = io.StringIO()
    n = 0
    for row in rows:
        buf.write("\t".join(copy_value(v) for v in row))
        buf.write("\n")
        n += 1
    if not n:
        return 0
    buf.seek(0)
    cols = ", ".join(f'"{c}"' for c in columns)
    with connection.cursor() as cur, connection.wrap_database_errors:
        cur.cursor.copy_expert(f'COPY "{table}" ({cols}) FROM STDIN', buf)
    return n
