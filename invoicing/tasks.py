"""Celery entry points of invoicing. Thin: parse arguments, call a service."""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

from celery import shared_task
from django.db import DatabaseError

from events.task_options import IDEMPOTENT_DB_TASK

from .models import DailyRun
from .services import billing_today, daily_run_finish, daily_run_start, invoices_issue_chunk

logger = logging.getLogger(__name__)


@shared_task(name="invoicing.issue_due_invoices", bind=True, ignore_result=True, acks_late=True)
def issue_due_invoices(self: Any, run_date: str | None = None) -> int:
    """The daily run: cut the due agreements into chunks and fan them out on the invoicing queue.

    Safe to run twice or concurrently: chunks lock their agreements (FOR UPDATE)
    and each period is invoiced once (unique constraint). Returns the chunk count.
    """
    day = date.fromisoformat(run_date) if run_date else billing_today()
    run, ranges = daily_run_start(run_date=day)
    for pk_from, pk_to in ranges:
        issue_invoice_chunk.apply_async(
            kwargs={"run_id": run.pk, "run_date": day.isoformat(), "pk_from": pk_from, "pk_to": pk_to}
        )
    return len(ranges)


@shared_task(name="invoicing.issue_invoice_chunk", **{**IDEMPOTENT_DB_TASK, "retry_backoff_max": 120})
def issue_invoice_chunk(self: Any, run_id: int, run_date: str, pk_from: int, pk_to: int) -> int:
    """Issue the due invoices of one chunk of agreements (one transaction). Idempotent."""
    result = invoices_issue_chunk(
        run_date=date.fromisoformat(run_date), pk_from=pk_from, pk_to=pk_to, run_id=run_id
    )
    try:  # committed: a failure from here on must not retry (and count) the chunk again
        run = DailyRun.objects.get(pk=run_id)
        if run.chunks_done >= run.chunks_total and run.finished_at is None:
            daily_run_finish(run=run)
    except DatabaseError:
        logger.exception("daily run %s: chunk done, but the run could not be marked finished", run_id)
    return result.issued
