"""COPY bulk inserts: every text arrives as itself; only None is NULL."""

from __future__ import annotations

import pytest
from django.db import connection

from core.bulk import copy_rows

pytestmark = pytest.mark.django_db

TEXTS = ["\\N", "", "\\", '"', 'say "hi", then\nleave', "a,b", "\t\r\n", "🙂", "NULL", "\\.", " "]


def test_text_that_looks_like_null_or_csv_syntax_arrives_unchanged():
    # given a table and texts that COPY's CSV format could take for NULL, a quote or end of data
    with connection.cursor() as cur:
        cur.execute("CREATE TEMP TABLE bulk_probe (n int NOT NULL, t text, d date)")
    # when they are copied, with a real NULL among them
    rows = [(i, t, "2026-01-31") for i, t in enumerate(TEXTS)] + [(len(TEXTS), None, None)]
    assert copy_rows("bulk_probe", ("n", "t", "d"), rows) == len(TEXTS) + 1
    # then each reads back as itself
    with connection.cursor() as cur:
        cur.execute("SELECT t, d IS NULL FROM bulk_probe ORDER BY n")
        back = cur.fetchall()
    assert back == [(t, False) for t in TEXTS] + [(None, True)]
