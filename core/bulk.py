"""Fast bulk writes: inserts with PostgreSQL COPY (used by the outbox and the daily run), and
inserts and updates of a batch of model instances in one statement each (``insert_rows``,
``update_rows``: the consumers' batches), without the ORM's per-value machinery.

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
from uuid import UUID

from django.db import DEFAULT_DB_ALIAS, DataError, connection, connections
from django.db.models import Model

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


def copy_line(row: Sequence[Any], texts: dict[Any, str]) -> str:
    """One row in COPY text format, with its newline: ``copy_value`` of each value, joined.

    The fast way, for a row with no text to escape: each value's text is made once (a date or
    timestamp that repeats in a batch, from ``texts``), and the row's strings are searched for
    what needs escaping in one pass over them all, not one per value."""
    out: list[str] = []
    strings: list[str] = []
    for value in row:
        kind = type(value)
        if kind is str:
            out.append(value)
            strings.append(value)
        elif value is None:
            out.append(NULL)
        elif kind is int or kind is UUID:
            out.append(str(value))
        elif kind is date or kind is datetime:
            # equal datetimes in other offsets read differently: the offset is part of the key
            key = value if kind is date else (value, value.utcoffset())
            text = texts.get(key)
            if text is None:
                text = texts[key] = value.isoformat()
            out.append(text)
        else:  # a bool, a str subclass (a model's choice), anything else: escaped by copy_value
            out.append(copy_value(value))
    if strings and _SPECIAL.search("".join(strings)) is not None:
        return "\t".join(map(copy_value, row)) + "\n"
    return "\t".join(out) + "\n"


def copy_rows(table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """COPY ``rows`` into ``table`` in the current transaction. None is SQL NULL.

    Database errors come back as Django's (IntegrityError, DataError, OperationalError...),
    like every other query's, so callers and task retry policies see one family of errors.
    """
    texts: dict[Any, str] = {}
    return copy_lines(table, columns, (copy_line(row, texts) for row in rows))


def copy_lines(table: str, columns: Sequence[str], lines: Iterable[str]) -> int:
    """COPY lines ``copy_line`` made (maybe ahead, in another thread) into ``table``, as ``copy_rows``."""
    buf = io.StringIO()
    n = 0
    for line in lines:
        buf.write(line)
        n += 1
    if not n:
        return 0
    buf.seek(0)
    cols = ", ".join(f'"{c}"' for c in columns)
    with connection.cursor() as cur, connection.wrap_database_errors:
        cur.cursor.copy_expert(f'COPY "{table}" ({cols}) FROM STDIN', buf)
    return n


def insert_rows(
    objs: Sequence[Model], *, ignore_conflicts: bool = False, returning: Sequence[str] = ()
) -> list[tuple[Any, ...]]:
    """Insert model instances in one ``INSERT ... VALUES`` (``ON CONFLICT DO NOTHING`` if asked):
    what ``bulk_create`` writes (each value prepared by its field, ``auto_now``/``auto_now_add``
    set, defaults already on the instances) at a fraction of its CPU. The ``returning`` columns
    of the rows actually inserted (with ``ignore_conflicts``, a row that conflicted is not)."""
    if not objs:
        return []
    conn = connections[DEFAULT_DB_ALIAS]
    meta = objs[0]._meta
    fields = [f for f in meta.concrete_fields if not f.generated and not (f.primary_key and _server_side(f))]
    qn = conn.ops.quote_name
    row = "(" + ", ".join(f"%s::{_cast(f, conn)}" for f in fields) + ")"
    sql = (
        f"INSERT INTO {qn(meta.db_table)} ({', '.join(qn(f.column) for f in fields)}) VALUES "  # noqa: S608 - names from the model
        + ", ".join([row] * len(objs))
        + (" ON CONFLICT DO NOTHING" if ignore_conflicts else "")
        + (" RETURNING " + ", ".join(qn(meta.get_field(n).column) for n in returning) if returning else "")
    )
    params = [f.get_db_prep_save(f.pre_save(obj, add=True), conn) for obj in objs for f in fields]
    with conn.cursor() as cur:
        cur.execute(sql, params)
        inserted = [tuple(r) for r in cur.fetchall()] if returning else []
    for obj in objs:
        obj._state.adding, obj._state.db = False, conn.alias
    return inserted


_BOUNDED_TEXT = re.compile(r"(?:varchar|character varying|char|character)\(\d+\)")


def _cast(field: Any, conn: Any) -> str:
    """The type a value is cast to in ``insert_rows`` and ``update_rows``: the column's, but plain
    ``text`` for text of a bounded length. An explicit cast to ``varchar(n)`` cuts a longer value
    short without a word; assigned to the column from ``text``, it fails as a save would."""
    db_type = str(field.db_type(conn))
    return "text" if _BOUNDED_TEXT.fullmatch(db_type) else db_type


def _server_side(field: Any) -> bool:
    """An auto-incremented primary key: the database assigns it."""
    return field.get_internal_type() in ("AutoField", "BigAutoField", "SmallAutoField")


def update_rows(objs: Sequence[Model], fields: Sequence[str]) -> int:
    """Write ``fields`` of model instances in one ``UPDATE ... FROM (VALUES ...)``, by primary key.

    What ``QuerySet.bulk_update`` writes, without its CASE expression per field and row, whose
    building costs milliseconds of CPU per batch: each value is prepared by its field as a save
    would prepare it and cast to the column's type. ``auto_now`` fields are set like a save.
    """
    if not objs:
        return 0
    conn = connections[DEFAULT_DB_ALIAS]
    meta = objs[0]._meta
    pk = meta.pk
    assert pk is not None
    model_fields = [meta.get_field(name) for name in fields]
    cols = [pk, *model_fields]
    row = "(" + ", ".join(f"%s::{_cast(f, conn)}" for f in cols) + ")"
    params: list[Any] = []
    for obj in objs:
        params.append(pk.get_db_prep_save(obj.pk, conn))
        params.extend(f.get_db_prep_save(f.pre_save(obj, add=False), conn) for f in model_fields)
    qn = conn.ops.quote_name
    sql = (
        f"UPDATE {qn(meta.db_table)} AS t SET "  # noqa: S608 - names from the model, values as parameters
        + ", ".join(f"{qn(f.column)} = v.{qn(f.column)}" for f in model_fields)
        + " FROM (VALUES "
        + ", ".join([row] * len(objs))
        + f") AS v({', '.join(qn(f.column) for f in cols)}) WHERE t.{qn(pk.column)} = v.{qn(pk.column)}"
    )
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.rowcount
