"""Use cases of the invoicing context, one module per concept:

- ``projection``: agreement events folded into invoicing's own view of each agreement;
- ``billing``: which periods are billable and at what price (pure rules);
- ``daily_run`` and ``runner``: the daily run, its chunks, and the watchdog that finishes it;
- ``issuing``: invoices written in bulk, numbered gap-free, with their events;
- ``invoices``: invoice state through its state machine (paid, uncollectible, void);
- ``corrections``: passed periods brought back to what the agreement's history says (void and
  reissue, credit notes), and the operator's approval of old ones.
"""

from .billing import billing_today
from .corrections import agreement_reconcile, correction_approve, credit_note_issue
from .daily_run import (
    chunk_execute,
    chunk_fail,
    chunk_ranges,
    daily_run_finish,
    daily_run_start,
    invoices_issue_chunk,
)
from .invoices import invoice_mark_paid, invoice_mark_uncollectible, invoice_void, invoices_mark_paid
from .projection import projection_apply, projection_apply_batch
from .runner import (
    RunSummary,
    catchup_approve,
    chunks_mark_enqueued,
    daily_run_watchdog,
    flagged_agreements,
    invoices_run_inline,
)

__all__ = [
    "RunSummary",
    "agreement_reconcile",
    "billing_today",
    "catchup_approve",
    "chunk_execute",
    "chunk_fail",
    "chunk_ranges",
    "chunks_mark_enqueued",
    "correction_approve",
    "credit_note_issue",
    "daily_run_finish",
    "daily_run_start",
    "daily_run_watchdog",
    "flagged_agreements",
    "invoice_mark_paid",
    "invoice_mark_uncollectible",
    "invoice_void",
    "invoices_issue_chunk",
    "invoices_mark_paid",
    "invoices_run_inline",
    "projection_apply",
    "projection_apply_batch",
]
