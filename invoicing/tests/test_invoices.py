"""Invoice state from payment events, operators' commands, and admin."""

from __future__ import annotations

from datetime import date

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command

from events.models import OutboxEvent
from invoicing.models import Invoice, PendingPaymentOutcome
from invoicing.services import (
    invoice_mark_paid,
    invoice_mark_uncollectible,
    invoices_run_inline,
    projection_apply,
)
from tests.helpers import ctrl_c_at_progress

from .factories import agreement_event

pytestmark = pytest.mark.django_db


@pytest.fixture
def invoice() -> Invoice:
    projection_apply(event=agreement_event("agreement.created", "A", 1, start_date="2026-01-01"))
    invoices_run_inline(run_date=date(2026, 1, 1))
    return Invoice.objects.get()


def test_paid_then_a_late_final_failure_stays_paid(invoice):
    invoice_mark_paid(invoice_id=str(invoice.id), payment_id="P1")
    invoice_mark_uncollectible(
        invoice_id=str(invoice.id), payment_id="P1", reason="hard_decline: stolen card"
    )
    invoice.refresh_from_db()
    assert invoice.status == "paid" and invoice.aggregate_version == 2
    assert list(
        OutboxEvent.objects.filter(aggregate_id=str(invoice.id))
        .values_list("type", flat=True)
        .order_by("aggregate_version")
    ) == ["invoice.issued", "invoice.paid"]


def test_final_failure_then_a_late_success_ends_paid(invoice):
    invoice_mark_uncollectible(invoice_id=str(invoice.id), payment_id="P1", reason="soft_decline: exhausted")
    invoice_mark_paid(invoice_id=str(invoice.id), payment_id="P2")
    invoice.refresh_from_db()
    assert invoice.status == "paid" and invoice.aggregate_version == 3


def test_payment_for_an_unknown_invoice_is_kept_and_applied_when_it_is_issued():
    projection_apply(event=agreement_event("agreement.created", "B", 1, start_date="2026-01-01"))
    invoices_run_inline(run_date=date(2026, 1, 1))
    issued = Invoice.objects.get()
    # simulate the payment event having arrived before the invoice row existed
    Invoice.objects.all().delete()
    assert invoice_mark_paid(invoice_id=str(issued.id), payment_id="P9") is None
    assert PendingPaymentOutcome.objects.filter(invoice_id=str(issued.id)).exists()


def test_preview_writes_nothing_and_issue_issues(capsys):
    projection_apply(
        event=agreement_event("agreement.created", "C", 1, start_date="2026-01-01", amount_minor=1250)
    )
    call_command("invoices_preview", "--date", "2026-03-01")
    out = capsys.readouterr().out
    assert "Would issue 3 invoice(s) for 2026-03-01." in out and "EUR: €37.50" in out
    assert not Invoice.objects.exists() and not OutboxEvent.objects.exists()
    call_command("invoices_issue", "--date", "2026-03-01")
    assert "Issued 3 invoice(s)" in capsys.readouterr().out
    assert Invoice.objects.count() == 3
    with pytest.raises(CommandError, match="is not a date"):
        call_command("invoices_issue", "--date", "March 1st")


def test_ctrl_c_during_issue_says_what_was_issued_and_the_command_that_resumes(settings, monkeypatch):
    # given three agreements due, one chunk each
    settings.INVOICING_CHUNK_SIZE = 1
    for ref in ("K1", "K2", "K3"):
        projection_apply(event=agreement_event("agreement.created", ref, 1, start_date="2026-01-01"))

    # when the operator presses Ctrl-C once the second chunk is done
    ctrl_c_at_progress(monkeypatch, 2)
    with pytest.raises(CommandError) as exc:
        call_command("invoices_issue", "--date", "2026-01-01")

    # then it exits 130 saying what was issued, and the command that resumes
    message = str(exc.value)
    assert exc.value.returncode == 130
    assert "Interrupted: issued 2 invoice(s) in 2 of 3 chunk(s) of agreements for 2026-01-01" in message
    assert "To resume, run:\n  python manage.py invoices_issue --date 2026-01-01\n" in message
    assert Invoice.objects.count() == 2
    # and that command issues the rest, nothing twice
    monkeypatch.undo()
    call_command("invoices_issue", "--date", "2026-01-01")
    assert sorted(Invoice.objects.values_list("agreement_id", flat=True)) == ["K1", "K2", "K3"]


def test_ctrl_c_during_a_preview_beside_make_run_says_nothing_was_issued_and_how_to_resume(
    settings, monkeypatch
):
    # given a preview run with `make manage` (which sets MANAGE_VIA) over two chunks
    settings.INVOICING_CHUNK_SIZE = 1
    for ref in ("P1", "P2"):
        projection_apply(event=agreement_event("agreement.created", ref, 1, start_date="2026-01-01"))
    monkeypatch.setenv("MANAGE_VIA", "make")
    # when Ctrl-C comes after the first
    ctrl_c_at_progress(monkeypatch, 1)
    with pytest.raises(CommandError) as exc:
        call_command("invoices_preview", "--date", "2026-01-01")
    # then it says what it saw, that nothing was issued, and the command in the form it was run
    message = str(exc.value)
    assert exc.value.returncode == 130
    assert "looked at 1 of 2 chunk(s) of agreements for 2026-01-01: 1 invoice(s) would be" in message
    assert "nothing was issued" in message and not Invoice.objects.exists()
    assert '\n  make manage ARGS="invoices_preview --date 2026-01-01"\n' in message


def test_void_needs_its_permission(client, invoice):
    staff = User.objects.create_user("clerk", password="pw", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_invoice"))
    client.force_login(staff)
    url = "/admin/invoicing/invoice/"
    assert "void_selected" not in client.get(url).content.decode()
    assert (
        client.post(url, {"action": "void_selected", "_selected_action": [str(invoice.id)]}).status_code
        == 403
    )
    staff.user_permissions.add(Permission.objects.get(codename="void_invoice"))
    client.force_login(User.objects.get(pk=staff.pk))
    client.post(url, {"action": "void_selected", "_selected_action": [str(invoice.id)]})
    invoice.refresh_from_db()
    assert invoice.status == "void"
    assert OutboxEvent.objects.filter(type="invoice.voided", aggregate_id=str(invoice.id)).exists()
