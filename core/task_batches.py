"""Sending many messages of one Celery task at once: SendMessageBatch (10 per call) on SQS.

``send_task`` makes one SendMessage request per task, a signed HTTP round trip each. Here only
kombu's last step, the SQS channel's SendMessage call, is gathered and made as SendMessageBatch
calls of up to 10 entries. An entry SQS refuses is sent again on its own; an error reaches the
caller, as ``send_task``'s would. On another broker each is sent with ``send_task`` as usual.

Building the messages is cheap too. ``send_task`` decides per message what is the same for every
message of one task name: the task's execution options, the route, the parent task, a dozen
configuration values (each read through Django's settings), and only then builds the message with
``app.amqp.create_task_message`` and publishes it with ``app.amqp.send_task_message``. Those
decisions took more CPU than building and encoding the messages did (issue 17: a payments consumer
spent ~40% of its CPU sending charges). ``_TaskMessages`` makes them once per batch, as
``send_task`` makes them (celery/app/base.py), then calls the same two functions per message with
a new task id and its kwargs: the messages are what ``send_task`` sends (same headers, routing,
serializer, retries count, ``eta`` from ``countdown``), and a worker takes, runs, acks and retries
each on its own. A task whose options say ``expires`` (a deadline per message) goes through
``send_task`` message by message, still gathered.

The gathering swaps the ``sqs`` client accessor of the channel held by this producer only (kombu
5.7's SQS transport calls ``self.sqs(queue=...).send_message(**kwargs)`` in ``Channel._put``),
so nothing else sending at the same moment is affected.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from celery import Celery, current_app
from celery.utils.nodenames import anon_nodename
from celery.utils.saferepr import saferepr
from kombu.transport import SQS
from kombu.utils.uuid import uuid

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
        messages = _TaskMessages(app, name, countdown)
        gathered = _Gathered(channel)
        channel.sqs = gathered.client  # type: ignore[method-assign] # this channel, until the finally
        try:
            with producer.connection._reraise_as_library_errors():  # as send_task
                for kwargs in kwargs_list:  # nothing is sent here: no retries, no declaring (provisioned)
                    messages.publish(producer, kwargs)
        finally:
            del channel.sqs
        gathered.send()


class _TaskMessages:
    """``app.send_task(name, kwargs=..., countdown=...)``, with what it decides per task name decided
    once, as it decides it: the task's execution options, the route (task routes go by name), the
    parent task (a pull consumer runs in one), the configuration it reads, and the moment that a
    countdown counts from (one ``eta`` for the batch)."""

    def __init__(self, app: Celery, name: str, countdown: float) -> None:
        self.app, self.name = app, name
        amqp, conf = app.amqp, app.conf
        task_type = app._tasks.get(name)  # as send_task: a name not registered here is sent as is
        options = {}
        if task_type is not None:
            options = {k: v for k, v in task_type._get_exec_options().items() if v is not None}
        self.countdown, self.expires = countdown, options.pop("expires", None)
        self.parent = app.current_worker_task
        self.fields: dict[str, Any] = {  # create_task_message's arguments but the id and kwargs
            "time_limit": options.pop("time_limit", None),
            "soft_time_limit": options.pop("soft_time_limit", None),
            "countdown": countdown,
            "now": app.now() if countdown else None,
            "timezone": app.timezone if countdown else None,
            "reply_to": app.thread_oid,
            "create_sent_event": conf.task_send_sent_event,
            "origin": anon_nodename(),
            "argsrepr": saferepr((), amqp.argsrepr_maxsize, maxlevels=conf.task_repr_maxlevels),
            "ignore_result": None,  # send_task's, when its caller does not say
        }
        self.options = amqp.router.route(options, name, (), {}, task_type)
        if self.parent:
            self.fields["root_id"] = self.parent.request.root_id or self.parent.request.id
            self.fields["parent_id"] = self.parent.request.id
            if conf.task_inherit_parent_priority:
                self.options.setdefault("priority", self.parent.request.delivery_info.get("priority"))
        self.repr_max = (amqp.kwargsrepr_maxsize, conf.task_repr_maxlevels)
        self.backend = app.backend

    def publish(self, producer: Any, kwargs: dict[str, Any]) -> None:
        """One task message with a new id, published through ``producer`` (not retried here)."""
        app, name = self.app, self.name
        if self.expires is not None:  # a deadline per message: send_task's own arithmetic
            app.send_task(
                name, kwargs=kwargs, countdown=self.countdown, producer=producer, retry=False, declare=[]
            )
            return
        task_id = uuid()
        size, levels = self.repr_max
        message = app.amqp.create_task_message(
            task_id, name, (), kwargs, kwargsrepr=saferepr(kwargs, size, maxlevels=levels), **self.fields
        )
        self.backend.on_task_call(producer, task_id)
        app.amqp.send_task_message(producer, name, message, retry=False, declare=[], **self.options)
        if self.parent:
            self.parent.add_trail(app.AsyncResult(task_id))


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
