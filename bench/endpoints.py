"""Which local SNS/SQS emulator holds up at depth: the figures that chose `make run`'s default.

For each candidate (its own process on loopback), for each depth: a fresh queue is filled to that
depth (SendMessageBatch, 10 per call; a candidate that cannot fill it within ``--fill-seconds`` is
measured at the depth it reached and goes no deeper), then for ``--seconds`` (at least one call):

- receive(10) + delete_batch, what a consumer does: messages/s taken off the deep queue (kept
  within 10% of its depth: every tenth taken is sent again, untimed);
- PublishBatch to a topic whose raw-delivery subscription is that deep queue, what the relay does:
  events/s accepted (and how many reached the queue within 30 s).

Each with the endpoint process's CPU per message: what it takes from the cores the rest of a local
stack shares (ministack is measured twice: as the project serves it, with uvicorn, and as its own
start does, with hypercorn). Then whether it keeps messages across a clean restart (SIGTERM, start
again on the same port).
Bodies are event-sized (about 700 bytes, with the attributes the relay sends). Needs no
database: ``cd bench && ../.venv/bin/python endpoints.py [--candidates moto,ministack,ministack-hypercorn]
[--depths 1000,10000,50000] [--seconds 10]``. A candidate that cannot be installed or started
is reported as such (LocalStack: ``LOCALSTACK_PYTHON`` names a python that has localstack-core).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

from devsupport.endpoint import LocalEndpoint, Moto  # noqa: E402
from devsupport.net import free_port, port_open  # noqa: E402

BODY = json.dumps(
    {
        "id": str(uuid.uuid4()),
        "type": "invoice.issued",
        "schema_version": 1,
        "occurred_at": "2026-11-28T10:00:00.000000Z",
        "producer": "invoicing",
        "aggregate_type": "invoice",
        "aggregate_id": "12345678",
        "aggregate_version": 1,
        "data": {
            "invoice_id": "12345678",
            "number": "INV-2026-0012345",
            "agreement_id": "87654321",
            "customer": {"external_ref": "C-1", "name": "Ada Lovelace", "email": "ada@example.com"},
            "period_start": "2026-11-28",
            "period_end": "2026-12-28",
            "amount_minor": 1999,
            "currency": "EUR",
            "description": "Monthly plan " + "x" * 200,
        },
    }
)
ATTRS = {
    "event_type": {"DataType": "String", "StringValue": "invoice.issued"},
    "producer": {"DataType": "String", "StringValue": "invoicing"},
    "signature": {"DataType": "String", "StringValue": "0" * 64},
    "signature_key": {"DataType": "String", "StringValue": "k1"},
}


class LocalStack:
    """LocalStack's Python runtime (localstack-core) run on the host, without Docker."""

    def __init__(self, python: str) -> None:
        self.python = python
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="localstack-"))

    def start(self) -> str:
        if not self.python:
            raise RuntimeError(
                "set LOCALSTACK_PYTHON to a python with localstack-core[runtime]: on 2026-11-28 its "
                "2026.3.0 needed Python 3.12+, and 4.14.0 installed on 3.11 but its runtime did not "
                "start outside its Docker image (cbor2, pyOpenSSL and cryptography pins)"
            )
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.dir),
            "DNS_ADDRESS": "0",
            "GATEWAY_LISTEN": f"127.0.0.1:{self.port}",
            "SERVICES": "sqs,sns,sts",
            "PERSISTENCE": "1",
            "LOCALSTACK_VOLUME_DIR": str(self.dir / "volume"),
            "DISABLE_EVENTS": "1",
            "SKIP_INFRA_DOWNLOADS": "1",
        }
        log = (self.dir / "log").open("ab")
        self.proc = subprocess.Popen(
            [self.python, "-m", "localstack.runtime.main"],
            env=env,
            cwd=self.dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while not _answers(self.url):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = (self.dir / "log").read_text(errors="replace").strip().splitlines()[-3:]
                self.stop()
                raise RuntimeError(f"LocalStack did not come up: {' | '.join(tail)}")
            time.sleep(0.5)
        return self.url

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def restart(self, down_seconds: float) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()


def _answers(url: str) -> bool:
    from urllib.parse import urlparse

    port = urlparse(url).port
    if not port or not port_open("127.0.0.1", port):
        return False
    try:
        _client("sqs", url, retries=1).list_queues()
        return True
    except Exception:  # noqa: BLE001 - not up yet
        return False


def _client(service: str, url: str, *, retries: int = 3) -> Any:
    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(read_timeout=300, retries={"max_attempts": retries}, max_pool_connections=8),
    )


def candidates(names: list[str], state_root: Path) -> dict[str, Callable[[], LocalEndpoint]]:
    made: dict[str, Callable[[], LocalEndpoint]] = {}
    for name in names:
        if name == "moto":
            made["moto"] = lambda: Moto()
        elif name in ("ministack", "ministack-hypercorn"):
            from devsupport.ministack import Ministack

            server = "hypercorn" if name == "ministack-hypercorn" else "uvicorn"
            made[name] = lambda server=server: Ministack(state_dir=state_root / server, server=server)
        elif name == "localstack":
            python = os.environ.get("LOCALSTACK_PYTHON", "")
            made["localstack"] = lambda python=python: LocalStack(python)
        else:
            raise SystemExit(f"unknown candidate {name!r}")
    return made


def version(name: str) -> str:
    if name == "moto":
        import moto

        return moto.__version__
    if name.startswith("ministack"):
        from devsupport.ministack import MINISTACK_VERSION

        return MINISTACK_VERSION + (
            " (its own start: hypercorn)" if name == "ministack-hypercorn" else " (uvicorn)"
        )
    python = os.environ.get("LOCALSTACK_PYTHON", "")
    if not python:
        return "?"
    done = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print(m.version('localstack-core'))"],
        capture_output=True,
        text=True,
    )
    return done.stdout.strip() or "?"


@dataclass
class Row:
    depth: int
    fill_per_s: float = 0.0
    receive_per_s: float = 0.0
    receive_calls: int = 0
    receive_cpu_us: float = 0.0  # the endpoint process's CPU per message taken
    publish_per_s: float = 0.0
    publish_calls: int = 0
    publish_cpu_us: float = 0.0  # ... per event published (and delivered to the queue)
    delivered: str = ""
    notes: list[str] = field(default_factory=list)


def fill(sqs: Any, url: str, count: int, budget: float = float("inf")) -> tuple[int, float]:
    """Send ``count`` messages (10 per call, 4 callers) within ``budget`` seconds; (sent, seconds)."""
    calls = count // 10
    entries = [{"Id": str(i), "MessageBody": BODY, "MessageAttributes": ATTRS} for i in range(10)]
    start = time.perf_counter()

    def send(_: int) -> int:
        if time.perf_counter() - start > budget:
            return 0
        resp = sqs.send_message_batch(QueueUrl=url, Entries=entries)
        if resp.get("Failed"):
            raise RuntimeError(f"send failed: {resp['Failed'][:1]}")
        return 10

    with ThreadPoolExecutor(4) as pool:
        sent = sum(pool.map(send, range(calls)))
    return sent, time.perf_counter() - start


def queue_depth(sqs: Any, url: str) -> int:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attrs["Attributes"]["ApproximateNumberOfMessages"])


def receive_delete(
    sqs: Any, url: str, depth: int, seconds: float, cpu: Callable[[], float] = lambda: 0.0
) -> tuple[float, int, float]:
    """receive(10) + delete_batch for ``seconds`` of calls (at least one pair), the queue kept
    within 10% of ``depth``: after each tenth taken, what was taken is sent again (not timed).
    Returns messages/s, the number of calls and the endpoint's CPU (``cpu``) per message taken,
    counted over the timed calls only (not the refills)."""
    taken = calls = 0
    spent = used = 0.0
    while True:
        round_taken = 0
        start, cpu_start = time.perf_counter(), cpu()
        while round_taken < max(depth // 10, 10):
            msgs = sqs.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, MessageAttributeNames=["All"]
            ).get("Messages", [])
            calls += 1
            if not msgs:
                break
            entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(msgs)]
            sqs.delete_message_batch(QueueUrl=url, Entries=entries)
            calls += 1
            round_taken += len(msgs)
            if spent + time.perf_counter() - start >= seconds:
                break
        spent += time.perf_counter() - start
        used += cpu() - cpu_start
        taken += round_taken
        if spent >= seconds or not round_taken:
            break
        fill(sqs, url, round_taken - round_taken % 10)
    return taken / spent, calls, 1e6 * used / max(1, taken)


def publish(sns: Any, topic: str, seconds: float) -> tuple[float, int, int]:
    """PublishBatch (10 per call) for ``seconds`` (at least one call); events/s, calls, events."""
    entries = [{"Id": str(i), "Message": BODY, "MessageAttributes": ATTRS} for i in range(10)]
    sent = calls = 0
    start = time.perf_counter()
    while True:
        resp = sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=entries)
        calls += 1
        sent += len(resp.get("Successful", []))
        if time.perf_counter() - start >= seconds:
            break
    return sent / (time.perf_counter() - start), calls, sent


def endpoint_cpu(pid: int | None) -> Callable[[], float]:
    """Seconds of CPU the endpoint's process (and its children) used so far (0 if unknown)."""
    import psutil

    if pid is None or pid == os.getpid():  # an in-process endpoint: not told apart from this script
        return lambda: 0.0
    proc = psutil.Process(pid)

    def used() -> float:
        return sum(sum(p.cpu_times()[:2]) for p in [proc, *proc.children(recursive=True)])

    return used


def measure_depth(url: str, depth: int, seconds: float, fill_budget: float, cpu: Callable[[], float]) -> Row:
    sqs, sns = _client("sqs", url), _client("sns", url)
    name = f"depth-{depth}-{uuid.uuid4().hex[:6]}"
    q_url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "600"})["QueueUrl"]
    try:
        sent, took = fill(sqs, q_url, depth, fill_budget)
        row = Row(sent, fill_per_s=sent / took)
        if sent < depth:
            row.notes.append(f"filling stopped at {sent:,} of {depth:,} after {took:.0f} s")
        row.receive_per_s, row.receive_calls, row.receive_cpu_us = receive_delete(
            sqs, q_url, sent, seconds, cpu
        )
        arn = sqs.get_queue_attributes(QueueUrl=q_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        topic = sns.create_topic(Name=name)["TopicArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
        before, before_cpu = queue_depth(sqs, q_url), cpu()
        row.publish_per_s, row.publish_calls, sent = publish(sns, topic, seconds)
        deadline = time.monotonic() + 30
        while (got := queue_depth(sqs, q_url) - before) < sent and time.monotonic() < deadline:
            time.sleep(0.5)
        row.publish_cpu_us = 1e6 * (cpu() - before_cpu) / max(1, sent)  # the wait's looks: a few calls
        row.delivered = f"{got}/{sent}"
        sns.delete_topic(TopicArn=topic)
    finally:
        sqs.delete_queue(QueueUrl=q_url)
    return row


def keeps_messages(endpoint: LocalEndpoint) -> str:
    """Send 10, stop it cleanly (SIGTERM), start it again on the same port: how many are there."""
    sqs = _client("sqs", endpoint.url)
    url = sqs.create_queue(QueueName="restart-check")["QueueUrl"]
    entries = [{"Id": str(i), "MessageBody": BODY} for i in range(10)]
    sqs.send_message_batch(QueueUrl=url, Entries=entries)
    endpoint.stop()
    time.sleep(1)
    endpoint.start()
    sqs = _client("sqs", endpoint.url)
    try:
        kept = queue_depth(sqs, sqs.get_queue_url(QueueName="restart-check")["QueueUrl"])
    except Exception as exc:  # noqa: BLE001 - the queue itself is gone
        return f"no (the queue is gone: {type(exc).__name__})"
    return "yes (10 of 10)" if kept == 10 else f"no ({kept} of 10)"


def run_candidate(
    name: str, make: Callable[[], LocalEndpoint], depths: list[int], seconds: float, fill_budget: float
) -> dict:
    result: dict[str, Any] = {"name": name, "version": version(name), "rows": [], "error": "", "restart": ""}
    endpoint = make()
    try:
        endpoint.start()
    except Exception as exc:  # noqa: BLE001 - a candidate that does not run is a result too
        result["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        return result
    try:
        for depth in depths:
            print(f"[{name}] {depth:,} deep ...", flush=True)
            row = measure_depth(endpoint.url, depth, seconds, fill_budget, endpoint_cpu(endpoint.pid))
            print(
                f"[{name}] {depth:,} deep: fill {row.fill_per_s:,.0f} msg/s, receive+delete "
                f"{row.receive_per_s:,.0f} msg/s ({row.receive_calls} calls, {row.receive_cpu_us:,.0f} us of "
                f"its CPU each), publish {row.publish_per_s:,.0f} ev/s ({row.publish_calls} calls, "
                f"{row.publish_cpu_us:,.0f} us each), delivered {row.delivered}"
                + "".join(f"; {n}" for n in row.notes),
                flush=True,
            )
            result["rows"].append(row)
            if row.notes:
                break  # it could not even be filled to this depth: deeper ones are out of reach
        result["restart"] = keeps_messages(endpoint)
    except Exception as exc:  # noqa: BLE001
        result["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    finally:
        endpoint.stop()
    return result


def table(results: list[dict], seconds: float) -> str:
    lines = [
        f"{date.today().isoformat()}, {platform.node()} ({os.cpu_count()} cores, "
        f"Python {platform.python_version()}), {seconds:g} s per measurement",
        "",
        "| emulator | depth | fill (SendMessageBatch) msg/s | receive(10)+delete_batch msg/s (endpoint CPU "
        "per message) | PublishBatch SNS→SQS events/s (endpoint CPU per event) | delivered | keeps messages "
        "across a clean restart; notes |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        label = f"{r['name']} {r['version']}"
        if not r["rows"]:
            lines.append(f"| {label} | — | — | — | — | — | did not run: {r['error']} |")
            continue
        for i, row in enumerate(r["rows"]):
            restart = (r["restart"] or r["error"]) if i == 0 else ""
            restart = "; ".join(filter(None, [restart, *row.notes]))
            lines.append(
                f"| {label} | {row.depth:,} | {row.fill_per_s:,.0f} | {row.receive_per_s:,.0f} "
                f"({row.receive_cpu_us:,.0f} us) | {row.publish_per_s:,.0f} ({row.publish_cpu_us:,.0f} us) "
                f"| {row.delivered} | {restart} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--candidates", default="moto,ministack,ministack-hypercorn,localstack")
    parser.add_argument("--depths", default="1000,10000,50000")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--fill-seconds", type=float, default=300.0, help="give up filling a queue after this long"
    )
    args = parser.parse_args()
    depths = [int(d) for d in args.depths.split(",")]
    state_root = Path(tempfile.mkdtemp(prefix="endpoints-bench-"))
    results = []
    try:
        for name, make in candidates(args.candidates.split(","), state_root).items():
            results.append(run_candidate(name, make, depths, args.seconds, args.fill_seconds))
    finally:
        shutil.rmtree(state_root, ignore_errors=True)
    print()
    print(table(results, args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
