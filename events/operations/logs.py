"""Structured logs: JSON in production, readable text in development.

Every line carries event_id, event_type, consumer, sqs_message_id and the Celery task_id when
there is one (set by the consumer machinery with ``log_context``), and secrets are scrubbed
from messages (bearer tokens, AWS secret keys, passwords in URLs).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

FIELDS = ("event_id", "event_type", "consumer", "sqs_message_id", "task_id")
_context: ContextVar[dict[str, str] | None] = ContextVar("billing_log_context", default=None)

SECRETS = [
    (re.compile(r"(?i)\b(bearer|token)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 [redacted]"),
    (
        re.compile(
            r"(?i)(aws_secret_access_key|secret_key|password|api_key)(['\"]?\s*[:=]\s*['\"]?)[^\s'\",]+"
        ),
        r"\1\2[redacted]",
    ),
    (re.compile(r"://([^:/@\s]+):([^@/\s]+)@"), r"://\1:[redacted]@"),
]


@contextmanager
def log_context(**fields: str) -> Iterator[None]:
    token = _context.set({**(_context.get() or {}), **{k: str(v) for k, v in fields.items() if v}})
    try:
        yield
    finally:
        _context.reset(token)


def redact(text: str) -> str:
    for pattern, replacement in SECRETS:
        text = pattern.sub(replacement, text)
    return text


class ContextFilter(logging.Filter):
    """Adds the event/task fields to every record and scrubs secrets from the message."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = _context.get() or {}
        for name in FIELDS:
            if not getattr(record, name, ""):
                setattr(record, name, ctx.get(name, ""))
        if not record.task_id:  # type: ignore[attr-defined]
            try:
                from celery import current_task

                if current_task and current_task.request and current_task.request.id:
                    record.task_id = current_task.request.id
            except Exception:  # noqa: BLE001 - logging must never fail
                pass
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = " ".join(f"{k}={getattr(record, k)}" for k in FIELDS if getattr(record, k, ""))
        return f"{line} [{extra}]" if extra else line


def json_formatter(**kwargs: Any) -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s " + " ".join(f"%({f})s" for f in FIELDS),
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
    )
