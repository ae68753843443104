"""Consuming: each consuming app registers handlers per event type (``registry``); the consumer
runtime (``runtime``) turns one SQS message into one outcome (handled, duplicate, unhandled,
failed, poison) and never raises; ``batch`` runs a receive batch of a consumer whose handlers take
batches in one transaction, falling back to one message at a time; ``processed`` writes the
processed-event records; push mode (``push``: pollers inside every worker, started by
``bootsteps``) and pull mode (``pull``: a beat task at a set pace) share them and the SQS side
(``sqs``); ``dlq`` inspects and redrives dead-lettered messages.

Apps use ``@handles(event_type)`` and receive an ``Event``, or ``@handles_batch(*event_types)`` and
receive a list of them. A handler raises ``Poison`` for an event it can never apply as it is (it
goes to the DLQ with that reason, at once, instead of failing until SQS gives up on it).
"""

from ..envelope import Poison
from .registry import Event, handles, handles_batch

__all__ = ["Event", "Poison", "handles", "handles_batch"]
