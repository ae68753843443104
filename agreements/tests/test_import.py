"""agreements_import: CSV or JSON lines, per-row errors with line numbers, idempotent."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from agreements.models import Agreement
from events.models import OutboxEvent

pytestmark = pytest.mark.django_db

HEADER = (
    "external_ref,customer_name,customer_email,description,amount_minor,currency,"
    "interval,interval_count,start_date,end_date\n"
)


def test_csv_good_rows_load_and_bad_rows_are_reported_by_line(tmp_path, capsys):
    f = tmp_path / "agreements.csv"
    f.write_text(
        HEADER
        + "E1,Ada,ada@example.com,Plan,1999,EUR,month,1,2026-01-31,\n"
        + "E2,Bob,bob@example.com,Plan,-5,EUR,month,1,2026-01-31,\n"
        + "E3,Cy,cy@example.com,Plan,1000,EUR,fortnight,1,2026-01-31,\n"
        + "E4,Di,di@example.com,Plan,1000,USD,year,2,2026-02-01,2030-01-01\n"
        + "E5,Ed,ed@example.com,Plan,1000,EUR,month,1,31/01/2026,\n"
    )
    with pytest.raises(CommandError, match="3 row"):
        call_command("agreements_import", str(f))
    out, err = capsys.readouterr()
    assert "Imported 2, already present 0, rejected 3." in out
    assert "line 3: amount_minor" in err and "line 4: interval" in err and "line 6: start_date" in err
    assert set(Agreement.objects.values_list("external_ref", flat=True)) == {"E1", "E4"}

    # importing the same file again creates nothing new
    with pytest.raises(CommandError):
        call_command("agreements_import", str(f))
    assert "Imported 0, already present 2, rejected 3." in capsys.readouterr().out
    assert OutboxEvent.objects.filter(type="agreement.created").count() == 2


def test_json_lines(tmp_path, capsys):
    f = tmp_path / "agreements.jsonl"
    rows = [
        {
            "external_ref": "J1",
            "customer_name": "Ada",
            "customer_email": "ada@example.com",
            "amount_minor": 500,
            "currency": "GBP",
            "interval": "week",
            "interval_count": 1,
            "start_date": "2026-03-02",
        },
        "not an object",
    ]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
    with pytest.raises(CommandError):
        call_command("agreements_import", str(f))
    captured = capsys.readouterr()
    assert "line 2: each line must be a JSON object" in captured.err and "line 3: not JSON" in captured.err
    assert Agreement.objects.get().currency == "GBP"


def test_unknown_extension_and_missing_file(tmp_path):
    with pytest.raises(CommandError, match="no such file"):
        call_command("agreements_import", str(tmp_path / "nope.csv"))
    (tmp_path / "a.xlsx").write_text("x")
    with pytest.raises(CommandError, match="use a .csv"):
        call_command("agreements_import", str(tmp_path / "a.xlsx"))
