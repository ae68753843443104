"""Celery entry points of invoicing. Thin: parse arguments, call a service, send what it asks."""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

import psycopg2
from celery import shared_task
from django.conf import settings
from django.db import DatabaseError, InterfaceError

from core.task_options import backoff_seconds

from .models import DailyRunChunk
from .services import (
    billing_today,
    chunk_execute,
    chunk_fail,
    chunks_mark_enqueued,
    daily_run_start,
    daily_run_watchdog,
    invoices_issue_chunk,
)

logger = logging.getLogger(__name__)

# A dropped connection, a deadlock, a serialization failure: worth another try. psycopg2's own
# errors are listed too, for any cursor path that does not go through Django's error wrapping.
RETRYABLE = (DatabaseError, InterfaceError, psycopg2.Error)


@shared_task(name="invoicing.issue_due_invoices", bind=True, ignore_result=True, acks_late=True)
def issue_due_invoices(self: Any, run_date: str | None = None) -> int:
    """The daily run: record it with its chunks, then fan them out on the invoicing queue.

    Safe to run twice or concurrently: chunks lock their agreements (FOR UPDATE) and each period
    is invoiced once. A chunk not sent (this task died midway) is sent by the watchdog.
    """
    day = date.fromisoformat(run_date) if run_date else billing_today()
    run, chunks = daily_run_start(run_date=day)
    sent = []
    for chunk in chunks:
        issue_invoice_chunk.apply_async(
            kwargs={
                "run_id": run.pk,
                "run_date": day.isoformat(),
                "pk_from": chunk.pk_from,
                "pk_to": chunk.pk_to,
                "chunk_id": chunk.pk,
            }
        )
        sent.append(chunk.pk)
    chunks_mark_enqueued(sent)
    return len(chunks)


@shared_task(name="invoicing.issue_invoice_chunk", bind=True, ignore_result=True, acks_late=True)
def issue_invoice_chunk(
    self: Any, run_id: int, run_date: str, pk_from: int, pk_to: int, chunk_id: int | None = None
) -> int:
    """Issue the due invoices of one chunk of agreements (one transaction). Idempotent.

    Database errors are retried (bounded backoff); a chunk that still fails, or fails for any
    other reason, is recorded as failed and its run ends ``failed`` with an alert.
    """
    if chunk_id is None:  # a message sent before chunks were recorded: no bookkeeping
        chunk_id = (
            DailyRunChunk.objects.filter(run_id=run_id, pk_from=pk_from, pk_to=pk_to)
            .values_list("pk", flat=True)
            .first()
        )
        if chunk_id is None:
            return invoices_issue_chunk(
                run_date=date.fromisoformat(run_date), pk_from=pk_from, pk_to=pk_to
            ).issued
    try:
        return chunk_execute(chunk_id=chunk_id).issued
    except RETRYABLE as exc:
        if self.request.retries < settings.INVOICING_CHUNK_MAX_RETRIES:
            logger.warning("chunk %s of run %s: %s; retrying", chunk_id, run_id, exc)
            raise self.retry(exc=exc, countdown=backoff_seconds(self.request.retries, maximum=120)) from None
        _fail(chunk_id, exc)
    except Exception as exc:  # noqa: BLE001 - not a database hiccup: retrying will not help
        logger.exception("chunk %s of run %s failed", chunk_id, run_id)
        _fail(chunk_id, exc)
    return 0


def _fail(chunk_id: int, exc: BaseException) -> None:
    try:
        chunk_fail(chunk_id=chunk_id, error=f"{type(exc).__name__}: {exc}")
    except RETRYABLE:  # the database is still away: the watchdog gives up on the chunk later
        logger.exception("chunk %s: could not record its failure", chunk_id)


@shared_task(name="invoicing.daily_run_watchdog", bind=True, ignore_result=True, acks_late=True)
def daily_run_watchdog_task(self: Any) -> dict[str, int]:
    """Beat: resend chunks whose worker died (or that were never sent), fail chunks past their
    attempts, finish runs whose chunks have all ended. Idempotent; safe beside running chunks."""
    report = daily_run_watchdog()
    for kwargs in report.resend:
        logger.warning(
            "daily run %s: chunk %s lost its worker; sending it again", kwargs["run_id"], kwargs["chunk_id"]
        )
        issue_invoice_chunk.apply_async(kwargs=kwargs)
    return {"resent": len(report.resend), "failed": report.failed, "finished": report.finished}
