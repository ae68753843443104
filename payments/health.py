"""payments' automated checks, run with the backbone's monitoring (events.monitor)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from events.operations.health import CheckResult, Repair, register_check

from .selectors import payments_oldest_unsent, payments_outcome_unknown, payments_unsent
from .services.dispatching import charges_room


@register_check
def charges_unsent() -> CheckResult:
    """Charges due and sent to no charging worker for MONITOR_CHARGES_UNSENT_MAX_AGE_SECONDS while
    the queue ahead of the gateway has room: no dispatch pass runs and no sweep either (no worker
    on the ``default`` or ``payments`` task queue, beat down). A backlog held back by
    PAYMENT_DISPATCH_AHEAD_SECONDS (the queue ahead full) is the design, not a breach."""
    limit = settings.MONITOR_CHARGES_UNSENT_MAX_AGE_SECONDS
    oldest = payments_oldest_unsent()  # one index read every run; the rest only when it is old
    age = (timezone.now() - oldest).total_seconds() if oldest else 0.0
    breached, summary, details = False, "", {"oldest_age_seconds": round(age)}
    if age > limit:
        room = charges_room()
        breached = room is None or room > 0  # a full queue ahead holds the rest back by design
        if breached:
            unsent = payments_unsent()
            details.update(count=unsent.count, more=unsent.more)
            summary = (
                f"{unsent.count_text} charge(s) due and not sent to a charging worker, "
                f"the oldest for {age:.0f}s"
            )
    return CheckResult(
        "charges_unsent",
        breached,
        summary,
        "critical",
        details,
        [
            Repair(
                "start a worker on the default and payments task queues and beat "
                "(celery -A billing_project worker -Q default,payments; celery -A billing_project beat): "
                "the next dispatch pass or retry sweep sends them",
                (),
                reverse("admin:payments_payment_changelist") + "?status__exact=pending",
            )
        ],
    )


@register_check
def charges_outcome_unknown() -> CheckResult:
    """Charges of live payments that may have taken money unheard (an answer lost, or one the
    gateway's protocol does not give) and that asking again with their key has not settled for
    MONITOR_CHARGE_OUTCOME_UNKNOWN_SECONDS: the gateway keeps answering what the adapter does not
    understand, or refusing the request itself (a rotated API key). Each such payment is asked
    again with the same key, never charged with a new one, however long it takes: this says so."""
    limit = settings.MONITOR_CHARGE_OUTCOME_UNKNOWN_SECONDS
    now = timezone.now()
    unknown = payments_outcome_unknown(now - timedelta(seconds=limit))
    n = f"{len(unknown.keys)}{' or more' if unknown.more else ''}"
    age = (now - unknown.oldest).total_seconds() if unknown.oldest else 0.0
    return CheckResult(
        "charges_outcome_unknown",
        bool(unknown.keys),
        (
            f"{n} charge(s) may have taken money the gateway has not confirmed, the oldest tried "
            f"{age:.0f}s ago; first keys: {', '.join(unknown.keys[:3])}"
            if unknown.keys
            else ""
        ),
        "critical",
        {
            "count": len(unknown.keys),
            "more": unknown.more,
            "keys": unknown.keys[:10],
            "oldest_age_seconds": round(age),
        },
        [
            Repair(
                "look the keys up at the gateway and read each payment's attempts (their last error "
                "says what the gateway answers); they are asked again with the same keys until it "
                "answers one the adapter understands: mend the adapter or its credentials, and do not "
                "charge these invoices any other way",
                (),
                reverse("admin:payments_payment_changelist"),
            )
        ],
    )
