"""The one place AWS clients (botocore's, as boto3 makes them) are made, configured only from settings.

Set ``AWS_ENDPOINT_URL`` and every client talks to that endpoint (moto's
server locally); leave it unset and boto3 reaches real AWS through its usual
credential chain. Clients are created once per process and are thread-safe;
``reset_clients()`` drops them when settings change (tests, endpoint moves).

A forked process (a Celery pool's child, started or replaced after its parent made clients) drops
the clients it inherited: their connection pools hold the parent's sockets, and two processes
reading one socket take each other's answers. It keeps the parsed service models (one botocore
data loader per process, shared by every client's session), so its own clients cost a fifth to a third
of a cold one (``warm()``, which a worker calls before forking its pool, parses them once).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import lru_cache, partial
from typing import Any, TypeVar

import botocore.loaders
import botocore.session
from botocore.config import Config
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from core.per_process import PerProcess

from .direct import DirectCalls, Fallback, credentials_for, proxied
from .forms import form_encode

# The service models parsed from botocore's JSON (about 50 ms a service), kept across sessions.
_loader = botocore.loaders.create_loader()

SERVICES = ("sns", "sqs", "sts", "cloudwatch")

AWS_SETTINGS = {"AWS_ENDPOINT_URL", "AWS_REGION", "RESOURCE_PREFIX", "AWS_DIRECT_CALLS"}

# SendMessageBatch and PublishBatch: at most 10 entries and 256 KiB per request (headroom kept).
BATCH_MAX_ENTRIES = 10
BATCH_MAX_BYTES = 250 * 1024

T = TypeVar("T")


def batch_answer(
    resp: dict[str, Any], entries: int, call: str
) -> tuple[dict[int, str], dict[int, dict[str, Any]]]:
    """A batch call's answer (SendMessageBatch, PublishBatch, DeleteMessageBatch; entry ids: the
    entries' indices, ``entries`` of them): ({index: why it did not go}, {index: its Successful
    entry}). Only an entry the answer lists as successful went: one it leaves out, lists as failed
    too, or an id the request did not hold (an odd answer from an emulator or a proxy) is taken as
    not gone, never as gone: a copy made before a delete must exist."""
    ours = {str(i): i for i in range(entries)}
    failed = dict.fromkeys(range(entries), f"{call}'s answer did not list this entry")
    refused = set()
    for f in resp.get("Failed", []):
        if (i := ours.get(str(f.get("Id")))) is not None:
            failed[i] = f"{f.get('Code')}: {f.get('Message', '')}".strip()
            refused.add(i)
    sent = {}
    for ok in resp.get("Successful", []):
        if (i := ours.get(str(ok.get("Id")))) is not None and i not in refused:
            sent[i] = ok
            failed.pop(i, None)
    return failed, sent


def size_batches(items: Iterable[T], size_of: Callable[[T], int]) -> list[list[T]]:
    """Groups of at most BATCH_MAX_ENTRIES items and BATCH_MAX_BYTES by ``size_of``.

    An item bigger than the byte cap alone goes in a group of its own.
    """
    groups: list[list[T]] = []
    current: list[T] = []
    size = 0
    for item in items:
        item_size = size_of(item)
        if current and (len(current) == BATCH_MAX_ENTRIES or size + item_size > BATCH_MAX_BYTES):
            groups.append(current)
            current, size = [], 0
        current.append(item)
        size += item_size
    if current:
        groups.append(current)
    return groups


def client(service: str) -> Any:
    """A shared boto3 client for ``service`` ("sns", "sqs", "sts", "cloudwatch")."""
    return _clients[service].get()


def calls(service: str) -> Any:
    """What makes ``service``'s hot calls (SQS ReceiveMessage and DeleteMessageBatch, SNS
    PublishBatch): direct.py's, where ``AWS_DIRECT_CALLS`` says, else botocore's client. Either
    takes and returns what botocore's client does."""
    return _calls[service].get()


def _make_calls(service: str) -> Any:
    made = client(service)
    if not direct_calls() or proxied(made):
        return made
    try:
        return DirectCalls(made, credentials_for(settings.AWS_ENDPOINT_URL))
    except Fallback:  # no credentials found: botocore's client says so at its first call
        return made


def direct_calls() -> bool:
    """``AWS_DIRECT_CALLS``; unset (None): on with a local endpoint (``AWS_ENDPOINT_URL``)."""
    chosen = getattr(settings, "AWS_DIRECT_CALLS", None)
    return bool(settings.AWS_ENDPOINT_URL) if chosen is None else bool(chosen)


# botocore's standard retry mode waits up to 20 s before a try after the first, 5 s more if the
# answer asked for it (x-amz-retry-after).
RETRY_MAX_WAIT = 25


def longest_call_seconds() -> float:
    """How long one call may take before the client gives up: every try timing out
    (``AWS_MAX_ATTEMPTS``, and direct.py's own before botocore's where it makes the call), with the
    longest wait between botocore's tries."""
    tries = settings.AWS_MAX_ATTEMPTS
    per_try = settings.AWS_CONNECT_TIMEOUT + settings.AWS_READ_TIMEOUT
    return (tries + direct_calls()) * per_try + (tries - 1) * RETRY_MAX_WAIT


def _make_client(service: str) -> Any:
    kwargs: dict[str, Any] = {"region_name": settings.AWS_REGION}
    if settings.AWS_ENDPOINT_URL:
        kwargs.update(
            endpoint_url=settings.AWS_ENDPOINT_URL,
            aws_access_key_id=settings.AWS_LOCAL_ACCESS_KEY_ID,
            aws_secret_access_key=settings.AWS_LOCAL_SECRET_ACCESS_KEY,
        )
    config = Config(
        connect_timeout=settings.AWS_CONNECT_TIMEOUT,
        read_timeout=settings.AWS_READ_TIMEOUT,
        # (botocore's "max_attempts" counts the tries after the first)
        retries={"mode": "standard", "total_max_attempts": settings.AWS_MAX_ATTEMPTS},
        max_pool_connections=32,
    )
    # A session of its own (a session is not thread-safe, nor safe to carry across a fork: its
    # credential provider's refresh lock), sharing the process's parsed models.
    session = botocore.session.get_session()
    session.register_component("data_loader", _loader)
    made = session.create_client(service, config=config, **kwargs)
    if made.meta.service_model.protocol == "query":  # SNS and STS (SQS speaks JSON)
        made.meta.events.register(f"before-sign.{made.meta.service_model.service_id.hyphenize()}", _form_once)
    return made


# This process's client of each service (a forked child makes its own: core/per_process.py).
_clients = {service: PerProcess(partial(_make_client, service)) for service in SERVICES}
_calls = {service: PerProcess(partial(_make_calls, service)) for service in ("sqs", "sns")}


def _form_once(request: Any, signature_version: Any = None, **kwargs: Any) -> None:
    # Plain SigV4 signing only: a presigned URL's signer ("v4-query") reads the body as a dict.
    if signature_version == "v4" and isinstance(request.data, dict):
        request.data = form_encode(request.data)


def warm(services: Iterable[str] = SERVICES) -> None:
    """Parse the service models and endpoint data now, with the arguments client creation looks
    them up by (the loader caches by call): a process that forks afterwards hands them to its
    children, whose first client of each service then reads no botocore file."""
    for service in services:
        _loader.load_service_model(service, "service-2", api_version=None)
        _loader.load_service_model(service, "endpoint-rule-set-1", api_version=None)
    _loader.load_data_with_path("endpoints")
    _loader.load_data("partitions")
    _loader.load_data("sdk-default-configuration")


def reset_clients() -> None:
    """Forget every client and cached lookup (settings changed, endpoint moved)."""
    for made in (*_clients.values(), *_calls.values()):
        made.reset()
    account_id.cache_clear()
    queue_url.cache_clear()


@receiver(setting_changed)
def _on_setting_changed(setting: str, **kwargs: Any) -> None:
    if setting in AWS_SETTINGS:
        reset_clients()


@lru_cache(maxsize=1)
def account_id() -> str:
    """The AWS account id the credentials belong to (needed to build ARNs)."""
    configured = getattr(settings, "AWS_ACCOUNT_ID", None)
    if configured:
        return str(configured)
    return str(client("sts").get_caller_identity()["Account"])


def partition() -> str:
    region = settings.AWS_REGION
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def topic_arn(name: str) -> str:
    """ARN of the SNS topic with this full (prefixed) name."""
    return f"arn:{partition()}:sns:{settings.AWS_REGION}:{account_id()}:{name}"


def queue_arn(name: str) -> str:
    """ARN of the SQS queue with this full (prefixed) name."""
    return f"arn:{partition()}:sqs:{settings.AWS_REGION}:{account_id()}:{name}"


def queue_depth(name: str) -> int:
    """Messages in the queue: visible plus in flight."""
    attrs = client("sqs").get_queue_attributes(
        QueueUrl=queue_url(name),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


@lru_cache(maxsize=256)
def queue_url(name: str) -> str:
    """URL of an existing SQS queue by full name (raises if it does not exist)."""
    return str(client("sqs").get_queue_url(QueueName=name)["QueueUrl"])
