"""agreements_import: CSV or JSON lines, per-row errors with line numbers, idempotent."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tracemalloc
from datetime import date

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import given, settings
from hypothesis import strategies as st

from agreements.importing import FIELDS, RowError, row_to_input
from agreements.models import Agreement
from agreements.services import (
    AgreementInput,
    agreement_create,
    agreement_errors,
    agreement_validate,
    event_data,
)
from events.models import OutboxEvent
from events.topology import aws
from tests.helpers import ROOT, database_url

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


def test_imported_agreements_events_are_version_2_naming_each_agreement(tmp_path, capsys):
    # given a file naming customers by refs of their own, and one row without (its own ref then)
    f = tmp_path / "agreements.csv"
    f.write_text(
        "external_ref,customer_ref,customer_name,customer_email,amount_minor,currency,interval,start_date\n"
        "SUB-1001,CUS-77,Ada,ada@example.com,1999,EUR,month,2026-01-31\n"
        "SUB-1002,CUS-77,Ada,ada@example.com,500,EUR,month,2026-02-01\n"
        "SUB-2001,,Grace,grace@example.com,700,GBP,week,2026-01-05\n"
    )

    # when it is imported (the bulk path)
    call_command("agreements_import", str(f))
    assert "Imported 3, already present 0, rejected 0." in capsys.readouterr().out

    # then each agreement.created is version 2 and names its agreement and its customer
    named = {
        e.aggregate_id: (e.schema_version, e.data["external_ref"], e.data["customer"]["external_ref"])
        for e in OutboxEvent.objects.filter(type="agreement.created")
    }
    ids = dict(Agreement.objects.values_list("external_ref", "id"))
    assert named == {
        str(ids["SUB-1001"]): (2, "SUB-1001", "CUS-77"),
        str(ids["SUB-1002"]): (2, "SUB-1002", "CUS-77"),
        str(ids["SUB-2001"]): (2, "SUB-2001", "SUB-2001"),
    }


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


ROW = "{ref},Ada,{email},Plan,1999,{currency},month,1,2026-01-31,\n"


def csv_file(tmp_path, *rows: str, name: str = "agreements.csv", prefix: str = ""):
    f = tmp_path / name
    f.write_text(prefix + HEADER + "".join(rows), encoding="utf-8")
    return f


def row(ref: str, email: str = "ada@example.com", currency: str = "EUR") -> str:
    return ROW.format(ref=ref, email=email, currency=currency)


def test_nul_in_a_field_is_a_line_error_naming_the_field_and_the_others_load(tmp_path, capsys):
    f = csv_file(
        tmp_path, row("N1"), "N2,Bo\x00b,bob@example.com,Plan,1999,EUR,month,1,2026-01-31,\n", row("N3")
    )
    with pytest.raises(CommandError, match="1 row"):
        call_command("agreements_import", str(f))
    err = capsys.readouterr().err
    assert "line 3: customer_name: contains a NUL character (U+0000) at character 3" in err
    assert "Traceback" not in err
    assert set(Agreement.objects.values_list("external_ref", flat=True)) == {"N1", "N3"}


def test_nul_in_json_lines_is_a_line_error_too(tmp_path, capsys):
    good = {
        "external_ref": "J1",
        "customer_name": "Ada",
        "customer_email": "ada@example.com",
        "amount_minor": 500,
        "currency": "gbp",
        "interval": "week",
        "start_date": "2026-03-02",
    }
    f = tmp_path / "a.jsonl"
    lines = [
        good,
        good | {"external_ref": "J2", "description": "x\u0000"},
        good | {"external_ref": "J3", "customer_name": ["Ada"]},
    ]
    f.write_text("\n".join(json.dumps(x) for x in lines) + "\n" + "[" * 100_000 + "\n")
    with pytest.raises(CommandError, match="3 row"):
        call_command("agreements_import", str(f))
    err = capsys.readouterr().err
    assert "line 2: description: contains a NUL character" in err
    assert "line 3: customer_name: must be a string, not list" in err
    assert "line 4: not JSON" in err
    assert Agreement.objects.get().currency == "GBP"


def test_an_email_the_contract_refuses_is_a_line_error_in_the_services_words(tmp_path, capsys):
    f = csv_file(tmp_path, row("L1"), row("L2", email="bob@localhost"))
    with pytest.raises(CommandError):
        call_command("agreements_import", str(f))
    [message] = agreement_errors({"customer_email": "bob@localhost"})["customer_email"]
    assert f"line 3: customer_email: {message}" in capsys.readouterr().err
    assert list(Agreement.objects.values_list("external_ref", flat=True)) == ["L1"]


def test_a_file_that_is_not_utf8_is_refused_before_anything_is_imported(tmp_path):
    f = tmp_path / "latin1.csv"
    f.write_bytes(
        (HEADER + row("U1") + "U2,Zoë,zoe@example.com,Plan,1,EUR,month,1,2026-01-31,\n").encode("latin-1")
    )
    with pytest.raises(CommandError, match=r"line 3, byte 6 \(0xEB\) is not UTF-8. Save the file as UTF-8"):
        call_command("agreements_import", str(f))
    assert not Agreement.objects.exists()


def test_excel_csv_utf8_with_a_byte_order_mark_loads(tmp_path, capsys):
    f = csv_file(
        tmp_path, row("B1"), "B2,Zoë,zoe@example.com,Plan,1,EUR,month,1,2026-01-31,\n", prefix="\ufeff"
    )
    call_command("agreements_import", str(f))
    assert "Imported 2, already present 0, rejected 0." in capsys.readouterr().out
    assert Agreement.objects.get(external_ref="B2").customer_name == "Zoë"


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("dir.csv", None, "is a directory; give a .csv or .jsonl file"),
        ("empty.csv", b"", "file is empty"),
        ("empty.jsonl", b"", "file is empty"),
        ("bom-only.csv", "\ufeff\n \n".encode(), "file is empty"),
        ("one-line.jsonl", b"x" * (2 << 20), "line 1 is longer than 1048576 bytes"),
    ],
)
def test_files_that_cannot_be_imported_at_all_are_a_clear_command_error(tmp_path, name, content, message):
    path = tmp_path / name
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(CommandError, match=message):
        call_command("agreements_import", str(path))


def test_a_repeated_external_ref_with_other_data_reports_the_later_line(tmp_path, capsys):
    f = csv_file(
        tmp_path,
        row("D1"),
        row("D1"),  # the same row again: skipped like a re-import
        row("D1", currency="eur"),  # the same data once normalised: skipped too
        row("D1", currency="USD"),
        row("D2"),
    )
    with pytest.raises(CommandError, match="1 row"):
        call_command("agreements_import", str(f))
    out, err = capsys.readouterr()
    assert "line 5: external_ref 'D1' already on line 2 with different data" in err
    assert "Imported 2, already present 2, rejected 1." in out
    assert Agreement.objects.get(external_ref="D1").currency == "EUR"


def test_the_file_is_streamed_and_progress_stays_off_when_not_on_a_terminal(tmp_path, capsys):
    # given a big file of rows refused before the database (so the test stays quick)
    f = csv_file(
        tmp_path, *(f"S{i},Ada,ada@example.com,Plan,ten,EUR,month,1,2026-01-31,\n" for i in range(20_000))
    )
    # when it is imported
    tracemalloc.start()
    with open(os.devnull, "w") as devnull, pytest.raises(CommandError, match="20000 row"):
        call_command("agreements_import", str(f), stderr=devnull)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # then memory does not grow with the file (all 20 000 rows at once took ~25 MB) ...
    assert peak < 5_000_000, peak
    # ... and stderr, not a terminal here, has no progress bar in it
    assert "%|" not in capsys.readouterr().err


FIELD_VALUES = st.one_of(
    st.none(),
    st.integers(),
    st.integers(min_value=10**12, max_value=10**40),
    st.text(st.characters(codec="utf-8"), max_size=30),
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "EUR",
            "eur",
            "month",
            "1",
            "2026-01-31",
            "2026-02-30",
            "bob@localhost",
            "ada@example.com",
            "9" * 5000,
            "1_000",
            "١٢٣",
            "-0",
            "+5",
            "\\N",
        ]
    ),
)
GOOD_ROW = {
    "external_ref": "H1",
    "customer_name": "Ada",
    "customer_email": "ada@example.com",
    "amount_minor": "1999",
    "currency": "EUR",
    "interval": "month",
    "start_date": "2026-01-31",
}


@settings(max_examples=400, deadline=None)
@given(
    overrides=st.dictionaries(st.sampled_from([*FIELDS, "customer_ref", "other"]), FIELD_VALUES, max_size=6),
    from_scratch=st.booleans(),
)
def test_row_to_input_returns_valid_input_or_a_row_error_never_anything_else(overrides, from_scratch):
    raw = overrides if from_scratch else GOOD_ROW | overrides
    try:
        data = row_to_input(raw)
    except RowError as exc:
        assert str(exc) and "\x00" not in str(exc)
        return
    assert isinstance(data, AgreementInput)
    agreement_validate(data)  # what it returns, the service accepts


def test_rows_go_in_batches_and_each_created_agreement_has_exactly_its_event(tmp_path, capsys):
    # given one agreement already made in the admin, with other data than the file's row
    agreement_create(
        data=AgreementInput("K3", "Admin", "a@example.com", 700, "GBP", "week", date(2026, 1, 5))
    )
    rows = [row(f"K{i}") for i in range(1, 11)]
    rows[5] = 'K6,Tab\\N Name,k6@example.com,"a\tb\\N\nc",1999,EUR,month,1,2026-01-31,\n'
    f = csv_file(tmp_path, *rows)
    # when the file goes in batches of 3
    with CaptureQueriesContext(connection) as queries:
        call_command("agreements_import", str(f), "--batch-size", "3")
    # then the nine new ones are created, the admin's is left as it was ...
    assert "Imported 9, already present 1, rejected 0." in capsys.readouterr().out
    assert Agreement.objects.get(external_ref="K3").customer_name == "Admin"
    k6 = Agreement.objects.get(external_ref="K6")
    assert (k6.customer_name, k6.description) == ("Tab\\N Name", "a\tb\\N\nc")
    # ... each with one agreement.created whose data is what the single path would record
    created = OutboxEvent.objects.filter(type="agreement.created")
    assert created.count() == 10
    for a in Agreement.objects.exclude(external_ref="K3"):
        [event] = created.filter(aggregate_id=str(a.id))
        assert event.data == event_data(a) and event.aggregate_version == 1
        assert (event.schema_version, event.data["external_ref"]) == (2, a.external_ref)
    # ... in a few statements per batch of 3, not ~20 per row
    assert len(queries) <= 4 * 10, len(queries)


def test_a_batch_the_database_refuses_is_written_row_by_row_and_names_the_line(tmp_path, capsys):
    # given a rule only the database knows (the test's transaction drops it again)
    with connection.cursor() as cur:
        cur.execute(
            "ALTER TABLE agreements_agreement ADD CONSTRAINT test_no_zed CHECK (customer_name <> 'Zed')"
        )
    f = csv_file(tmp_path, row("Z1"), "Z2,Zed,zed@example.com,Plan,1999,EUR,month,1,2026-01-31,\n", row("Z3"))
    with pytest.raises(CommandError, match="1 row"):
        call_command("agreements_import", str(f))
    out, err = capsys.readouterr()
    assert "Imported 2, already present 0, rejected 1." in out
    assert "line 3: " in err and "test_no_zed" in err
    assert set(Agreement.objects.values_list("external_ref", flat=True)) == {"Z1", "Z3"}
    assert OutboxEvent.objects.filter(type="agreement.created").count() == 2


def test_batch_size_out_of_range_is_a_command_error(tmp_path):
    f = csv_file(tmp_path, row("Q1"))
    with pytest.raises(CommandError, match="--batch-size must be from 1 to 50000"):
        call_command("agreements_import", str(f), "--batch-size", "0")
    with pytest.raises(CommandError, match="--preparers must be from 0 to 16"):
        call_command("agreements_import", str(f), "--preparers", "17")
    assert not Agreement.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("preparers", ["0", "2"])
def test_outside_a_transaction_batches_are_written_by_a_thread_while_the_next_is_read(
    tmp_path, capsys, preparers
):
    # given a file of three batches with a repeat and a bad row, imported as the command runs
    # in production (no transaction around it, so the writer thread commits each batch), with or
    # without preparing processes
    rows = [row(f"W{i}") for i in range(7)]
    rows[4] = row("W1")
    rows[5] = "W5,Ada,ada@example.com,Plan,0,EUR,month,1,2026-01-31,\n"
    f = csv_file(tmp_path, *rows)
    with pytest.raises(CommandError, match="1 row"):
        call_command("agreements_import", str(f), "--batch-size", "2", "--preparers", preparers)
    out, err = capsys.readouterr()
    assert "Imported 5, already present 1, rejected 1." in out
    assert "line 7: amount_minor" in err
    assert Agreement.objects.count() == 5
    assert OutboxEvent.objects.filter(type="agreement.created").count() == 5
    # and a second run finds them all present
    with pytest.raises(CommandError, match="1 row"):
        call_command("agreements_import", str(f), "--batch-size", "2", "--preparers", preparers)
    assert "Imported 0, already present 6, rejected 1." in capsys.readouterr().out


@pytest.mark.django_db(transaction=True)
def test_an_import_asks_for_a_relay_run_before_its_process_exits(tmp_path, empty_queues, sqs):
    # given a small file (the import is over long before the kicker thread's next wake-up)
    f = csv_file(tmp_path, row("EX1"), row("EX2"))
    env = {**os.environ, "DATABASE_URL": database_url(), "OUTBOX_KICK_RELAY": "true"}
    # when the command runs in its own process and exits
    subprocess.run(
        [sys.executable, "manage.py", "agreements_import", str(f)], cwd=ROOT, env=env, check=True, timeout=120
    )
    # then a relay task is waiting on the events task queue, so the rows are published soon
    url = aws.queue_url("billing-test-celery-events")
    msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=2).get("Messages", [])
    tasks = [json.loads(base64.b64decode(m["Body"]))["headers"]["task"] for m in msgs]
    assert "events.relay_outbox" in tasks
    assert OutboxEvent.objects.filter(type="agreement.created").count() == 2
