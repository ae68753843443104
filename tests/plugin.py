"""Loaded with ``-p tests.plugin`` before Django settings are read.

Starts moto's server (devsupport.endpoint) in this process as a real HTTP endpoint on a free
loopback port and points AWS_ENDPOINT_URL at it, so every boto3 client and kombu's SQS
transport in the test run (and in worker subprocesses it spawns) talk to it over HTTP.
"""

from __future__ import annotations

import logging
import os

from devsupport.endpoint import Moto

_endpoint: Moto | None = None


def _start() -> None:
    global _endpoint
    if os.environ.get("BILLING_TEST_ENDPOINT"):
        os.environ["AWS_ENDPOINT_URL"] = os.environ["BILLING_TEST_ENDPOINT"]
        return
    _endpoint = Moto(in_process=True)
    os.environ["AWS_ENDPOINT_URL"] = _endpoint.start()


_start()
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
    if _endpoint is not None:
        _endpoint.stop()


def restart_endpoint(down_seconds: float) -> None:
    """Take the SNS/SQS endpoint down for ``down_seconds``, then bring it back on the same port
    (moto keeps its state in this process, as SQS keeps messages through an outage)."""
    assert _endpoint is not None, "the endpoint is external (BILLING_TEST_ENDPOINT)"
    _endpoint.restart(down_seconds)
