"""Consuming: each consuming app registers handlers per event type (``registry``); the consumer
runtime (``runtime``) turns one SQS message into one outcome (handled, duplicate, unhandled,
failed, poison) and never raises; push mode (``push``: pollers inside every worker, started by
``bootsteps``) and pull mode (``pull``: a beat task at a set pace) share it and the SQS side
(``sqs``); ``dlq`` inspects and redrives dead-lettered messages.

Apps use ``@handles(event_type)`` and receive an ``Event``.
"""

from .registry import Event, handles

__all__ = ["Event", "handles"]
