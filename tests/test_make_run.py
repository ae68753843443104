"""`make run` smoke test: the whole system comes up, answers, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from devsupport.net import free_port

ROOT = Path(__file__).resolve().parent.parent


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
def test_make_run_starts_everything_and_ctrl_c_stops_every_process(tmp_path):
    # given a fresh data folder and no DATABASE_URL: the embedded defaults
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "AWS_ENDPOINT_URL", "DJANGO_SETTINGS_MODULE", "RESOURCE_PREFIX")
    }
    env.update(BILLING_DATA_DIR=str(tmp_path / "data"), WEB_PORT=str(port))
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
    try:
        # when it is up: the worker reports ready and the admin login page answers 200
        deadline = time.monotonic() + 120
        while not any("[devstack] workers ready" in line for line in lines):
            assert proc.poll() is None, "make run exited early:\n" + "".join(lines[-50:])
            assert time.monotonic() < deadline, "worker never ready:\n" + "".join(lines[-50:])
            time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=10) as resp:
            assert resp.status == 200
        output = "".join(lines)
        assert re.search(r"Created operator account 'operator' with password: \S{12,}", output)
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
    assert [p for p in pids + children if _alive(p)] == []
    # and the data folder persists for the next run (git ignores .data/)
    assert (tmp_path / "data" / "postgres" / "PG_VERSION").exists()
