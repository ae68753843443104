"""agreements_import as an operator runs it: a progress bar on a terminal, Ctrl-C that says what
was imported and how to resume (real processes, a real SIGINT)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import psutil
import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from agreements.models import Agreement
from events.models import OutboxEvent
from tests.helpers import ROOT, ctrl_c_at_progress, database_url, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

HEADER = (
    "external_ref,customer_name,customer_email,description,amount_minor,currency,"
    "interval,interval_count,start_date,end_date\n"
)


def big_file(tmp_path: Path, n: int) -> Path:
    f = tmp_path / "agreements.csv"
    with f.open("w") as out:
        out.write(HEADER)
        for i in range(n):
            out.write(f"BIG-{i:06},Ada,ada@example.com,Plan,1999,EUR,month,1,2026-01-31,\n")
    return f


def _ctrl_c_as_in_a_terminal() -> None:
    # A test run started in the background (nohup, `cmd &` in a script) passes SIGINT on ignored,
    # and Python then leaves it ignored: the import would never see the Ctrl-C sent to it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def import_process(f: Path, *args: str, **popen: object) -> subprocess.Popen[str]:
    env = {**os.environ, "DATABASE_URL": database_url()}
    return subprocess.Popen(
        [sys.executable, "manage.py", "agreements_import", str(f), *args],
        cwd=ROOT,
        env=env,
        text=True,
        preexec_fn=_ctrl_c_as_in_a_terminal,
        **popen,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("preparers", ["0", "2"])
def test_ctrl_c_saves_what_was_read_says_so_and_the_same_command_resumes(tmp_path, capsys, preparers):
    # given an import of 12,000 rows in batches of 200, running in its own process (not on a
    # terminal), with or without preparing processes (which the Ctrl-C reaches too)
    total = 12_000
    f = big_file(tmp_path, total)
    proc = import_process(
        f,
        *("--batch-size", "200", "--preparers", preparers),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        # when the operator presses Ctrl-C once the first batches are in
        wait_until(lambda: Agreement.objects.count() >= 400 or proc.poll() is not None, timeout=60)
        assert proc.poll() is None, "the import ended before Ctrl-C: make the file bigger"
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()

    # then it exits 130 without a traceback, saying what it imported: exactly what is in the database
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    found = re.search(
        r"Interrupted: stopped at line (\d+) of 12001 of \S+: imported (\d+), already present 0", err
    )
    assert found, err
    imported = int(found[2])
    assert 400 <= imported < total
    assert Agreement.objects.count() == imported  # every batch read was written before it exited
    assert imported >= int(found[1]) - 2  # all but, at most, the row it was reading
    # ... and no progress bar: stderr is not a terminal
    assert "%|" not in err
    # and the command it gives resumes: the rest is imported, nothing twice
    resume = re.search(r"To resume, run:\n  (python manage.py .*)\n", err)[1]
    assert resume == f"python manage.py agreements_import {f} --batch-size 200 --preparers {preparers}"
    call_command(*resume.split()[2:])
    assert f"Imported {total - imported}, already present {imported}, rejected 0." in capsys.readouterr().out
    assert Agreement.objects.count() == total
    assert OutboxEvent.objects.filter(type="agreement.created").count() == total


def test_on_a_terminal_it_shows_progress_with_a_rate_and_an_eta(tmp_path):
    # given stderr on a terminal 100 columns wide
    f = big_file(tmp_path, 3_000)
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = import_process(f, stdout=subprocess.PIPE, stderr=secondary)
    os.close(secondary)
    # when the import runs
    shown = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # the process closed its end
            break
        if not chunk:
            break
        shown += chunk
    os.close(primary)
    out = proc.communicate(timeout=60)[0]
    # then the bar names the work, counts lines, and gives elapsed<remaining and a rate
    text = shown.decode(errors="replace")
    assert proc.returncode == 0, text
    assert re.search(r"import: 100%\|.*\| 3001/3001 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+k?line/s\]", text), text
    assert "Imported 3000, already present 0, rejected 0." in out


def _as_bash_reads(line: str) -> list[str]:
    """The words bash makes of ``line`` (what the operator's shell runs when it is pasted)."""
    out = subprocess.run(
        ["bash", "-c", 'printf "%s\\0" ' + line], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    return out.split("\0")[:-1]


@pytest.mark.parametrize("via", ["make", "python"])
def test_the_resume_command_survives_a_file_name_with_spaces_quotes_and_dollars(tmp_path, monkeypatch, via):
    # given an export whose name a shell would take apart, imported beside `make run` or not
    folder = tmp_path / "Q4 exports"
    folder.mkdir()
    f = folder / """Bob's "final" $HOME `id` export!.csv"""
    rows = (f"Q-{i},Ada,ada@example.com,Plan,1999,EUR,month,1,2026-01-31,\n" for i in range(5))
    f.write_text(HEADER + "".join(rows))
    if via == "make":
        monkeypatch.setenv("MANAGE_VIA", "make")
    else:
        monkeypatch.delenv("MANAGE_VIA", raising=False)
    # when Ctrl-C stops it midway
    ctrl_c_at_progress(monkeypatch, 3)
    with pytest.raises(CommandError) as exc:
        call_command("agreements_import", str(f), "--batch-size", "1")
    monkeypatch.undo()
    resume = re.search(r"To resume, run:\n  (.*)\n", str(exc.value))[1]
    # then the command it prints, pasted into a shell, runs the import of that very file
    words = _as_bash_reads(resume)
    if via == "make":
        assert words[:2] == ["make", "manage"] and words[2].startswith("ARGS=")
        recipe = subprocess.run(
            # --no-print-directory: under `make test` this make is nested and would add its own lines
            ["make", "-n", "--no-print-directory", "manage", words[2]],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout.strip()
        words = _as_bash_reads(recipe)
        assert words[1:3] == ["scripts/devstack.py", "manage"]
        assert words[3:] == ["agreements_import", str(f), "--batch-size", "1"]
    else:
        assert words[:2] == ["python", "manage.py"]
        assert words[2:] == ["agreements_import", str(f), "--batch-size", "1"]
        call_command(*words[2:])
        assert Agreement.objects.count() == 5


def test_an_import_killed_outright_leaves_no_preparing_process_behind(tmp_path):
    # given an import running with two preparing processes (a file big enough to outlast the test)
    f = big_file(tmp_path, 200_000)
    proc = import_process(f, "--preparers", "2", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        command = psutil.Process(proc.pid)
        wait_until(lambda: len(command.children()) >= 2 or proc.poll() is not None, timeout=60)
        preparers = command.children()
        assert len(preparers) == 2 and proc.poll() is None
        # when it is killed with no chance to clean up (SIGKILL, the out-of-memory killer)
        proc.kill()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # then its preparers end with it instead of waiting forever on a queue nobody feeds
    wait_until(lambda: not any(_alive(p) for p in preparers), timeout=30)


def _alive(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_writer_connection_the_server_drops_mid_import_loses_no_line(tmp_path, capsys):
    # given an import of 12,000 rows in batches of 200 running in its own process
    total = 12_000
    f = big_file(tmp_path, total)
    proc = import_process(f, "--batch-size", "200", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # when, once the first batches are in, the server ends its writer's session (a failover,
        # an operator's pg_terminate_backend), whatever statement it is in
        wait_until(lambda: Agreement.objects.count() >= 400 or proc.poll() is not None, timeout=60)
        assert proc.poll() is None, "the import ended first: make the file bigger"
        with connection.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
            )
            assert cur.rowcount >= 1
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    # then it goes on on a new connection: every row is created once, with its event, none refused
    assert proc.returncode == 0, err
    assert f"Imported {total}, already present 0, rejected 0." in out
    assert Agreement.objects.count() == total
    assert OutboxEvent.objects.filter(type="agreement.created").count() == total
