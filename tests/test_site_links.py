"""Where the admin's links and the bare address lead: somewhere an operator can use."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User

pytestmark = pytest.mark.django_db


def test_view_site_in_the_admin_header_leads_to_the_messaging_page(client):
    # given an operator on the admin's index
    client.force_login(User.objects.create_superuser("op", password="pw"))
    index = client.get("/admin/")
    assert index.status_code == 200

    # when they follow the header's "View site" link
    href = re.search(r'<a href="([^"]+)">View site</a>', index.content.decode())
    assert href, "the admin header has a View site link"
    page = client.get(href.group(1))

    # then it is the Messaging page, not a 404
    assert page.status_code == 200
    assert href.group(1) == "/admin/messaging/"
    assert b"billing-test-invoicing-events" in page.content


def test_the_bare_address_leads_to_the_admin_and_its_login(client):
    # when someone opens http://127.0.0.1:8000/ (make run prints the admin's address; people drop it)
    resp = client.get("/", follow=True)

    # then they land on the admin's login page (and, logged in, on the admin)
    assert resp.redirect_chain[0] == ("/admin/", 302)
    assert resp.status_code == 200 and resp.request["PATH_INFO"] == "/admin/login/"
    client.force_login(User.objects.create_superuser("op", password="pw"))
    assert client.get("/", follow=True).request["PATH_INFO"] == "/admin/"
