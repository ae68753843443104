"""CheckedInput is a type tag, and dataclasses.replace keeps the tag for new values."""

from __future__ import annotations

import dataclasses

import pytest
from django.core.exceptions import ValidationError

from agreements.bulk import agreements_create_many
from agreements.importing import row_to_input
from agreements.models import Agreement

pytestmark = pytest.mark.django_db

ROW = {
    "external_ref": "R1",
    "customer_name": "Ada",
    "customer_email": "ada@example.com",
    "amount_minor": "1999",
    "currency": "EUR",
    "interval": "month",
    "start_date": "2026-01-31",
}


@pytest.mark.parametrize(
    "change",
    [
        {"currency": "XTS"},  # the ISO code for testing: no money moves in it
        {"customer_name": "Ada\x1b[2J"},  # a terminal escape in a one-line field
        {"external_ref": "R1\nR2"},
    ],
)
def test_an_input_derived_from_a_checked_one_is_checked_again(change):
    # given an input the import found valid, and one made from it with other values (the usual
    # way to change a frozen dataclass; a later normalisation step would do just this)
    checked = row_to_input(ROW)
    derived = dataclasses.replace(checked, **change)
    # then the derived input is checked like any other: the tag vouched for the old values only
    with pytest.raises(ValidationError):
        agreements_create_many([derived])
    assert not Agreement.objects.exists()
