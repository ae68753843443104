"""Property-based fuzzing of the consumer: whatever arrives, it never crashes, rejects what is bad
with a reason, and still handles the good messages around the bad ones."""

from __future__ import annotations

import json
import math
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.consuming.runtime import DUPLICATE, HANDLED, POISON, UNHANDLED
from events.envelope import ENVELOPE_FIELDS
from tests.auditapp.models import AuditEntry
from tests.factories import deliver, envelope

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = list(ENVELOPE_FIELDS)
AMOUNTS = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.just(math.nan),
    st.just(math.inf),
    st.floats(allow_nan=False),
    st.text(max_size=5),
)


def mutate(draw: st.DrawFn) -> bytes | str:
    base = envelope(f"F-{uuid.uuid4().hex[:8]}")
    kind = draw(
        st.sampled_from(["field", "drop", "amount", "currency", "big", "utf8", "deep", "junk", "type"])
    )
    if kind == "field":
        base[draw(st.sampled_from(FIELDS))] = draw(json_values)
    elif kind == "drop":
        del base[draw(st.sampled_from(FIELDS))]
    elif kind == "amount":
        base["data"]["amount_minor"] = draw(AMOUNTS)
    elif kind == "currency":
        base["data"]["currency"] = draw(st.text(max_size=6))
    elif kind == "big":
        base["data"]["description"] = "x" * draw(st.integers(min_value=200_000, max_value=262_000))
    elif kind == "utf8":
        return json.dumps(base).encode()[:50] + draw(st.binary(min_size=1, max_size=8)) + b"\xff\xfe"
    elif kind == "deep":
        depth = draw(st.integers(min_value=50, max_value=5000))
        base["data"]["customer"] = json.loads("[" * depth + "]" * depth) if depth < 900 else None
        if depth >= 900:
            return json.dumps(base)[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"
    elif kind == "junk":
        return draw(st.text(max_size=200))
    elif kind == "type":
        base["type"] = draw(st.text(max_size=30))
    return json.dumps(base, allow_nan=True)


@pytest.mark.django_db
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_bad_messages_never_crash_and_good_ones_around_them_are_handled(data):
    AuditEntry.objects.all().delete()
    bad = [data.draw(st.composite(mutate)()) for _ in range(3)]
    good = [envelope(f"G-{uuid.uuid4().hex[:8]}") for _ in range(2)]
    stream = [json.dumps(good[0]), *bad, json.dumps(good[1])]
    outcomes = [deliver("audit", body, message_id=f"m{i}") for i, body in enumerate(stream)]
    assert {o.result for o in outcomes} <= {HANDLED, DUPLICATE, UNHANDLED, POISON}
    assert outcomes[0].result == HANDLED and outcomes[-1].result == HANDLED
    for outcome in outcomes[1:-1]:
        assert outcome.result in (POISON, UNHANDLED, HANDLED)
        if outcome.result == POISON:
            assert outcome.reason  # a reason for the log and the DLQ
    assert set(AuditEntry.objects.values_list("aggregate_id", flat=True)) >= {g["aggregate_id"] for g in good}
