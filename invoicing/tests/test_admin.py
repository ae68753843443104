"""Billable agreements in admin: who they are (not bare ids), found by what operators know, and a
catch-up approval that leaves the preview's list of what waits for an operator."""

from __future__ import annotations

import uuid
from datetime import date

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from invoicing.models import BillableAgreement, Invoice
from invoicing.services import invoices_run_inline, projection_apply

from .factories import agreement_event

pytestmark = pytest.mark.django_db
LIST = "/admin/invoicing/billableagreement/"


@pytest.fixture
def operator(client):
    client.force_login(User.objects.create_superuser("op", password="pw"))
    return client


def project(ref: str, name: str, **created: object) -> BillableAgreement:
    customer = {"external_ref": ref, "name": name, "email": f"{ref.lower()}@example.com"}
    event = agreement_event("agreement.created", str(uuid.uuid4()), 1, customer=customer, **created)
    return projection_apply(event=event)


def rows(page: str) -> int:
    return page.count('<tr><td class="action-checkbox">')


def test_the_list_shows_who_each_agreement_is_and_search_finds_them(operator):
    ada = project("SUB-1001", "Ada Lovelace")
    grace = project("SUB-2002", "Grace Hopper")

    page = operator.get(LIST).content.decode()
    assert "SUB-1001" in page and "Ada Lovelace" in page
    assert "SUB-2002" in page and "Grace Hopper" in page
    assert f'title="{ada.agreement_id}">{ada.agreement_id[:8]}…' in page  # the id, shortened

    for term in ("SUB-1001", "sub-1001", "lovelace", "Ada Lovelace", ada.agreement_id[:8]):
        found = operator.get(LIST, {"q": term}).content.decode()
        assert rows(found) == 1 and "SUB-1001" in found and "SUB-2002" not in found, term
    found = operator.get(LIST, {"q": grace.agreement_id[:6].upper()}).content.decode()
    assert rows(found) == 1 and "Grace Hopper" in found


def test_the_detail_page_shows_prices_with_their_currency(operator):
    row = project("SUB-1001", "Ada Lovelace", amount_minor=1500, currency="GBP")
    page = operator.get(f"{LIST}{row.pk}/change/").content.decode()
    assert "£15.00 (version 1)" in page and "Ada Lovelace &lt;sub-1001@example.com&gt;" in page
    assert "<title>SUB-1001 (Ada Lovelace) | Change billable agreement" in page


def test_an_approved_catch_up_leaves_the_preview_and_the_flagged_list(operator, settings, capsys):
    # given an agreement missing more periods than the daily run bills without an operator
    settings.INVOICING_MAX_CATCHUP_PERIODS = 3
    row = project("SUB-1001", "Ada Lovelace", start_date="2026-03-01", interval="day")
    project("SUB-2002", "Grace Hopper", start_date="2026-03-10", interval="day")
    invoices_run_inline(run_date=date(2026, 3, 10))
    call_command("invoices_preview", "--date", "2026-03-10")
    before = capsys.readouterr().out
    assert f"SUB-1001 (Ada Lovelace) [{row.agreement_id}]: more than 3 periods due" in before
    flagged = operator.get(LIST, {"flag": "catchup"}).content.decode()
    assert rows(flagged) == 1 and "SUB-1001" in flagged and "catch-up needs approval" in flagged

    # when an operator approves its catch-up
    resp = operator.post(LIST, {"action": "approve_catchup", "_selected_action": [row.pk]})
    assert resp.status_code == 302

    # then neither the preview nor the flagged list shows the old reason; the preview counts its
    # ten periods, and the approval is listed as such until the run bills them
    call_command("invoices_preview", "--date", "2026-03-10")
    after = capsys.readouterr().out
    assert "Would issue 10 invoice(s)" in after and "Agreements flagged for an operator: 0" in after
    assert "SUB-1001" not in after and "catch-up needs approval" not in after
    assert rows(operator.get(LIST, {"flag": "catchup"}).content.decode()) == 0
    approved = operator.get(LIST, {"flag": "approved"}).content.decode()
    assert rows(approved) == 1 and "catch-up approved: the next run bills it" in approved
    assert invoices_run_inline(run_date=date(2026, 3, 10)).issued == 10
    assert Invoice.objects.filter(agreement_id=row.agreement_id).count() == 10
    row.refresh_from_db()
    assert (row.flagged_reason, row.catchup_approved) == ("", False)


def test_approving_on_the_change_page_clears_the_reason_too(operator, settings):
    settings.INVOICING_MAX_CATCHUP_PERIODS = 3
    row = project("SUB-1001", "Ada Lovelace", start_date="2026-03-01", interval="day")
    invoices_run_inline(run_date=date(2026, 3, 10))
    resp = operator.post(f"{LIST}{row.pk}/change/", {"catchup_approved": "on"})
    assert resp.status_code == 302
    row.refresh_from_db()
    assert (row.flagged_reason, row.catchup_approved) == ("", True)
