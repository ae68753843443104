"""COPY bulk inserts: every text arrives as itself; only None is NULL."""

from __future__ import annotations

from datetime import date

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.bulk import copy_rows, insert_rows, update_rows
from invoicing.models import BillableAgreement

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


def test_rows_inserted_and_updated_in_one_statement_read_back_as_the_orm_would_save_them():
    # given one agreement already there and three new ones, with hostile text and JSON
    BillableAgreement.objects.create(agreement_id="BK-1", description="old")
    rows = [
        BillableAgreement(agreement_id=f"BK-{i}", description=TEXTS[i], customer={"name": TEXTS[i + 3]})
        for i in range(1, 5)
    ]

    # when they are inserted together, conflicts ignored
    with CaptureQueriesContext(connection) as insert:
        inserted = insert_rows(rows, ignore_conflicts=True, returning=("agreement_id",))

    # then only the new ones went in, in one statement, as saved by the ORM
    assert len(insert) == 1 and sorted(inserted) == [("BK-2",), ("BK-3",), ("BK-4",)]
    assert BillableAgreement.objects.get(agreement_id="BK-1").description == "old"
    back = BillableAgreement.objects.get(agreement_id="BK-3")
    assert back.description == TEXTS[3] and back.customer == {"name": TEXTS[6]} and back.updated_at

    # and when every row's fields change and are written together
    saved = list(BillableAgreement.objects.order_by("agreement_id"))
    for i, row in enumerate(saved):
        row.prices, row.start_date, row.created_seen = [["2026-01-31", 100 + i, 1]], date(2026, 1, 31), True
    before = {r.agreement_id: r.updated_at for r in saved}
    with CaptureQueriesContext(connection) as update:
        assert update_rows(saved, ("prices", "start_date", "created_seen", "updated_at")) == 4
    assert len(update) == 1
    for i, row in enumerate(BillableAgreement.objects.order_by("agreement_id")):
        assert row.prices == [["2026-01-31", 100 + i, 1]] and row.start_date == date(2026, 1, 31)
        assert row.created_seen and row.updated_at > before[row.agreement_id]
