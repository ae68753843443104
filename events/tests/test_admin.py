"""The event store in admin: read-only history; replay only with its permission."""

from __future__ import annotations

import json
import re

import pytest
from django.contrib.auth.models import Permission, User
from django.db import transaction

from events import contracts, topology
from events.models import ConsumerFailure, OutboxEvent
from events.publishing.outbox import NewEvent, record_events
from tests.factories import agreement_data, drain

pytestmark = pytest.mark.django_db(transaction=True)
CHANGELIST = "/admin/events/outboxevent/"


@pytest.fixture
def events():
    with transaction.atomic():
        return record_events(
            sender=None,
            events=[
                NewEvent(contracts.AGREEMENT_CREATED, f"A-{i}", 1, agreement_data(f"A-{i}")) for i in range(3)
            ],
        )


def staff(*perms: str) -> User:
    user = User.objects.create_user(f"staff{len(perms)}", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_outboxevent"))
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return User.objects.get(pk=user.pk)


def post_replay(client, events, **extra):
    data = {"action": "replay_selected", "_selected_action": [str(e.id) for e in events], **extra}
    return client.post(CHANGELIST, data)


def test_anonymous_is_sent_to_login(client, events):
    resp = post_replay(client, events)
    assert resp.status_code == 302 and "/admin/login/" in resp["Location"]


def test_staff_without_replay_permission_does_not_see_it_and_gets_403(client, events):
    client.force_login(staff())
    page = client.get(CHANGELIST)
    assert page.status_code == 200 and "replay_selected" not in page.content.decode()
    assert post_replay(client, events, confirm="1", target="topic").status_code == 403


def test_staff_with_permission_confirms_then_replays_to_one_queue(client, events, empty_queues, sqs):
    client.force_login(staff("replay_event"))
    assert "replay_selected" in client.get(CHANGELIST).content.decode()
    # first: a confirmation page with the count, nothing sent
    page = post_replay(client, events)
    assert page.status_code == 200 and "Replay 3 events" in page.content.decode()
    assert drain(sqs, topology.event_queue_name("invoicing"), wait=0) == []
    # then: confirmed, the events go to the invoicing queue only
    resp = post_replay(client, events, confirm="1", target="invoicing")
    assert resp.status_code == 302
    got = drain(sqs, topology.event_queue_name("invoicing"))
    assert sorted(json.loads(m["Body"])["aggregate_id"] for m in got) == ["A-0", "A-1", "A-2"]


def test_event_detail_is_read_only_with_pretty_json(client, events):
    client.force_login(User.objects.create_superuser("root", password="pw"))
    event = OutboxEvent.objects.get(aggregate_id="A-1")
    page = client.get(f"{CHANGELIST}{event.pk}/change/").content.decode()
    assert "&quot;amount_minor&quot;: 1999" in page
    assert 'name="_save"' not in page
    assert client.post(f"{CHANGELIST}{event.pk}/change/", {"type": "x"}).status_code == 403
    # search by exact aggregate id
    assert "A-1" in client.get(CHANGELIST, {"q": "A-1"}).content.decode()


def test_a_poisoned_message_shows_as_a_warning_not_a_tick(client):
    client.force_login(User.objects.create_superuser("root", password="pw"))
    poisoned = ConsumerFailure.objects.create(
        consumer="invoicing", message_id="m-1", event_type="agreement.created", aggregate_id="A-9",
        first_error="data off-schema", last_error="data off-schema", poisoned=True,
    )  # fmt: skip
    ConsumerFailure.objects.create(
        consumer="invoicing", message_id="m-2", first_error="boom", last_error="boom"
    )
    url = "/admin/events/consumerfailure/"
    listed = client.get(url).content.decode()
    cells = re.findall(r'<td class="field-kind">(.*?)</td>', listed)
    assert sorted(cells) == [
        '<span class="console-label console-warning">poisoned</span>',
        "handler error",
    ]
    assert "icon-yes.svg" not in listed  # no green tick for poison
    detail = client.get(f"{url}{poisoned.pk}/change/").content.decode()
    assert '<span class="console-label console-warning">poisoned</span>' in detail
    assert "icon-yes.svg" not in detail
    assert 'href="/admin/events/outboxevent/?aggregate_id=A-9"' in detail
