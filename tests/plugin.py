"""Loaded with ``-p tests.plugin`` before Django settings are read.

Starts the local SNS/SQS endpoint (devsupport.endpoint) as a real HTTP endpoint on a free
loopback port and points AWS_ENDPOINT_URL at it, so every boto3 client and kombu's SQS
transport in the test run (and in worker subprocesses it spawns) talk to it over HTTP:
ministack (its own process; its state kept in a temporary folder across ``restart_endpoint``),
which ran the whole suite in 500 s where moto took 788 s (README, "Local SNS/SQS endpoint");
``TEST_LOCAL_ENDPOINT=moto`` runs it on moto's server in this process instead, and moto stands in,
saying so, when ministack cannot be installed or started.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from devsupport.endpoint import LocalEndpoint, local_endpoint

_endpoint: LocalEndpoint | None = None
_state: Path | None = None
KIND = os.environ.get("TEST_LOCAL_ENDPOINT", "ministack")
_described = KIND


def _start() -> None:
    global _endpoint, _state, _described
    if os.environ.get("BILLING_TEST_ENDPOINT"):
        os.environ["AWS_ENDPOINT_URL"] = os.environ["BILLING_TEST_ENDPOINT"]
        _described = "external"
        return
    if KIND == "ministack":
        _state = Path(tempfile.mkdtemp(prefix="test-ministack-"))
        endpoint = local_endpoint("ministack", state_dir=_state)
        try:
            os.environ["AWS_ENDPOINT_URL"] = endpoint.start()
            _endpoint = endpoint
            return
        except Exception as exc:  # noqa: BLE001 - any failure: moto stands in, and the header says why
            endpoint.stop()
            _described = f"moto: ministack unusable ({type(exc).__name__}: {exc})"
            print(f"[tests] {_described}", flush=True)
    _endpoint = local_endpoint("moto", in_process=True)
    os.environ["AWS_ENDPOINT_URL"] = _endpoint.start()


_start()
logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto logs every API call
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("RESOURCE_PREFIX", "billing-test-")
# Short long-polls keep embedded workers quick to stop.
os.environ.setdefault("CELERY_SQS_WAIT_TIME_SECONDS", "1")
os.environ.setdefault("CELERY_SQS_POLLING_INTERVAL", "0.1")


def emulator_that_runs() -> str:
    """ "ministack" if the suite's ministack started here, else "moto" (what stood in for it)."""
    from devsupport.ministack import Ministack

    return "ministack" if isinstance(_endpoint, Ministack) else "moto"


def pytest_report_header() -> str:
    return f"SNS/SQS endpoint: {os.environ['AWS_ENDPOINT_URL']} ({_described})"


def pytest_unconfigure() -> None:
    if _endpoint is not None:
        _endpoint.stop()
    if _state is not None:
        shutil.rmtree(_state, ignore_errors=True)


def restart_endpoint(down_seconds: float) -> None:
    """Take the SNS/SQS endpoint down for ``down_seconds``, then bring it back on the same port
    (moto keeps its state in this process, ministack in its state folder, as SQS keeps messages
    through an outage)."""
    assert _endpoint is not None, "the endpoint is external (BILLING_TEST_ENDPOINT)"
    _endpoint.restart(down_seconds)
