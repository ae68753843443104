"""`make run`'s SNS/SQS endpoint: ministack by default (bench/endpoints.py chose it), on a port kept
between runs, with the messages queued before a clean stop still there after the next start."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import boto3
import pytest

from devsupport import ministack
from devsupport.ministack import ROOT
from devsupport.net import free_port
from devsupport.stack import start_endpoint
from devsupport.supervisor import pid_running

pytestmark = pytest.mark.slow


def _sqs(url: str) -> Any:
    return boto3.client(
        "sqs",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_a_clean_restart_keeps_the_port_and_the_queued_messages(tmp_path, monkeypatch):
    # given make run's endpoint (the default kind) on the port it prefers
    port = free_port()
    monkeypatch.delenv("LOCAL_ENDPOINT", raising=False)
    monkeypatch.setenv("LOCAL_ENDPOINT_PORT", str(port))
    endpoint, what = start_endpoint(tmp_path)
    try:
        assert what.startswith("ministack") and endpoint.url == f"http://127.0.0.1:{port}"
        sqs = _sqs(endpoint.url)
        url = sqs.create_queue(QueueName="kept")["QueueUrl"]
        entries = [{"Id": str(i), "MessageBody": f"m{i}"} for i in range(3)]
        assert len(sqs.send_message_batch(QueueUrl=url, Entries=entries)["Successful"]) == 3
    finally:
        # when make run stops (Ctrl-C stops the endpoint cleanly) and starts again
        endpoint.stop()
    again, _ = start_endpoint(tmp_path)
    try:
        # then it answers at the same address, with the three messages queued
        assert again.url == endpoint.url
        sqs = _sqs(again.url)
        url = sqs.get_queue_url(QueueName="kept")["QueueUrl"]
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        assert sorted(m["Body"] for m in got) == ["m0", "m1", "m2"]
    finally:
        again.stop()


def test_a_taken_port_falls_back_to_a_free_one_and_says_which(tmp_path, monkeypatch, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("LOCAL_ENDPOINT", "moto")
        monkeypatch.setenv("LOCAL_ENDPOINT_PORT", str(port))
        endpoint, what = start_endpoint(tmp_path)
        try:
            assert what.startswith("moto") and endpoint.url != f"http://127.0.0.1:{port}"
            new_port = endpoint.url.rsplit(":", 1)[1]
            assert f"port {port} is taken; using {new_port} this time" in capsys.readouterr().out
            assert _sqs(endpoint.url).list_queues().get("QueueUrls", []) == []
        finally:
            endpoint.stop()


def test_the_endpoints_virtualenv_is_made_from_its_requirements_and_follows_them(
    tmp_path, monkeypatch, capsys
):
    # given no virtualenv yet, and a requirements file for it (one small package here)
    venv, requirements = tmp_path / "venv", tmp_path / "ministack.txt"
    monkeypatch.setattr(ministack, "VENV", venv)
    monkeypatch.setattr(ministack, "REQUIREMENTS", requirements)
    requirements.write_text("six==1.16.0\n")
    # when the endpoint's python is asked for: the virtualenv is made, with what the file pins
    python = ministack.ensure_venv()
    assert "installing" in capsys.readouterr().out
    assert _version_of_six(python) == "1.16.0"
    # and asked again, with the file unchanged, nothing is installed
    assert ministack.ensure_venv() == python and capsys.readouterr().out == ""
    # when the file changes (a machine whose .data/ holds the virtualenv of an earlier checkout)
    requirements.write_text("six==1.17.0\n")
    ministack.ensure_venv()
    # then the virtualenv follows it
    assert "installing" in capsys.readouterr().out
    assert _version_of_six(python) == "1.17.0"
    stamp = (venv / "requirements.txt").read_text()
    # when an install fails (a pin no index has)
    requirements.write_text("six==999.0\n")
    # then, with no ministack in it to fall back on, it says why; the virtualenv is not marked as
    # following the file (the next start tries again)
    with pytest.raises(RuntimeError, match="pip install.*failed"):
        ministack.ensure_venv()
    assert (venv / "requirements.txt").read_text() == stamp and _version_of_six(python) == "1.17.0"
    # and with ministack in it (offline, after a pull), that virtualenv is used as it is, with a warning
    site = next(venv.glob("lib/python*/site-packages"))
    (site / "ministack").mkdir()
    (site / "ministack" / "__init__.py").write_text("")
    assert ministack.ensure_venv() == python
    assert "failed" in capsys.readouterr().out and (venv / "requirements.txt").read_text() == stamp
    # and not tried again at the next start in this process (a test run restarts its endpoint often)
    assert ministack.ensure_venv() == python and capsys.readouterr().out == ""


def _version_of_six(python) -> str:  # noqa: ANN001 - a Path
    argv = [str(python), "-c", "import six; print(six.__version__)"]
    done = subprocess.run(argv, capture_output=True, text=True)
    return done.stdout.strip()


PARENT = """
import sys, time
from pathlib import Path
import boto3
from devsupport.ministack import Ministack
m = Ministack(state_dir=Path(sys.argv[1]))
m.start()
sqs = boto3.client("sqs", endpoint_url=m.url, region_name="us-east-1",
                   aws_access_key_id="testing", aws_secret_access_key="testing")
url = sqs.create_queue(QueueName="kept")["QueueUrl"]
sqs.send_message(QueueUrl=url, MessageBody="before the kill")
print("READY", m.pid, m.port, flush=True)
time.sleep(600)
"""


def test_an_emulator_whose_starter_is_killed_outright_stops_itself_and_keeps_its_messages(tmp_path):
    # given ministack started by a process (a test run, make run) that is then killed outright
    # (SIGKILL: a timeout, the OOM killer), with a message queued
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    pid = None
    try:
        started = time.monotonic() + 120
        line = ""
        while not line.startswith("READY"):  # (ministack's start may print lines of its own first)
            ready, _, _ = select.select([parent.stdout], [], [], max(0.0, started - time.monotonic()))
            assert ready, "the parent did not start ministack within 120 s"
            line = parent.stdout.readline()
            assert line, "the parent exited before ministack answered"
        pid, port = (int(x) for x in line.split()[1:])
        parent.kill()
        parent.wait()
        # then the emulator does not outlive it: it stops within seconds, as a clean stop would
        gone = time.monotonic() + 20
        while pid_running(pid):
            assert time.monotonic() < gone, f"ministack (pid {pid}) outlived the process that started it"
            time.sleep(0.2)
    finally:
        parent.kill()
        if pid_running(pid):
            with contextlib.suppress(ProcessLookupError):  # (it may stop meanwhile)
                os.killpg(pid, signal.SIGKILL)  # (its own session) no orphan, whatever the outcome
    # and, started again on its state, it still has the message
    again = ministack.Ministack(port=port, state_dir=tmp_path)
    again.start()
    try:
        sqs = _sqs(again.url)
        url = sqs.get_queue_url(QueueName="kept")["QueueUrl"]
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        assert [m["Body"] for m in got] == ["before the kill"]
    finally:
        again.stop()
