"""Reading admin pages in tests as an operator would: log in as staff with given permissions, open
the Messaging page, find an element (its classes and its text), read the chart's embedded data."""

from __future__ import annotations

import json
import re
from datetime import datetime, time, timedelta
from html.parser import HTMLParser
from typing import Any

from django.contrib.auth.models import Permission, User
from django.utils import timezone

MESSAGING_URL = "/admin/messaging/"


def staff(*codenames: str) -> User:
    """A staff user with these permissions (the same one on a second call)."""
    name = f"staff-{'-'.join(codenames) or 'plain'}"
    if User.objects.filter(username=name).exists():
        return User.objects.get(username=name)
    user = User.objects.create_user(name, password="pw", is_staff=True)
    for c in codenames:
        user.user_permissions.add(Permission.objects.get(codename=c))
    return User.objects.get(pk=user.pk)


def messaging_page(client: Any, user: User | None = None) -> str:
    """The Messaging page's HTML as ``user`` (default: staff without permissions) sees it."""
    client.force_login(user or staff())
    resp = client.get(MESSAGING_URL)
    assert resp.status_code == 200
    return resp.content.decode()


class _Find(HTMLParser):
    """The first element ``tag`` whose attribute ``attr`` is ``value``: its classes and its text."""

    def __init__(self, tag: str, attr: str, value: str) -> None:
        super().__init__()
        self.want, self.depth = (tag, attr, value), 0
        self.classes: list[str] | None = None
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted_tag, attr, value = self.want
        if self.depth:
            self.depth += tag == wanted_tag
        elif tag == wanted_tag and dict(attrs).get(attr) == value and self.classes is None:
            self.depth, self.classes = 1, (dict(attrs).get("class") or "").split()

    def handle_endtag(self, tag: str) -> None:
        if self.depth and tag == self.want[0]:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.parts.append(data)


def element(page: str, tag: str, attr: str, value: str) -> tuple[list[str], str]:
    """(classes, text with whitespace collapsed) of the first ``<tag attr="value">`` of ``page``."""
    finder = _Find(tag, attr, value)
    finder.feed(page)
    assert finder.classes is not None, f'no <{tag} {attr}="{value}"> on the page'
    return finder.classes, " ".join("".join(finder.parts).split())


def chart_json(page: str) -> dict[str, Any]:
    """The data the page's chart draws (embedded with json_script)."""
    found = re.search(r'<script id="messaging-chart-data" type="application/json">(.*?)</script>', page, re.S)
    assert found, "no chart data on the page"
    return json.loads(found.group(1))


def day_at(days_ago: int, hour: int = 12) -> datetime:
    """``hour`` o'clock (current time zone) ``days_ago`` days before today."""
    day = timezone.localdate() - timedelta(days=days_ago)
    return timezone.make_aware(datetime.combine(day, time(hour)))
