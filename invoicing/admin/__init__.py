"""Operators' console for invoicing: invoices and credit notes with their lines, the projection
of agreements (approvals), daily runs."""

from .documents import CreditNoteAdmin, InvoiceAdmin
from .projection import BillableAgreementAdmin
from .runs import DailyRunAdmin

__all__ = ["BillableAgreementAdmin", "CreditNoteAdmin", "DailyRunAdmin", "InvoiceAdmin"]
