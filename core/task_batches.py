"""Sending many messages of one Celery task at once: SendMessageBatch (10 per call) on SQS.

``send_task`` makes one SendMessage request per task, a signed HTTP round trip each. Here Celery
and kombu build every message exactly as ``send_task`` does (routing, headers, body, encoding,
countdown); only kombu's last step, the SQS channel's SendMessage call, is gathered and made as
SendMessageBatch calls of up to 10 entries. An entry SQS refuses is sent again on its own; an
error reaches the caller, as ``send_task``'s would. On another broker each is sent as usual.

The gathering swaps the ``sqs`` client accessor of the channel held by this producer only (kombu
5.7's SQS transport calls ``self.sqs(queue=...).send_message(**kwargs)`` in ``Channel._put``),
so nothing else sending at the same moment is affected.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from celery import current_app
from kombu.transport import SQS

logger = logging.getLogger(__name__)

SQS_BATCH_MAX = 10  # entries per SendMessageBatch (an AWS limit)


def send_tasks(name: str, kwargs_list: Sequence[dict[str, Any]], *, countdown: float = 0) -> None:
    """Send one ``name`` task message per kwargs in ``kwargs_list``, batched (see the module doc)."""
    if not kwargs_list:
        return
    app = current_app
    with app.producer_or_acquire() as producer:
        channel = producer.channel
        if not isinstance(channel, SQS.Channel):
            for kwargs in kwargs_list:
                app.send_task(name, kwargs=kwargs, countdown=countdown, producer=producer)
            return
        gathered = _Gathered(channel)
        channel.sqs = gathered.client  # type: ignore[method-assign] # this channel, until the finally
        try:
            for kwargs in kwargs_list:  # nothing is sent here: no retries, no declaring (provisioned)
                app.send_task(
                    name, kwargs=kwargs, countdown=countdown, producer=producer, retry=False, declare=[]
                )
        finally:
            del channel.sqs
        gathered.send()


class _Gathered:
    """SendMessage calls of one channel, held and then made as SendMessageBatch calls."""

    def __init__(self, channel: Any) -> None:
        self.sqs = channel.sqs  # the bound method, resolved before the swap
        self.held: list[tuple[str | None, dict[str, Any]]] = []  # (kombu queue name, SendMessage kwargs)

    def client(self, queue: str | None = None) -> Any:
        return _Holding(self, self.sqs(queue=queue), queue)

    def send(self) -> None:
        by_url: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
        for queue, kwargs in self.held:
            by_url.setdefault((kwargs["QueueUrl"], queue), []).append(kwargs)
        for (url, queue), messages in by_url.items():
            client = self.sqs(queue=queue)
            for i in range(0, len(messages), SQS_BATCH_MAX):
                chunk = messages[i : i + SQS_BATCH_MAX]
                resp = client.send_message_batch(
                    QueueUrl=url,
                    Entries=[
                        {"Id": str(j), **{k: v for k, v in m.items() if k != "QueueUrl"}}
                        for j, m in enumerate(chunk)
                    ],
                )
                for failed in resp.get("Failed", []):
                    logger.warning("SQS refused a task message of a batch, sending it alone: %s", failed)
                    client.send_message(**chunk[int(failed["Id"])])


class _Holding:
    """The channel's SQS client, except that SendMessage is held for the batch."""

    def __init__(self, gathered: _Gathered, client: Any, queue: str | None) -> None:
        self._gathered, self._client, self._queue = gathered, client, queue

    def send_message(self, **kwargs: Any) -> dict[str, Any]:
        self._gathered.held.append((self._queue, kwargs))
        return {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)
