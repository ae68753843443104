"""Billable agreements in admin: who they are (the agreement's external ref, its customer, what
waits for an operator; not bare ids), found by what operators know, and a catch-up approval that
leaves the preview's list of what waits for an operator."""

from __future__ import annotations

import re
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


def project(
    ref: str | None, name: str, *, customer_ref: str, schema_version: int = 2, **created: object
) -> BillableAgreement:
    """An agreement as invoicing learns it: ``ref`` is the agreement's own (v2), ``customer_ref``
    its customer's; a v1 event (``schema_version=1``) names only the customer."""
    customer = {"external_ref": customer_ref, "name": name, "email": f"{customer_ref.lower()}@example.com"}
    if ref is not None:
        created["external_ref"] = ref
    event = agreement_event(
        "agreement.created", str(uuid.uuid4()), 1, schema_version=schema_version, customer=customer, **created
    )
    return projection_apply(event=event)


def rows(page: str) -> int:
    return page.count('<tr><td class="action-checkbox">')


def cell(page: str, column: str) -> list[str]:
    """The HTML of each row's ``column`` cell (the first column is a link to the row)."""
    found = re.findall(rf'<t[hd] class="field-{column}[^"]*">(.*?)</t[hd]>', page, flags=re.S)
    return [re.sub(r"^<a [^>]*>(.*)</a>$", r"\1", c) for c in found]


def test_the_list_shows_who_each_agreement_is_and_search_finds_them(operator):
    ada = project("SUB-1001", "Ada Lovelace", customer_ref="CUS-77")
    grace = project("SUB-2002", "Grace Hopper", customer_ref="CUS-88")

    page = operator.get(LIST).content.decode()
    assert sorted(cell(page, "external_ref_shown")) == ["SUB-1001", "SUB-2002"]
    assert sorted(cell(page, "customer_ref")) == ["CUS-77", "CUS-88"]
    assert sorted(cell(page, "customer_name")) == ["Ada Lovelace", "Grace Hopper"]
    assert f'title="{ada.agreement_id}">{ada.agreement_id[:8]}…' in page  # the id, shortened

    terms = (
        "SUB-1001",
        "sub-10",
        "CUS-77",
        "cus-77@example.com",
        "lovelace",
        "Ada Lovelace",
        ada.agreement_id[:8],
    )
    for term in terms:
        found = operator.get(LIST, {"q": term}).content.decode()
        assert rows(found) == 1 and cell(found, "external_ref_shown") == ["SUB-1001"], term
    found = operator.get(LIST, {"q": grace.agreement_id[:6].upper()}).content.decode()
    assert rows(found) == 1 and "Grace Hopper" in found
    assert rows(operator.get(LIST, {"q": "SUB-3003"}).content.decode()) == 0


def test_a_row_only_a_v1_event_described_shows_the_customer_ref_until_a_v2_names_it(operator):
    # given an agreement whose agreement.created is v1 (recorded before v2; its replay)
    old = project(None, "Ada Lovelace", customer_ref="CUS-77", schema_version=1)
    assert old.external_ref == ""

    # then the list shows its customer's ref in the external ref column, saying so
    page = operator.get(LIST).content.decode()
    [shown] = cell(page, "external_ref_shown")
    assert shown.startswith("CUS-77 <span") and "(customer ref)</span>" in shown
    assert "v1 does not carry the agreement&#x27;s own external ref" in shown
    assert rows(operator.get(LIST, {"q": "CUS-77"}).content.decode()) == 1
    assert rows(operator.get(LIST, {"q": "SUB-1001"}).content.decode()) == 0

    # when a v2 of the same agreement arrives
    projection_apply(
        event=agreement_event(
            "agreement.created",
            old.agreement_id,
            1,
            external_ref="SUB-1001",
            customer={"external_ref": "CUS-77", "name": "Ada Lovelace", "email": "cus-77@example.com"},
        )
    )

    # then it is listed, and found, by its own ref
    found = operator.get(LIST, {"q": "SUB-1001"}).content.decode()
    assert rows(found) == 1 and cell(found, "external_ref_shown") == ["SUB-1001"]
    assert cell(found, "customer_ref") == ["CUS-77"]


def test_the_detail_page_shows_the_ref_and_prices_with_their_currency(operator):
    row = project("SUB-1001", "Ada Lovelace", customer_ref="CUS-77", amount_minor=1500, currency="GBP")
    page = operator.get(f"{LIST}{row.pk}/change/").content.decode()
    assert "£15.00 (version 1)" in page and "Ada Lovelace &lt;cus-77@example.com&gt;" in page
    assert "<title>SUB-1001 (Ada Lovelace) | Change billable agreement" in page
    assert re.search(r"<label>External ref:</label>\s*<div class=\"readonly\">SUB-1001</div>", page)


def test_an_approved_catch_up_leaves_the_preview_and_the_flagged_list(operator, settings, capsys):
    # given agreements missing more periods than the daily run bills without an operator, one of
    # them known only from a v1 agreement.created
    settings.INVOICING_MAX_CATCHUP_PERIODS = 3
    row = project("SUB-1001", "Ada Lovelace", customer_ref="CUS-77", start_date="2026-03-01", interval="day")
    old = project(
        None, "Old Timer", customer_ref="CUS-99", schema_version=1, start_date="2026-03-02", interval="day"
    )
    project("SUB-2002", "Grace Hopper", customer_ref="CUS-88", start_date="2026-03-10", interval="day")
    invoices_run_inline(run_date=date(2026, 3, 10))
    call_command("invoices_preview", "--date", "2026-03-10")
    before = capsys.readouterr().out
    assert f"  SUB-1001 (Ada Lovelace) [{row.agreement_id}]: more than 3 periods due" in before
    assert f"  customer CUS-99 (Old Timer) [{old.agreement_id}]: more than 3 periods due" in before
    flagged = operator.get(LIST, {"flag": "catchup"}).content.decode()
    assert rows(flagged) == 2
    by_ref = dict(zip(cell(flagged, "external_ref_shown"), cell(flagged, "flag"), strict=True))
    assert set(by_ref) == {"SUB-1001", next(r for r in by_ref if r.startswith("CUS-99 "))}
    assert "more than 3 periods due on 2026-03-10 (catch-up needs approval)" in by_ref["SUB-1001"]
    assert sorted(cell(flagged, "customer_name")) == ["Ada Lovelace", "Old Timer"]

    # when an operator approves the catch-up of SUB-1001
    resp = operator.post(LIST, {"action": "approve_catchup", "_selected_action": [row.pk]})
    assert resp.status_code == 302

    # then neither the preview nor the flagged list shows its old reason; the preview counts its
    # ten periods, and the approval is listed as such until the run bills them
    call_command("invoices_preview", "--date", "2026-03-10")
    after = capsys.readouterr().out
    assert "Would issue 10 invoice(s)" in after and "Agreements flagged for an operator: 1" in after
    assert "SUB-1001" not in after and f"customer CUS-99 (Old Timer) [{old.agreement_id}]" in after
    assert rows(operator.get(LIST, {"flag": "catchup"}).content.decode()) == 1
    approved = operator.get(LIST, {"flag": "approved"}).content.decode()
    assert rows(approved) == 1 and "catch-up approved: the next run bills it" in approved
    assert cell(approved, "external_ref_shown") == ["SUB-1001"]
    assert invoices_run_inline(run_date=date(2026, 3, 10)).issued == 10
    assert Invoice.objects.filter(agreement_id=row.agreement_id).count() == 10
    row.refresh_from_db()
    assert (row.flagged_reason, row.catchup_approved) == ("", False)


def test_approving_on_the_change_page_clears_the_reason_too(operator, settings):
    settings.INVOICING_MAX_CATCHUP_PERIODS = 3
    row = project("SUB-1001", "Ada Lovelace", customer_ref="CUS-77", start_date="2026-03-01", interval="day")
    invoices_run_inline(run_date=date(2026, 3, 10))
    resp = operator.post(f"{LIST}{row.pk}/change/", {"catchup_approved": "on"})
    assert resp.status_code == 302
    row.refresh_from_db()
    assert (row.flagged_reason, row.catchup_approved) == ("", True)
