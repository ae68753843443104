"""The three calls every event makes, sent without botocore's request pipeline: SQS ReceiveMessage
and DeleteMessageBatch (each consumer's poll and settle) and SNS PublishBatch (the relay).

botocore spends more CPU on such a call than the call itself does: validating the parameters against
the service model, serializing through it, a dozen event hooks, retry bookkeeping and parsing the
answer shape by shape took 54% of a ReceiveMessage's client CPU and 51% of a PublishBatch's
(``bench/aws_call_cost.py``), and the pipeline's workers spend most of their time in those calls
(``bench/pipeline.py``). Here the request body is built directly (JSON for SQS, the form for SNS,
as botocore writes them), signed by botocore's own SigV4 signer with the credentials botocore
resolves, sent with urllib3 and its answer read with orjson or ElementTree, into the same
dictionaries botocore returns (``events/tests/test_aws_direct.py`` compares the two).

Only a plain success is read here. An error status, or a connection that fails or times out, is
sent again through botocore's client, whose retries, error classes and messages callers already
handle: a down endpoint still raises botocore's ``EndpointConnectionError``, an unknown queue its
``ClientError``. Sending again after a timeout is what botocore's own retry does too (a PublishBatch
whose answer was lost may publish twice; consumers are idempotent), so a hung endpoint costs one
attempt more than ``AWS_MAX_ATTEMPTS``. A 200 whose answer does not parse is never sent again (the
call was carried out): it raises botocore's ``ResponseParserError``, as botocore would.

What a fallback says: an answer the endpoint gives any client (a 4xx such as an unknown queue,
which the caller gets as botocore's error) is logged at debug level; one the endpoint gives only this
path's requests (a 403: a signature it refused; a TLS failure) is a warning, and three in a row turn
direct calls off in the process, with an error logged, so a misfit endpoint costs a call twice only
until then; anything else (a 5xx, a connection refused) is a warning the first time in a process.

Used where ``AWS_DIRECT_CALLS`` says (by default: with ``AWS_ENDPOINT_URL`` set, the local endpoint
it was measured and tested on); against real AWS botocore makes every call unless it is set.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import urllib.request
import xml.etree.ElementTree as ElementTree
from typing import Any
from urllib.parse import urlsplit

import botocore.auth
import botocore.awsrequest
import botocore.credentials
import botocore.httpsession
import botocore.session
import orjson
import urllib3
from botocore.parsers import ResponseParserError
from django.conf import settings

from .forms import form_encode

logger = logging.getLogger(__name__)

_JSON_HEADERS = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-query-mode": "true"}
_FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
SNS_VERSION = "2010-03-31"
TURN_OFF_AFTER = 3  # answers only this path gets (a refused signature, TLS), in a row


class Fallback(Exception):
    """This call is botocore's to make (the reason is the message). ``misfit``: the endpoint
    refused this path's request as no client's (a signature, TLS); ``ordinary``: an answer any
    client gets (a 4xx), or a request this path does not build (decided before sending)."""

    def __init__(self, reason: str, *, misfit: bool = False, ordinary: bool = False) -> None:
        super().__init__(reason)
        self.misfit = misfit
        self.ordinary = ordinary


class DirectCalls:
    """``receive_message``, ``delete_message_batch`` (SQS) or ``publish_batch`` (SNS), taking and
    returning what botocore's client methods do; every other attribute is ``client``'s."""

    def __init__(self, client: Any, credentials: Any) -> None:
        self.client = client
        self.service = client.meta.service_model.signing_name
        self.region = client.meta.region_name
        self.url = client.meta.endpoint_url.rstrip("/") + "/"
        self.credentials = credentials
        self.pool = urllib3.PoolManager(
            maxsize=32,
            retries=False,
            ca_certs=os.environ.get("AWS_CA_BUNDLE") or botocore.httpsession.get_cert_path(True),
            timeout=urllib3.Timeout(  # the client's own, as aws.py configured it
                connect=client.meta.config.connect_timeout, read=client.meta.config.read_timeout
            ),
        )
        self._warned: set[str] = set()
        self._misfits = 0  # in a row
        self.off = False  # turned off in this process: botocore makes every call
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    # -- SQS -----------------------------------------------------------------------------------
    def receive_message(self, **params: Any) -> dict[str, Any]:
        return self._call("ReceiveMessage", "receive_message", params, self._sqs, _messages)

    def delete_message_batch(self, **params: Any) -> dict[str, Any]:
        return self._call("DeleteMessageBatch", "delete_message_batch", params, self._sqs, _as_is)

    def _sqs(self, operation: str, params: dict[str, Any]) -> bytes:
        return self._send(orjson.dumps(params), sqs_headers(operation))

    # -- SNS -----------------------------------------------------------------------------------
    def publish_batch(self, **params: Any) -> dict[str, Any]:
        return self._call("PublishBatch", "publish_batch", params, self._sns_publish_batch, _batch_result)

    def _sns_publish_batch(self, operation: str, params: dict[str, Any]) -> bytes:
        return self._send(form_encode(publish_batch_form(params)).encode("utf-8"), _FORM_HEADERS)

    # -- one call ------------------------------------------------------------------------------
    def _call(
        self, operation: str, method: str, params: dict[str, Any], send: Any, read: Any
    ) -> dict[str, Any]:
        if not self.off:
            try:
                data = send(operation, params)
            except (Fallback, urllib3.exceptions.HTTPError) as exc:
                self._fell_back(operation, exc)
            else:
                if self._misfits:
                    with self._lock:
                        self._misfits = 0
                try:
                    return read(data)
                except Exception as exc:  # noqa: BLE001 - carried out: not sent again
                    raise ResponseParserError(
                        f"{operation}: an answer that could not be read: {exc}"
                    ) from exc
        return getattr(self.client, method)(**params)

    def _send(self, body: bytes, headers: dict[str, str]) -> bytes:
        request = botocore.awsrequest.AWSRequest("POST", self.url, data=body, headers=headers)
        credentials = self.credentials.get_frozen_credentials()
        botocore.auth.SigV4Auth(credentials, self.service, self.region).add_auth(request)
        answer = self.pool.request("POST", self.url, body=body, headers=dict(request.headers.items()))
        if answer.status != 200:
            code = answer.headers.get("x-amzn-query-error", "").split(";")[0]
            said = code or answer.data[:160].decode("utf-8", "replace")
            status = answer.status
            raise Fallback(f"HTTP {status} {said}", misfit=status == 403, ordinary=400 <= status < 500)
        return answer.data

    def _fell_back(self, operation: str, exc: Exception) -> None:
        misfit = getattr(exc, "misfit", False) or isinstance(exc, urllib3.exceptions.SSLError)
        ordinary = getattr(exc, "ordinary", False) and not misfit
        status = str(exc).split(" ", 2)[:2] if isinstance(exc, Fallback) else [type(exc).__name__]
        key = f"{operation}: {' '.join(status)}"
        with self._lock:
            first = key not in self._warned
            self._warned.add(key)
            self._misfits = self._misfits + 1 if misfit else 0
            turn_off = misfit and self._misfits >= TURN_OFF_AFTER and not self.off
            self.off = self.off or turn_off
        said = f"{type(exc).__name__}: {str(exc)[:200]}"
        if turn_off:
            logger.error(
                "%s direct calls turned off in this process after %d refusals in a row (%s); botocore "
                "makes every call (AWS_DIRECT_CALLS=false says so for good)",
                self.service.upper(),
                TURN_OFF_AFTER,
                said,
            )
        log = logger.debug if ordinary or not (first or misfit) else logger.warning
        log("%s sent through botocore (%s)", operation, said)


def sqs_headers(operation: str) -> dict[str, str]:
    """An SQS JSON-protocol request's headers, as botocore sends them (before signing)."""
    return {**_JSON_HEADERS, "X-Amz-Target": f"AmazonSQS.{operation}"}


def publish_batch_form(params: dict[str, Any]) -> dict[str, str]:
    """PublishBatch's parameters as the query protocol's form fields, as botocore serializes them
    (text fields and String/Number attributes; anything else is botocore's to send: Fallback)."""
    form = {"Action": "PublishBatch", "Version": SNS_VERSION, "TopicArn": params["TopicArn"]}
    for i, entry in enumerate(params["PublishBatchRequestEntries"], 1):
        member = f"PublishBatchRequestEntries.member.{i}"
        for key, value in entry.items():
            if key == "MessageAttributes":
                for j, (name, attr) in enumerate(value.items(), 1):
                    prefix = f"{member}.MessageAttributes.entry.{j}"
                    form[f"{prefix}.Name"] = name
                    for field, text in attr.items():
                        if field != "StringValue" and field != "DataType":
                            raise Fallback(f"a {field} attribute", ordinary=True)
                        form[f"{prefix}.Value.{field}"] = text
            elif isinstance(value, str):
                form[f"{member}.{key}"] = value
            else:
                raise Fallback(f"an entry's {key}", ordinary=True)
    return form


def _as_is(data: bytes) -> dict[str, Any]:
    answer = orjson.loads(data)
    if not isinstance(answer, dict):
        raise Fallback("not an object")
    return answer


def _messages(data: bytes) -> dict[str, Any]:
    """ReceiveMessage's answer; binary attribute values decoded, as botocore's parser does."""
    answer = _as_is(data)
    for message in answer.get("Messages", ()):
        for attr in message.get("MessageAttributes", {}).values():
            if "BinaryValue" in attr:
                attr["BinaryValue"] = base64.b64decode(attr["BinaryValue"])
            if "BinaryListValues" in attr:
                attr["BinaryListValues"] = [base64.b64decode(v) for v in attr["BinaryListValues"]]
    return answer


def _batch_result(data: bytes) -> dict[str, Any]:
    """PublishBatch's XML answer as botocore parses it: Successful and Failed entries."""
    result: dict[str, Any] = {"Successful": [], "Failed": []}
    root = ElementTree.fromstring(data)
    found = False
    for element in root.iter():
        kind = _local(element.tag)
        if kind not in result:
            continue
        found = True
        for member in element:
            entry = {_local(field.tag): field.text or "" for field in member}
            if "SenderFault" in entry:
                entry["SenderFault"] = entry["SenderFault"].lower() == "true"
            result[kind].append(entry)
    if not found:
        raise Fallback("no PublishBatchResult")
    return result


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def proxied(client: Any) -> bool:
    """Whether botocore would reach the client's endpoint through a proxy (``HTTPS_PROXY`` and the
    like, or its ``proxies`` config): this path has none, so the client makes those calls."""
    url = urlsplit(client.meta.endpoint_url)
    if client.meta.config.proxies:
        return True
    return bool(urllib.request.getproxies().get(url.scheme)) and not urllib.request.proxy_bypass(
        url.hostname or ""
    )


def credentials_for(endpoint_url: str | None) -> Any:
    """The credentials botocore's clients use: the local endpoint's static pair, or the default
    chain's (which refresh themselves: an instance profile's, a web identity's)."""
    if endpoint_url:
        return botocore.credentials.Credentials(
            settings.AWS_LOCAL_ACCESS_KEY_ID, settings.AWS_LOCAL_SECRET_ACCESS_KEY
        )
    found = botocore.session.get_session().get_credentials()
    if found is None:
        raise Fallback("no credentials")
    return found
