"""Loaded with ``-p tests.plugin`` before Django settings are read.

Starts moto's server as a real HTTP endpoint on a free loopback port and points
AWS_ENDPOINT_URL at it, so every boto3 client and kombu's SQS transport in the
test run (and in worker subprocesses it spawns) talk to it over HTTP.
"""

from __future__ import annotations

import os

from moto.server import ThreadedMotoServer

_server: ThreadedMotoServer | None = None


def _start() -> None:
    global _server
    # Tests purge queues between cases; real SQS (and moto by default) allow one purge a minute.
    os.environ.setdefault("MOTO_SQS_ENFORCE_STRICT_QUEUE_PURGE_BEHAVIOUR", "false")
    if os.environ.get("BILLING_TEST_ENDPOINT"):
        os.environ["AWS_ENDPOINT_URL"] = os.environ["BILLING_TEST_ENDPOINT"]
        return
    _server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    _server.start()
    host, port = _server.get_host_and_port()
    os.environ["AWS_ENDPOINT_URL"] = f"http://{host}:{port}"


_start()
import logging  # noqa: E402

logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto logs every API call
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("RESOURCE_PREFIX", "billing-test-")
# Short long-polls keep embedded workers quick to stop.
os.environ.setdefault("CELERY_SQS_WAIT_TIME_SECONDS", "1")
os.environ.setdefault("CELERY_SQS_POLLING_INTERVAL", "0.1")


def pytest_report_header() -> str:
    return f"SNS/SQS endpoint: {os.environ['AWS_ENDPOINT_URL']} (moto server)"


def pytest_unconfigure() -> None:
    if _server is not None:
        _server.stop()


def restart_endpoint(down_seconds: float) -> None:
    """Take the SNS/SQS endpoint down for ``down_seconds``, then bring it back on the same port
    (moto keeps its state in this process, as SQS keeps messages through an outage)."""
    import time

    global _server
    assert _server is not None, "the endpoint is external (BILLING_TEST_ENDPOINT)"
    host, port = _server.get_host_and_port()
    _server.stop()
    time.sleep(down_seconds)
    _server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    _server.start()
