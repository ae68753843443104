"""`make run` smoke test: the whole system comes up quietly, answers, takes `make manage` commands
beside it, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from devsupport import running
from devsupport.net import free_port

ROOT = Path(__file__).resolve().parent.parent


def _make_manage(args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    # this test's own environment on purpose: DATABASE_URL, AWS_ENDPOINT_URL, RESOURCE_PREFIX and the
    # settings module of the test run are all set, and make manage must still reach the running stack
    env = {**os.environ, "BILLING_DATA_DIR": str(data_dir)}
    return subprocess.run(
        ["make", "manage", f"ARGS={args}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_make_manage_knows_a_file_left_by_a_killed_make_run_even_when_its_pid_lives_again(tmp_path):
    # given the run.env of a `make run` that was killed (kill -9, a crash: nothing removed it), whose
    # pid a live process has taken since (here this test's own)
    data = tmp_path / "data"
    data.mkdir()
    running.write(
        data,
        {"DATABASE_URL": "postgres://postgres@127.0.0.1:9/gone", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"},
        pid=os.getpid(),
    )
    # when an operator runs a command beside it
    result = _make_manage("messaging_status", data)
    # then make manage says that no make run is running (not a connection error from a stack long gone)
    assert result.returncode != 0
    assert "No `make run` is running here" in result.stderr, result.stderr
    assert f"left by pid {os.getpid()}, which stopped without removing it" in result.stderr
    assert "Traceback" not in result.stderr


def test_make_manage_says_so_when_the_running_stack_lost_its_database(tmp_path):
    # given a `make run` that runs (it holds its folder) whose embedded PostgreSQL is gone
    data = tmp_path / "data"
    data.mkdir()
    holder = subprocess.Popen(
        [
            *(sys.executable, "-c"),
            "import sys, time; from pathlib import Path; from devsupport import running; "
            "held = running.hold(Path(sys.argv[1])); print('held', flush=True); time.sleep(120)",
            str(data),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        dead = free_port()
        running.write(
            data,
            {"DATABASE_URL": f"postgres://postgres@127.0.0.1:{dead}/billing", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"},
            pid=holder.pid,
        )
        # when an operator runs a command beside it
        result = _make_manage("messaging_status", data)
    finally:
        holder.kill()
        holder.wait()
    # then it says what is wrong and what to do, instead of a connection error from the command
    assert result.returncode != 0
    assert f"The `make run` here (pid {holder.pid}) runs, but its database does not answer" in result.stderr
    assert "Stop it (Ctrl-C in its terminal) and start it again." in result.stderr
    assert "Traceback" not in result.stderr and "SQS is unreachable" not in result.stderr


def start_make_run(
    tmp_path: Path, **settings: str
) -> tuple[dict[str, str], subprocess.Popen[str], list[str], threading.Thread]:
    """`make run` on its embedded defaults (no DATABASE_URL, no endpoint) with a fresh data folder
    and ``settings``, in a session of its own: its environment, process, output lines (filled as
    they come) and the thread reading them."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "AWS_ENDPOINT_URL", "DJANGO_SETTINGS_MODULE", "RESOURCE_PREFIX")
    }
    env.update(BILLING_DATA_DIR=str(tmp_path / "data"), **settings)
    proc = subprocess.Popen(
        ["make", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    return env, proc, lines, reader


@pytest.mark.slow
def test_make_run_starts_everything_and_ctrl_c_stops_every_process(tmp_path):
    # given a fresh data folder and no DATABASE_URL: the embedded defaults
    port = free_port()
    env, proc, lines, reader = start_make_run(tmp_path, WEB_PORT=str(port))
    try:
        # when it is up: the worker reports ready and the admin login page answers 200
        deadline = time.monotonic() + 120
        while not any("[devstack] workers ready" in line for line in lines):
            assert proc.poll() is None, "make run exited early:\n" + "".join(lines[-50:])
            assert time.monotonic() < deadline, "worker never ready:\n" + "".join(lines[-50:])
            time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=10) as resp:
            assert resp.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/static/admin/css/base.css", timeout=10) as resp:
            assert resp.status == 200
        # and a second `make run` on the same folder (another terminal) refuses to start, leaving
        # the first one's database, endpoint state and run.env alone
        second = subprocess.run(
            ["make", "run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        assert second.returncode != 0
        first = running.read(tmp_path / "data")
        assert f"another `make run` (pid {first.pid}) is running on" in second.stdout, second.stdout
        assert "started" not in second.stdout and (tmp_path / "data" / "run.env").exists()
        # and a command beside it, as the start-up says, reaches it (and only it)
        status = _make_manage("messaging_status", tmp_path / "data")
        assert status.returncode == 0, status.stderr
        assert "billing-dev-invoicing-events " in status.stdout and "billing-test-" not in status.stdout
        assert "OK: all" in status.stdout
        output = "".join(lines)
        assert (
            '[devstack] commands beside it, in another terminal: make manage ARGS="messaging_status"'
            in output
        )
        export = re.search(r"\[devstack\] or, in a shell: (export .*)", output)[1]
        assert "AWS_ENDPOINT_URL=http://127.0.0.1:" in export and "DATABASE_URL=postgres://" in export
        inspect = subprocess.run(
            ["bash", "-c", f"{export} && .venv/bin/python manage.py dlq_inspect invoicing"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert inspect.returncode == 0 and "billing-dev-invoicing-events-dlq" in inspect.stdout, (
            inspect.stderr
        )
        # and the start-up said each thing once: no banners, no per-process warnings, no static files
        assert "SecurityWarning" not in output and "superuser privileges" not in output
        assert output.count("running as root") == (1 if os.geteuid() == 0 else 0)
        assert "Starting development server" not in output and "Performing system checks" not in output
        assert "[tasks]" not in output and "-------------- " not in output  # Celery's banner
        assert not re.search(r"^ok ", output, re.M) and "0 unchanged" in output  # provision: what it did
        assert "/static/" not in output
        assert re.search(r"Created operator account 'operator' with password: \S{12,}", output)
        assert 'change it with: make manage ARGS="changepassword operator"' in output
        pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", output)]
        assert len(pids) >= 7  # postgres, SNS/SQS endpoint, gateway, worker, ops worker, beat, web
        assert "payment gateway: sandbox on http://127.0.0.1:" in output
        assert all(_alive(p) for p in pids)
        children = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    finally:
        # then Ctrl-C (SIGINT to the foreground process group) stops everything
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        reader.join(timeout=5)
    output = "".join(lines)
    assert "[devstack] all stopped" in output
    assert "Traceback" not in output and "WorkerLostError" not in output
    assert [p for p in pids + children if _alive(p)] == []
    # and make manage now says what to do
    after = _make_manage("messaging_status", tmp_path / "data")
    assert after.returncode != 0 and "No `make run` is running here" in after.stderr
    assert "Start it in another terminal with `make run`" in after.stderr
    # and the data folder persists for the next run (git ignores .data/)
    assert (tmp_path / "data" / "postgres" / "PG_VERSION").exists()


def test_the_line_that_loads_run_env_in_a_shell_works_from_a_folder_with_a_space(tmp_path, capsys):
    from scripts.devstack import announce

    # given a stack whose DATABASE_URL holds a password (so the line names run.env, not the values)
    # and a data folder whose path has a space in it
    data = tmp_path / "my billing" / ".data"
    data.mkdir(parents=True)
    url = "postgres://billing:s3cret@db.internal:5432/billing"
    announce(data, {"DATABASE_URL": url, "AWS_ENDPOINT_URL": "http://127.0.0.1:4566"}, "http://x/admin/")
    out = capsys.readouterr().out
    assert "s3cret" not in out
    line = re.search(r"\[devstack\] or, in a shell: (.*)", out)[1]
    # when it is pasted into a shell, then the shell has the stack's settings
    shell = subprocess.run(
        ["bash", "-c", f'{line} && echo "$DATABASE_URL"'], capture_output=True, text=True, cwd=tmp_path
    )
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.strip() == url


@pytest.mark.slow
def test_make_run_stops_everything_when_its_sns_sqs_endpoint_dies(tmp_path):
    # given a running `make run`
    _, proc, lines, reader = start_make_run(tmp_path, WEB_PORT=str(free_port()), LOCAL_ENDPOINT_PORT="0")
    try:
        deadline = time.monotonic() + 120
        while not any("[devstack] running;" in line for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines[-50:])
            time.sleep(0.2)
        endpoint = int(re.search(r"\[devstack\] SNS/SQS: .* \(pid (\d+)\)", "".join(lines))[1])
        # when the endpoint dies under it (a crash, the OOM killer)
        os.kill(endpoint, signal.SIGKILL)
        # then make run says so and stops everything, exiting non-zero
        assert proc.wait(timeout=90) != 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=60)
        reader.join(timeout=5)
    output = "".join(lines)
    assert f"[devstack] the SNS/SQS endpoint (pid {endpoint}) exited; stopping everything" in output
    assert "[devstack] all stopped" in output
